"""A :class:`~pysyncer.testing.harness.RegistryHarness` on pysyncer's embedded registry.

Owns starting an :class:`~pysyncer.servicecenter.EmbeddedRegistry` behind its real HTTP
server (:class:`~pysyncer.servicecenter.RegistryServer`) on loopback, and an ordinary
Service-Center application client (plain aiohttp on the SC v4 REST API) that registers,
re-states and removes native instances. The same registry serves two adapter kinds:
``servicecomb`` (over HTTP, the change feed) and ``embedded`` (in process). Used by the
contract tests of those two adapters; it does not import pytest.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import Any

import aiohttp

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey
from pysyncer.servicecenter import EmbeddedRegistry, RegistryError, RegistryServer
from pysyncer.testing.harness import AppInstance

__all__ = ["EmbeddedHarness"]


class EmbeddedHarness:
    """The embedded registry for the ``servicecomb`` or ``embedded`` adapter kind."""

    def __init__(
        self,
        kind: str = "servicecomb",
        *,
        registry: EmbeddedRegistry | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if kind not in {"servicecomb", "embedded"}:
            raise ValueError(f"EmbeddedHarness serves 'servicecomb' or 'embedded', not {kind!r}")
        self._kind = kind
        self.registry = registry if registry is not None else EmbeddedRegistry()
        self.server = RegistryServer(self.registry)
        self._settings = dict(settings or {})
        self._session: aiohttp.ClientSession | None = None
        self._services: dict[ServiceKey, str] = {}
        self._app_refs: dict[str, str] = {}  # instance id -> service id
        self._ids = itertools.count(1)

    # -- RegistryHarness -------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def change_bound(self) -> float:
        return 2.0  # the change feed (HTTP long-poll or in process): milliseconds

    @property
    def features(self) -> frozenset[str]:
        base = {"status", "health", "batch_renew"}
        if self._kind == "embedded":
            base.add("in_process")
        return frozenset(base)

    @property
    def url(self) -> str:
        return self.server.url

    def addresses(self) -> list[str]:
        return [] if self._kind == "embedded" else [self.server.url]

    def settings(self) -> dict[str, Any]:
        if self._kind == "embedded":
            return {"registry": self.registry, **self._settings}
        return dict(self._settings)

    async def start(self) -> None:
        await self.server.start()
        self._session = aiohttp.ClientSession(
            headers={"x-domain-name": "default", "Accept": "application/json"}
        )

    async def stop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        await self.server.close()

    def service(self, name: str) -> ServiceKey:
        return ServiceKey("shop", name, "1.0.0", "production")

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        service_id = await self._service_id(service)
        instance_id = f"app-{next(self._ids)}"
        instance = {
            "instanceId": instance_id,
            "hostName": f"app-{host}",
            "endpoints": [f"rest://{host}:{port}"],
            "properties": dict(properties or {}),
            "healthCheck": {"mode": "push", "interval": 30, "times": 3},
        }
        await self._call(
            "POST", f"/microservices/{service_id}/instances", json={"instance": instance}
        )
        self._app_refs[instance_id] = service_id
        return AppInstance(service, instance_id, host, port, dict(properties or {}))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        service_id = self._app_refs[instance.instance_id]
        path = f"/microservices/{service_id}/instances/{instance.instance_id}/status"
        await self._call("PUT", path, params={"value": "UP" if up else "DOWN"})

    async def app_unregister(self, instance: AppInstance) -> None:
        service_id = self._app_refs.pop(instance.instance_id)
        await self._call("DELETE", f"/microservices/{service_id}/instances/{instance.instance_id}")

    async def lose(self, ref: LocalRef) -> None:
        """An operator's delete, behind the adapter's back (as a lease expiry would)."""
        with contextlib.suppress(RegistryError):  # already gone is fine
            await self.registry.unregister_instance(ref.service_id, ref.instance_id)

    # -- the application's SC client -------------------------------------------------

    async def _service_id(self, service: ServiceKey) -> str:
        cached = self._services.get(service)
        if cached is None:
            body = {
                "service": {
                    "appId": service.app,
                    "serviceName": service.name,
                    "version": service.version,
                    "environment": service.environment,
                }
            }
            answer = await self._call("POST", "/microservices", json=body)
            cached = self._services[service] = str(answer["serviceId"])
        return cached

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("the harness is not started")
        url = f"{self.server.url}/v4/default/registry{path}"
        async with self._session.request(method, url, **kwargs) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {body}")
            return body if isinstance(body, dict) else {}
