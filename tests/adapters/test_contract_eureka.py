"""The Eureka adapter: the shared contract on the Eureka fake, then Eureka specifics.

Specifics: path probing and both base paths, basic auth, the delta protocol (hashcode
mismatch -> full fetch and ``resync``; an expired delta queue), the single-element
and ``$`` port quirks, the dirty-timestamp 404 on renew, failover, malformed and
oversized bodies, settings errors, and that an independent client (py-eureka-client)
accepts the fake. All waits are bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from pysyncer.adapters import (
    AdapterError,
    LocalRef,
    load_adapter,
)
from pysyncer.adapters.eureka import EurekaAdapter, EurekaSettings, reconcile_hashcode
from pysyncer.errors import ConfigError
from pysyncer.model import ServiceKey
from pysyncer.testing import AdapterContract, RegistryHarness
from pysyncer.testing.contract import copy_instance, start_collector
from tests.support.adapters import (
    FakeClock,
    StaticServer,
    dead_url,
    expect_bad_list,
    expect_oversized,
    expect_unavailable,
)
from tests.support.fakes.eureka import EurekaFake, EurekaHarness

pytestmark = pytest.mark.timeout(60)


class TestEurekaContract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = EurekaHarness()
        await h.start()
        yield h
        await h.stop()


class TestEurekaV2QuirksContract(AdapterContract):
    """Netflix's /eureka/v2 in the address, XStream-style JSON (one-element lists as objects)."""

    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = EurekaHarness(paths=("/eureka/v2",), address_path="/eureka/v2", quirks=True)
        await h.start()
        yield h
        await h.stop()


# -- Eureka specifics ---------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[EurekaFake]:
    async with EurekaFake() as server:
        yield server


async def started(addresses: list[str], **settings: Any) -> EurekaAdapter:
    adapter = EurekaAdapter(
        addresses, EurekaSettings.from_mapping({"poll-interval": "0.2", **settings})
    )
    await adapter.start()
    return adapter


async def test_copy_uses_native_fields_and_carries_the_rest(fake: EurekaFake) -> None:
    adapter = await started([fake.url])
    try:
        plain = copy_instance(
            "plain",
            service=ServiceKey("default", "orders", "0.0.1", ""),
            endpoints=("http://10.0.0.3:8080",),
        )
        await adapter.register(plain)
        lease = fake.lease("ORDERS", "plain")
        assert lease is not None
        stored = lease.instance
        assert (stored["app"], stored["ipAddr"], stored["hostName"]) == (
            "ORDERS",
            "10.0.0.3",
            "host-plain",
        )
        assert stored["port"] == {"$": 8080, "@enabled": "true"}
        assert stored["securePort"]["@enabled"] == "false"
        assert stored["status"] == "UP"
        assert stored["leaseInfo"]["renewalIntervalInSecs"] == 20
        assert stored["leaseInfo"]["durationInSecs"] == 60
        assert not [
            k for k in stored["metadata"] if k.startswith("pysyncer.") and "origin" not in k
        ]

        sc_shaped = copy_instance("sc", status="TESTING")  # rest:// endpoint, SC service key
        await adapter.register(sc_shaped)
        lease = fake.lease("ORDERS", "sc")
        assert lease is not None
        stored = lease.instance
        assert stored["status"] == "UNKNOWN"
        assert stored["port"] == {"$": 8080, "@enabled": "true"}  # reachable by Eureka clients
        meta = stored["metadata"]
        assert meta["pysyncer.app"] == "shop"
        assert meta["pysyncer.version"] == "1.0.0"
        assert meta["pysyncer.env"] == "production"
        assert meta["pysyncer.endpoints"] == "rest://10.0.0.1:8080"
        assert meta["pysyncer.status"] == "TESTING"
        assert "pysyncer.name" not in meta and "pysyncer.host" not in meta
        assert await adapter.get_instance(LocalRef("ORDERS", "sc")) == sc_shaped
        assert fake.replication_requests == 0  # never the peer replication header
    finally:
        await adapter.close()


