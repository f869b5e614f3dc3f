"""ServiceComb-specific adapter tests (the shared contract is in test_contract_embedded.py).

What only the Service-Center kinds have: service ids per version, lease expiry in the
embedded registry, the change feed and its reset, a real SC without feed or batch
heartbeats (a hiding proxy), failover between addresses, malformed and oversized
bodies, the settings the loader passes. Every test runs the embedded Service-Center's
real HTTP server on 127.0.0.1; a second, independent client (plain aiohttp against the
SC v4 REST API) plays the application. All waits are bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pysyncer.adapters import (
    Adapter,
    LocalRef,
    NotFoundError,
    load_adapter,
)
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.adapters.servicecomb import ServiceCombAdapter, ServiceCombSettings
from pysyncer.errors import ConfigError
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, ServiceKey
from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer
from pysyncer.testing.contract import EventCollector, start_collector
from tests.support.adapters import (
    FakeClock,
    StaticServer,
    dead_url,
    expect_bad_list,
    expect_oversized,
    expect_unavailable,
    started,
)

pytestmark = pytest.mark.timeout(30)

SERVICE = ServiceKey("shop", "orders", "1.0.0", "production")
EVENT_WAIT = 1.0  # change feed latency bound required by the contract


def copy_instance(instance_id: str, *, status: str = "UP", port: int = 8080) -> Instance:
    return Instance(
        service=SERVICE,
        instance_id=instance_id,
        host_name=f"host-{instance_id}",
        endpoints=(f"rest://10.0.0.1:{port}",),
        status=status,
        properties={ORIGIN_DC_PROPERTY: "dc-b", ORIGIN_ID_PROPERTY: f"origin-{instance_id}"},
        health_interval=30,
        health_times=3,
    )


class ScClient:
    """An ordinary Service-Center client: the 'other application' in these tests."""

    def __init__(self, url: str) -> None:
        self.url = url + "/v4/default/registry"
        self.session = aiohttp.ClientSession(headers={"x-domain-name": "default"})

    async def close(self) -> None:
        await self.session.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 200, (method, path, resp.status, body)
            return body if isinstance(body, dict) else {}

    async def create_service(self, app: str, name: str, version: str = "1.0.0") -> str:
        body = {"service": {"appId": app, "serviceName": name, "version": version}}
        return str((await self._call("POST", "/microservices", json=body))["serviceId"])

    async def register(self, service_id: str, instance_id: str, *, interval: int = 30) -> None:
        instance = {
            "instanceId": instance_id,
            "hostName": "app-host",
            "endpoints": ["rest://10.1.0.1:9000"],
            "healthCheck": {"mode": "push", "interval": interval, "times": 3},
        }
        path = f"/microservices/{service_id}/instances"
        await self._call("POST", path, json={"instance": instance})

    async def set_status(self, service_id: str, instance_id: str, status: str) -> None:
        path = f"/microservices/{service_id}/instances/{instance_id}/status"
        await self._call("PUT", path, params={"value": status})

    async def unregister(self, service_id: str, instance_id: str) -> None:
        await self._call("DELETE", f"/microservices/{service_id}/instances/{instance_id}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[RegistryServer]:
    async with RegistryServer(EmbeddedRegistry(clock=clock)) as srv:
        yield srv


@pytest.fixture
async def client(server: RegistryServer) -> AsyncIterator[ScClient]:
    sc = ScClient(server.url)
    try:
        yield sc
    finally:
        await sc.close()


def make_adapter(kind: str, server: RegistryServer, **settings: Any) -> Adapter:
    if kind == "embedded":
        return EmbeddedAdapter(server.registry)
    return ServiceCombAdapter([server.url], ServiceCombSettings(**settings))


@pytest.fixture(params=["servicecomb", "embedded"])
async def adapter(request: pytest.FixtureRequest, server: RegistryServer) -> AsyncIterator[Adapter]:
    async with started(make_adapter(request.param, server)) as adp:
        yield adp


# -- services and instances ---------------------------------------------------------------


async def test_each_version_is_its_own_service(adapter: Adapter) -> None:
    first = await adapter.ensure_service(SERVICE)
    other = await adapter.ensure_service(ServiceKey("shop", "orders", "2.0.0", "production"))
    assert other != first


async def test_renew_with_unknown_ids_is_not_found(adapter: Adapter, client: ScClient) -> None:
    live = await adapter.register(copy_instance("i-live"))
    gone = await adapter.register(copy_instance("i-gone"))
    await client.unregister(gone.service_id, gone.instance_id)
    bogus = LocalRef(live.service_id, "no-such-instance")
    results = await adapter.renew([live, gone, bogus])
    assert [r.status for r in results] == ["ok", "not_found", "not_found"]


async def test_renew_not_found_after_expiry(
    adapter: Adapter, server: RegistryServer, clock: FakeClock
) -> None:
    ref = await adapter.register(copy_instance("i-exp"))
    clock.advance(copy_instance("i-exp").ttl + 1)
    assert server.registry.expire() == 1
    [result] = await adapter.renew([ref])
    assert result.not_found
    again = await adapter.register(copy_instance("i-exp"))  # the importer's repair
    [result] = await adapter.renew([again])
    assert result.ok


async def test_unknown_service_id_is_not_found(adapter: Adapter) -> None:
    with pytest.raises(NotFoundError):
        await adapter.get_instance(LocalRef("no-such-service", "x"))


# -- change detection -------------------------------------------------------------------


async def check_changes_seen(adapter: Adapter, client: ScClient, timeout: float) -> None:
    collector = await start_collector(adapter)
    try:
        service_id = await client.create_service("billing", "invoices")
        await client.register(service_id, "app-1")
        created = await collector.wait_for(
            lambda e: e.kind == "upsert" and e.instance.instance_id == "app-1", timeout
        )
        assert created.instance.service.name == "invoices"
        assert created.ref == LocalRef(service_id, "app-1")

        await client.set_status(service_id, "app-1", "DOWN")
        await collector.wait_for(
            lambda e: e.kind == "upsert" and e.instance.status == "DOWN", timeout
        )
        await client.unregister(service_id, "app-1")
        deleted = await collector.wait_for(lambda e: e.kind == "delete", timeout)
        assert deleted.instance.instance_id == "app-1"
    finally:
        await collector.stop()


async def test_changes_via_feed_within_one_second(adapter: Adapter, client: ScClient) -> None:
    await check_changes_seen(adapter, client, EVENT_WAIT)
    if isinstance(adapter, ServiceCombAdapter):
        assert adapter.uses_feed is True


@pytest.mark.parametrize("kind", ["servicecomb", "embedded"])
async def test_lost_feed_position_asks_for_resync(kind: str) -> None:
    """Changes beyond the registry's change log since the listing -> resync, then events."""
    async with RegistryServer(EmbeddedRegistry(change_log_size=2)) as small:
        adapter = make_adapter(kind, small)
        await adapter.start()
        sc = ScClient(small.url)
        try:
            await adapter.list_instances()
            service_id = await sc.create_service("billing", "invoices")
            for n in range(4):
                await sc.register(service_id, f"app-{n}")
            collector = EventCollector(adapter)
            first = await collector.first_batch()
            assert first is not None and first.resync
            await adapter.list_instances()  # what the exporter does on resync
            await sc.register(service_id, "app-late")
            await collector.wait_for(lambda e: e.instance.instance_id == "app-late", EVENT_WAIT)
            await collector.stop()
        finally:
            await sc.close()
            await adapter.close()


