"""The ``etcd`` adapter beyond the contract: layouts, compaction, lease loss, failover.

Layout round trips are pure; the rest runs against the session's real etcd
(:func:`tests.support.etcd.etcd_server`) through TCP proxies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.adapters import UnavailableError, load_adapter
from pysyncer.adapters.etcd import EtcdAdapter
from pysyncer.adapters.etcd_codec import Layout, parse_endpoints
from pysyncer.errors import ConfigError
from pysyncer.hostport import bracket_host
from pysyncer.model import ORIGIN_DC_PROPERTY, Instance, ServiceKey
from pysyncer.testing.contract import EventCollector, copy_instance
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.etcd_registry import EtcdRegistryHarness, native_value
from tests.support.tcp_proxy import TcpProxy

__all__ = ["etcd_server"]

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
_keys = _text.filter(
    lambda k: (bool(k) and not k.startswith("pysyncer.")) or k == ORIGIN_DC_PROPERTY
)


@st.composite
def instances(draw: st.DrawFn) -> Instance:
    host = draw(st.sampled_from(["10.0.0.1", "::1", "h.example"]))
    shown = bracket_host(host)
    endpoints = draw(
        st.sampled_from(
            [(f"grpc://{shown}:9000",), (), (f"http://{shown}:80", "grpc://x:1"), ("weird",)]
        )
    )
    return Instance(
        service=ServiceKey(
            draw(_text),
            draw(_text.filter(lambda n: bool(n) and "/" not in n)),
            draw(_text),
            draw(st.sampled_from(["", "prod"])),
            draw(st.sampled_from(["default/default", "d/p"])),
        ),
        instance_id=draw(_text.filter(bool)),
        host_name=draw(st.sampled_from([host, "", "node-1"])),
        endpoints=endpoints,
        status=draw(st.sampled_from(["UP", "DOWN", "STARTING"])),
        properties=draw(st.dictionaries(_keys, _text, max_size=4)),
        health_interval=draw(st.sampled_from([30, 10])),
        health_times=draw(st.sampled_from([3, 2])),
    )


@pytest.mark.parametrize("layout", ["kratos", "grpc", "gomicro"])
@settings(max_examples=150, deadline=None)
@given(instance=instances())
def test_layout_round_trip(layout: str, instance: Instance) -> None:
    codec = Layout(layout, "/p/", "grpc")
    key = codec.key(instance.service.name, instance.instance_id)
    assert key.startswith(codec.service_prefix(instance.service.name))
    assert codec.decode(key, codec.encode(instance)) == instance


@pytest.mark.parametrize("layout", ["kratos", "grpc", "gomicro"])
def test_native_values_decode(layout: str) -> None:
    codec = Layout(layout, "/p/", "grpc")
    service = ServiceKey("", "helloworld", "v1")
    iid = "10.0.0.5:9000" if layout == "grpc" else "node-1"
    raw = native_value(layout, service, iid, "10.0.0.5:9000", {"zone": "a"})
    instance = codec.decode(codec.key("helloworld", iid), raw)
    assert instance.instance_id == iid and instance.service.name == "helloworld"
    assert "grpc://10.0.0.5:9000" in instance.endpoints
    assert instance.properties["zone"] == "a"
    with pytest.raises(ValueError):
        codec.decode("/p/x/y", b"not json")
    if layout == "grpc":
        odd = json.dumps({"Addr": "h:1", "Metadata": [1, 2]}).encode()
        assert codec.decode("/p/s/i", odd).properties == {"grpc.metadata": "[1,2]"}


def test_settings_and_addresses() -> None:
    with pytest.raises(ConfigError, match=r"adapter\.layout"):
        load_adapter("etcd", ["127.0.0.1:2379"], {"layout": "consul"})
    with pytest.raises(ConfigError, match=r"adapter\.request-timeout"):
        load_adapter("etcd", ["127.0.0.1:2379"], {"request-timeout": "x"})
    assert parse_endpoints(["http://a:1,b:2", "etcd://[::1]:3"]) == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
    ]
    with pytest.raises(ConfigError):
        parse_endpoints(["a"])


@pytest.fixture
async def harness(etcd_server: EtcdServer) -> AsyncIterator[EtcdRegistryHarness]:
    h = EtcdRegistryHarness(etcd_server, "kratos")
    await h.start()
    yield h
    await h.stop()


def make(harness: EtcdRegistryHarness, addresses: list[str] | None = None) -> EtcdAdapter:
    adapter = load_adapter("etcd", addresses or harness.addresses(), harness.settings())
    assert isinstance(adapter, EtcdAdapter)
    return adapter


@pytest.mark.needs_server("etcd")
@pytest.mark.timeout(60)
async def test_compaction_yields_resync(harness: EtcdRegistryHarness) -> None:
    adapter = make(harness)
    await adapter.start()
    try:
        await adapter.list_instances()
        for n in range(5):
            await adapter.register(copy_instance(f"k-{n}"))
        current = (await harness.app.get_prefix(harness.prefix.encode())).header.revision
        await harness.app.compact(current)
        collector = EventCollector(adapter)  # watches from before the compaction
        first = await collector.first_batch(10)
        assert first is not None and first.resync and adapter.compactions == 1
        await adapter.list_instances()
        await adapter.register(copy_instance("after"))
        await collector.wait_for(lambda e: e.instance.instance_id == "after", 5)
        await collector.stop()
    finally:
        await adapter.close()


def quick(n: int) -> Instance:
    return copy_instance(f"s-{n}", interval=5, times=1)  # TTL 10 s


@pytest.mark.needs_server("etcd")
@pytest.mark.timeout(60)
async def test_lease_loss_reports_not_found_then_reregisters(
    harness: EtcdRegistryHarness,
) -> None:
    adapter = make(harness)
    await adapter.start()
    try:
        short = [
            await adapter.register(copy_instance(f"s-{n}", interval=5, times=1)) for n in (1, 2)
        ]
        other = await adapter.register(copy_instance("long"))
        assert [r.status for r in await adapter.renew([*short, other])] == ["ok"] * 3
        lost_lease = adapter._leases[10]
        await harness.app.revoke_lease(lost_lease)
        results = await adapter.renew([*short, other])
        assert [r.status for r in results] == ["not_found", "not_found", "ok"]
        again = [
            await adapter.register(copy_instance(f"s-{n}", interval=5, times=1)) for n in (1, 2)
        ]
        assert adapter._leases[10] != lost_lease
        assert [r.status for r in await adapter.renew([*again, other])] == ["ok"] * 3
        assert await adapter.get_instance(again[0]) == quick(1)
    finally:
        await adapter.close()


@pytest.mark.needs_server("etcd")
@pytest.mark.timeout(60)
async def test_failover_across_endpoints(
    harness: EtcdRegistryHarness, etcd_server: EtcdServer
) -> None:
    dead = TcpProxy("127.0.0.1", 1)
    second = TcpProxy("127.0.0.1", etcd_server.client_port)
    await dead.start()
    await dead.stop()
    await second.start()
    adapter = make(harness, [dead.address, harness.proxy.address, second.address])
    await adapter.start()
    collector: EventCollector | None = None
    try:
        ref = await adapter.register(copy_instance("f-1"))
        await adapter.list_instances()
        collector = EventCollector(adapter)
        await asyncio.sleep(0.2)
        await harness.proxy.stop()  # the endpoint in use goes away
        renewed = await adapter.renew([ref])
        assert [r.status for r in renewed] == ["ok"], renewed
        assert adapter.conn.text() == second.address
        await adapter.register(copy_instance("f-2"))
        await collector.wait_for(lambda e: e.instance.instance_id == "f-2", 10)
        await second.stop()
        with pytest.raises(UnavailableError):
            await adapter.list_instances()
    finally:
        if collector is not None:
            await collector.stop()
        await adapter.close()
        await second.stop()