@pytest.mark.parametrize(
    ("paths", "address_path", "expected"),
    [
        (("/eureka",), "", "/eureka"),
        (("/eureka/v2",), "", "/eureka/v2"),
        (("/eureka/v2",), "/eureka/v2/", "/eureka/v2"),
        (("/custom/eureka",), "/custom/eureka", "/custom/eureka"),
    ],
)
async def test_base_path_from_address_or_probe(
    paths: tuple[str, ...], address_path: str, expected: str
) -> None:
    async with EurekaFake(paths=paths) as server:
        adapter = await started([server.url + address_path])
        try:
            assert adapter.current_address.endswith(expected)
            assert len(await adapter.list_instances()) == 0
        finally:
            await adapter.close()


async def test_base_path_setting_and_no_api() -> None:
    async with EurekaFake(paths=("/registry",)) as server:
        adapter = await started([server.url], path="/registry")
        await adapter.close()
        probing = EurekaAdapter([server.url])
        with pytest.raises(AdapterError, match=r"adapter\.path"):
            await probing.start()
        await probing.close()


async def test_basic_auth() -> None:
    async with EurekaFake(credentials=("eu", "s3cret")) as server:
        adapter = await started([server.url], username="eu", password="s3cret")
        await adapter.register(copy_instance("i-1"))
        await adapter.close()
        in_url = await started([server.url.replace("://", "://eu:s3cret@")])
        assert len(await in_url.list_instances()) == 1
        await in_url.close()
        anonymous = EurekaAdapter([server.url])
        with pytest.raises(AdapterError) as info:
            await anonymous.start()
        assert info.value.code == "401"
        await anonymous.close()


async def test_delta_hashcode_mismatch_fetches_everything_and_resyncs() -> None:
    harness = EurekaHarness()
    await harness.start()
    adapter = await started(harness.addresses())
    try:
        collector = await start_collector(adapter)
        app = await harness.app_register(harness.service("billing"), "10.1.0.1", 9000)
        first = await collector.wait_for(lambda e: e.instance.instance_id == app.instance_id, 5)
        assert not [b for b in collector.batches if b.resync]
        assert first.kind == "upsert"
        fulls = adapter.stats["full_fetches"]

        harness.fake.delta_hash_override = "UP_99_"  # the server's view differs from ours
        second = await harness.app_register(harness.service("billing"), "10.1.0.2", 9000)
        await collector.wait_for(lambda e: e.instance.instance_id == second.instance_id, 5)
        resyncs = [b for b in collector.batches if b.resync]
        assert resyncs, "a hashcode mismatch must ask for a resync"
        assert any(e.instance.instance_id == second.instance_id for e in resyncs[0].events)
        assert adapter.stats["full_fetches"] > fulls
        assert adapter.stats["hash_mismatches"] >= 1
        await collector.stop()
    finally:
        await adapter.close()
        await harness.stop()


async def test_changes_older_than_the_delta_queue_are_recovered() -> None:
    clock = FakeClock(time.time)
    harness = EurekaHarness(clock=clock, eviction_interval=None)
    await harness.start()
    adapter = await started(harness.addresses())
    try:
        await adapter.list_instances()
        app = await harness.app_register(harness.service("billing"), "10.1.0.1", 9000)
        clock.advance(200)  # past the 3-minute retention: the delta no longer shows it
        harness.fake.clean_queue()
        changes = adapter.changes()
        batch = await asyncio.wait_for(anext(changes), 5)
        assert batch.resync
        assert [e.instance.instance_id for e in batch.events] == [app.instance_id]
        assert isinstance(changes, AsyncGenerator)
        await changes.aclose()
    finally:
        await adapter.close()
        await harness.stop()


async def test_lease_expiry_follows_eureka(fake: EurekaFake) -> None:
    clock = FakeClock(time.time)
    fake.clock = clock
    adapter = await started([fake.url])
    try:
        ref = await adapter.register(copy_instance("i-1", interval=10, times=2))  # 30 s lease
        clock.advance(25)
        assert fake.evict() == 0
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
        clock.advance(50)  # a renewal adds the duration twice (Lease.isExpired's comment)
        assert fake.evict() == 0
        clock.advance(15)
        assert fake.evict() == 1
        assert [r.status for r in await adapter.renew([ref])] == ["not_found"]
    finally:
        await adapter.close()