class HidingProxy:
    """A tiny reverse proxy that answers hidden paths like a real Service-Center (404)."""

    def __init__(self, target: str, hidden: tuple[str, ...]) -> None:
        self.target = target
        self.hidden = hidden
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if any(request.path.endswith(h) for h in self.hidden):
            return web.Response(status=404, text="404 page not found")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            data=await request.read(),
            headers=headers,
        ) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return web.Response(status=resp.status, body=body, headers=out)


_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "date", "server"}


@pytest.fixture
async def sc_like(server: RegistryServer) -> AsyncIterator[HidingProxy]:
    """The embedded registry seen like a real SC: no change feed, no batch heartbeats."""
    proxy = HidingProxy(server.url, ("/registry/changes", "/registry/heartbeats"))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_polls_a_registry_without_feed(sc_like: HidingProxy, client: ScClient) -> None:
    adapter = ServiceCombAdapter([sc_like.url], ServiceCombSettings(poll_interval=0.3))
    await adapter.start()
    try:
        await check_changes_seen(adapter, client, 0.3 + EVENT_WAIT)
        assert adapter.uses_feed is False
    finally:
        await adapter.close()


async def test_renew_falls_back_to_single_heartbeats(sc_like: HidingProxy) -> None:
    adapter = ServiceCombAdapter([sc_like.url])
    await adapter.start()
    try:
        live = await adapter.register(copy_instance("i-a"))
        gone = LocalRef(live.service_id, "missing")
        results = await adapter.renew([live, gone])
        assert [r.status for r in results] == ["ok", "not_found"]
        assert any(p.endswith("/heartbeats") for p in sc_like.requests)
        assert any(p.endswith("/heartbeat") for p in sc_like.requests)
    finally:
        await adapter.close()


# -- failover and errors ----------------------------------------------------------------


async def test_failover_to_second_address(server: RegistryServer) -> None:
    dead = dead_url()
    adapter = ServiceCombAdapter([dead, server.url], ServiceCombSettings(connect_timeout=1.0))
    await adapter.start()
    try:
        assert adapter.current_address == server.url
        ref = await adapter.register(copy_instance("i-f"))
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
        assert adapter.current_address == server.url  # remembered: no retry of the dead one
    finally:
        await adapter.close()


async def test_server_down_is_unavailable() -> None:
    adapter = ServiceCombAdapter([dead_url(), dead_url()], ServiceCombSettings(connect_timeout=1.0))
    await expect_unavailable(adapter)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"[1, 2, 3]",
        b'{"allServicesDetail": [{"microService": {"serviceName": 5}, "instances": 7}]}',
        b'{"allServicesDetail": [{"microService": {"serviceName": "a"}, '
        b'"instances": [{"hostName": "h"}]}]}',
    ],
)
async def test_garbage_is_bad_response(body: bytes) -> None:
    async with StaticServer(body) as bad:
        adapter = ServiceCombAdapter([bad.url], ServiceCombSettings(feed=False))
        await adapter.start()
        await expect_bad_list(adapter)


async def test_oversized_body_is_bad_response() -> None:
    huge = b'{"allServicesDetail": [' + b'{"x": "' + b"a" * 300_000 + b'"}]}'
    async with StaticServer(huge) as bad:
        adapter = ServiceCombAdapter([bad.url], ServiceCombSettings(feed=False, max_body=65536))
        await expect_oversized(adapter)


# -- loading --------------------------------------------------------------------------


async def test_load_adapter_by_name(server: RegistryServer) -> None:
    adapter = load_adapter("servicecomb", [server.url], {"poll_interval": "2"})
    assert isinstance(adapter, ServiceCombAdapter)
    assert adapter.settings.poll_interval == 2.0
    embedded = load_adapter("embedded", [], {"registry": server.registry})
    assert isinstance(embedded, EmbeddedAdapter)
    with pytest.raises(ConfigError, match=r"available: .*servicecomb"):
        load_adapter("zookeeper-nope", [], {})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_adapter("servicecomb", [server.url], {"poll_intervall": 1})
