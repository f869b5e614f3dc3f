"""A :class:`~pysyncer.testing.harness.RegistryHarness` for the ``etcd`` adapter.

Shares the session's real etcd (:mod:`tests.support.etcd`); each harness has its own key
prefix and reaches etcd through its own :class:`~tests.support.tcp_proxy.TcpProxy`, so
``stop()`` makes "its" etcd unreachable while the server keeps running. Native
applications write keys as a Kratos service, a grpc-go naming endpoint or a go-micro
node would: JSON values under their own lease.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import aetcd  # type: ignore[import-untyped]

from pysyncer.adapters.base import LocalRef
from pysyncer.adapters.etcd_codec import Layout
from pysyncer.model import ServiceKey
from pysyncer.testing.harness import AppInstance
from tests.support.etcd import EtcdServer
from tests.support.tcp_proxy import TcpProxy

APP_TTL = 15  # Kratos' default registration TTL


def native_value(
    layout: str, service: ServiceKey, iid: str, addr: str, props: Mapping[str, str]
) -> bytes:
    """The value an application of ``layout`` writes for one instance."""
    value: dict[str, Any]
    if layout == "kratos":
        value = {
            "id": iid,
            "name": service.name,
            "version": service.version,
            "metadata": dict(props),
            "endpoints": [f"grpc://{addr}", f"http://{addr.rpartition(':')[0]}:8000"],
        }
    elif layout == "grpc":
        value = {"Op": 0, "Addr": addr, "Metadata": dict(props)}
    else:
        value = {
            "name": service.name,
            "version": service.version,
            "metadata": None,
            "endpoints": [],
            "nodes": [
                {
                    "id": iid,
                    "address": addr,
                    "metadata": {
                        "broker": "http",
                        "protocol": "grpc",
                        "registry": "etcd",
                        "server": "grpc",
                        "transport": "grpc",
                        **props,
                    },
                }
            ],
        }
    return json.dumps(value).encode()


class EtcdRegistryHarness:
    """The ``etcd`` adapter's registry in one of its layouts (see the module docstring)."""

    kind = "etcd"
    change_bound = 5.0
    features: frozenset[str] = frozenset({"batch_renew"})

    def __init__(self, server: EtcdServer, layout: str = "kratos") -> None:
        self.server = server
        self.layout_name = layout
        self.prefix = f"/pysyncer-reg-{uuid.uuid4().hex[:10]}/"
        self.layout = Layout(layout, self.prefix, "grpc")
        self.proxy = TcpProxy("127.0.0.1", server.client_port)
        self.app: Any = None
        self._lease: Any = None

    def addresses(self) -> list[str]:
        return [self.proxy.address]

    def settings(self) -> dict[str, Any]:
        return {"layout": self.layout_name, "prefix": self.prefix, "request-timeout": 3}

    async def start(self) -> None:
        await self.proxy.start()
        self.app = aetcd.Client("127.0.0.1", self.server.client_port)
        await self.app.connect()
        self._lease = await self.app.lease(APP_TTL)

    async def stop(self) -> None:
        await self.proxy.stop()
        if self.app is not None:
            app, self.app = self.app, None
            await app.close()

    def service(self, name: str) -> ServiceKey:
        version = {"kratos": "1.0.0", "grpc": "", "gomicro": "latest"}[self.layout_name]
        return ServiceKey("", name, version)

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        addr = f"{host}:{port}"
        iid = addr if self.layout_name == "grpc" else f"{service.name}-{uuid.uuid4()}"
        key = self.layout.key(service.name, iid)
        value = native_value(self.layout_name, service, iid, addr, properties or {})
        await self.app.put(key.encode(), value, lease=self._lease)
        return AppInstance(service, iid, host, port, dict(properties or {}))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        raise NotImplementedError("etcd registries have no status: presence is UP")

    async def app_unregister(self, instance: AppInstance) -> None:
        key = self.layout.key(instance.service.name, instance.instance_id)
        await self.app.delete(key.encode())

    async def lose(self, ref: LocalRef) -> None:
        """An operator deletes the copy's key (its lease lives on)."""
        key = self.layout.key(ref.service_id, ref.instance_id)
        assert await self.app.delete(key.encode()), key