async def test_renew_404_when_server_copy_is_older(fake: EurekaFake) -> None:
    adapter = await started([fake.url])
    try:
        ref = await adapter.register(copy_instance("i-1"))
        unknown = LocalRef("ORDERS", "nobody")
        assert [r.status for r in await adapter.renew([ref, unknown])] == ["ok", "not_found"]
        lease = fake.lease("ORDERS", "i-1")
        assert lease is not None
        lease.instance["lastDirtyTimestamp"] = "1"  # e.g. an older registration replicated in
        [result] = await adapter.renew([ref])
        assert result.not_found
        again = await adapter.register(copy_instance("i-1"))
        assert [r.status for r in await adapter.renew([again])] == ["ok"]
    finally:
        await adapter.close()


async def test_quirky_shapes_are_parsed() -> None:
    body = {
        "applications": {
            "apps__hashcode": "UP_1_",
            "application": {
                "name": "ORDERS",
                "instance": {
                    "hostName": "h1",
                    "app": "ORDERS",
                    "ipAddr": "10.2.0.1",
                    "status": "UP",
                    "port": {"$": "8080", "@enabled": True},
                    "securePort": {"$": 8443, "@enabled": "true"},
                    "metadata": {"@class": "java.util.Collections$EmptyMap"},
                    "leaseInfo": {"renewalIntervalInSecs": "5", "durationInSecs": 15},
                },
            },
        }
    }
    async with StaticServer(json.dumps(body).encode()) as server:
        adapter = await started([server.url], path="/eureka")
        try:
            [instance] = list(await adapter.list_instances())
        finally:
            await adapter.close()
    assert instance.instance_id == "h1"  # no instanceId: Eureka's id is the host name
    assert instance.service == ServiceKey("default", "orders", "0.0.1", "")
    assert instance.endpoints == ("http://10.2.0.1:8080", "https://10.2.0.1:8443")
    assert dict(instance.properties) == {}
    assert (instance.health_interval, instance.health_times) == (5, 2)


async def test_failover_to_second_address(fake: EurekaFake) -> None:
    adapter = await started([dead_url(), fake.url], **{"connect-timeout": "1"})
    try:
        assert adapter.current_address.startswith(fake.url)
        ref = await adapter.register(copy_instance("i-f"))
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
        assert adapter.current_address.startswith(fake.url)
    finally:
        await adapter.close()


async def test_no_address_answers_is_unavailable() -> None:
    adapter = EurekaAdapter([dead_url(), dead_url()], EurekaSettings(connect_timeout=1.0))
    await expect_unavailable(adapter)


@pytest.mark.parametrize(
    "body",
    [
        b"<applications/>",
        b"[1, 2, 3]",
        b'{"applications": []}',
        b'{"applications": {"application": [{"name": "A", "instance": ["x"]}]}}',
        b'{"applications": {"application": [{"name": "A", "instance": [{"hostName": "h", '
        b'"port": {"$": "eighty"}}]}]}}',
        b'{"applications": {"application": [{"name": "A", "instance": [{"hostName": "h", '
        b'"metadata": ["k"]}]}]}}',
        b'{"applications": {"application": 7}}',
    ],
)
async def test_garbage_is_bad_response(body: bytes) -> None:
    async with StaticServer(body) as bad:
        adapter = await started([bad.url], path="/eureka")
        await expect_bad_list(adapter)


async def test_oversized_body_is_bad_response() -> None:
    huge = b'{"applications": {"x": "' + b"a" * 300_000 + b'"}}'
    async with StaticServer(huge) as bad:
        settings = EurekaSettings(path="/eureka", max_body=65536)
        await expect_oversized(EurekaAdapter([bad.url], settings))


def test_settings_errors_name_the_key() -> None:
    assert isinstance(load_adapter("eureka", ["127.0.0.1:8761"], {}), EurekaAdapter)
    with pytest.raises(ConfigError, match=r"adapter\.poll-interval"):
        load_adapter("eureka", ["127.0.0.1:8761"], {"poll-interval": "soon"})
    with pytest.raises(ConfigError, match=r"adapter\.poll-intervall"):
        load_adapter("eureka", ["127.0.0.1:8761"], {"poll-intervall": "1"})
    with pytest.raises(ConfigError, match=r"adapter\.timeout"):
        load_adapter("eureka", ["127.0.0.1:8761"], {"timeout": "0"})
    with pytest.raises(ConfigError, match=r"adapter\.path"):
        load_adapter("eureka", ["127.0.0.1:8761"], {"path": "eureka"})
    with pytest.raises(ConfigError, match="address"):
        load_adapter("eureka", [], {})
    with pytest.raises(ConfigError, match="scheme"):
        load_adapter("eureka", ["ftp://127.0.0.1:8761"], {})


def test_reconcile_hashcode_is_sorted_status_counts() -> None:
    assert reconcile_hashcode([]) == ""
    assert reconcile_hashcode(["UP", "DOWN", "UP", "UP"]) == "DOWN_1_UP_3_"
    assert reconcile_hashcode(["UP", "OUT_OF_SERVICE"]) == "OUT_OF_SERVICE_1_UP_1_"


# -- an independent client: py-eureka-client ------------------------------------------------


async def test_py_eureka_client_accepts_the_fake(fake: EurekaFake) -> None:
    """register/renew/cancel/get_applications/get_delta of py-eureka-client (XML reads)."""
    from py_eureka_client import eureka_basic as eb

    server = fake.url + "/eureka"
    instance = eb.Instance(
        instanceId="10.3.0.1:pay:8080",
        app="PAY",
        hostName="10.3.0.1",
        ipAddr="10.3.0.1",
        vipAddress="pay",
        status="UP",
        port=eb.PortWrapper(port=8080, enabled=True),
        metadata={"zone": "a"},
        lastDirtyTimestamp=int(time.time() * 1000),
    )
    await eb.register(server, instance)
    apps = await eb.get_applications(server)
    [app] = apps.applications
    assert app.name == "PAY"
    [got] = app.instances
    assert (got.instanceId, got.ipAddr, got.port.port, got.port.enabled) == (
        "10.3.0.1:pay:8080",
        "10.3.0.1",
        8080,
        True,
    )
    assert got.metadata == {"zone": "a"}
    assert apps.apps__hashcode == "UP_1_"

    await eb.send_heartbeat(server, "PAY", instance.instanceId, instance.lastDirtyTimestamp)
    delta = await eb.get_delta(server)
    [changed] = [i for a in delta.applications for i in a.instances]
    assert changed.actionType == "ADDED"

    adapter = await started([server])  # the adapter reads what py-eureka-client wrote
    try:
        [listed] = list(await adapter.list_instances())
        assert listed.instance_id == "10.3.0.1:pay:8080"
        assert listed.endpoints == ("http://10.3.0.1:8080",)
        assert dict(listed.properties) == {"zone": "a"}
    finally:
        await adapter.close()

    await eb.cancel(server, "PAY", instance.instanceId)
    assert (await eb.get_applications(server)).applications == []
    delta = await eb.get_delta(server)
    [removed] = [i for a in delta.applications for i in a.instances]
    assert removed.actionType == "DELETED"
    with pytest.raises(Exception, match="404"):
        await eb.send_heartbeat(server, "PAY", instance.instanceId, 0)


def test_daemon_config_reaches_the_adapter() -> None:
    """``[adapter]`` / PYSYNCER_ADAPTER_* -> load_adapter settings (what the engine does)."""
    from pysyncer.config import load_config

    config = load_config(
        {"plugin": "eureka", "sc-addr": "http://127.0.0.1:8761/eureka"},
        environ={"PYSYNCER_ADAPTER_POLL_INTERVAL": "2", "PYSYNCER_ADAPTER_APP": "legacy"},
    )
    adapter = load_adapter(config.plugin, list(config.sc_addr), config.adapter_settings)
    assert isinstance(adapter, EurekaAdapter)
    assert adapter.settings.poll_interval == 2.0
    assert adapter.settings.app == "legacy"
    assert adapter.addresses == ["http://127.0.0.1:8761/eureka"]
