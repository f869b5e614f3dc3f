"""The ``zookeeper`` adapter read and written by independent Dubbo clients from PyPI.

Witnesses: ``kazoo`` writing provider nodes the way Apache Dubbo's Python SDK does
(``tri://host:port?service=IFACE``: no path, no ``interface`` parameter; the interface
only in the znode path and ``service=``) and, when installed, ``apache-dubbo``'s own
ZooKeeper registry registering a provider and looking up the copies pysyncer writes.
A real ZooKeeper server (tests/support/zk.py) sits between them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from pysyncer.adapters.dubbourl import instance_from_url
from pysyncer.adapters.zookeeper import ZookeeperAdapter, ZookeeperSettings
from pysyncer.model import Instance, ServiceKey
from tests.support.zk import ZkServer, zk_server

kazoo_client = pytest.importorskip("kazoo.client")

__all__ = ["zk_server"]

SDK_URL = "tri://127.0.0.1:39949?service=org.example.Echo"

pytestmark = [pytest.mark.needs_server("zookeeper"), pytest.mark.timeout(90)]


def test_interface_from_service_param_then_znode_path() -> None:
    from_service = instance_from_url(SDK_URL)
    assert from_service.service.name == "org.example.Echo"
    assert from_service.endpoints == ("tri://127.0.0.1:39949",)
    assert from_service.properties["service"] == "org.example.Echo"  # kept as metadata
    bare = instance_from_url("tri://127.0.0.1:39949?timeout=3000", "org.example.Bare")
    assert bare.service.name == "org.example.Bare"
    explicit = instance_from_url("dubbo://10.0.0.1:1/x.Path?interface=x.Param", "x.Znode")
    assert explicit.service.name == "x.Param"  # the URL's own word wins
    with pytest.raises(ValueError, match="names no interface"):
        instance_from_url("tri://127.0.0.1:39949?timeout=3000")


@pytest.fixture
def kazoo(zk_server: ZkServer) -> Iterator[Any]:
    client = kazoo_client.KazooClient(hosts=zk_server.address, timeout=10.0)
    client.start(timeout=15)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
async def adapter(zk_server: ZkServer) -> AsyncIterator[ZookeeperAdapter]:
    root = f"/dubbo-{uuid.uuid4().hex[:8]}"
    zk = ZookeeperAdapter([zk_server.address], ZookeeperSettings.from_mapping({"root": root}))
    await zk.start()
    try:
        yield zk
    finally:
        await zk.close()


async def test_sdk_style_provider_is_listed_and_bad_node_warned_once(
    kazoo: Any, adapter: ZookeeperAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    providers = f"{adapter.root}/org.example.Echo/providers"
    node = f"{providers}/{quote(SDK_URL, safe='')}"  # as the SDK names it: URL-encoded
    await asyncio.to_thread(kazoo.create, node, b"", makepath=True)
    await asyncio.to_thread(kazoo.create, f"{providers}/not-a-url", b"")
    caplog.set_level(logging.WARNING, logger="pysyncer.adapters.zookeeper")
    first = await adapter.list_instances()
    await adapter.list_instances()
    names = {(i.service.name, i.endpoints) for i in first}
    assert names == {("org.example.Echo", ("tri://127.0.0.1:39949",))}
    warnings = [r.getMessage() for r in caplog.records if "not-a-url" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "is not a URL" in warnings[0]
    assert adapter.skipped_nodes == 2  # counted on every read, logged once


async def test_apache_dubbo_registry_sees_the_copy(
    zk_server: ZkServer, adapter: ZookeeperAdapter
) -> None:
    """apache-dubbo registers a provider; pysyncer reads it, writes a copy under another
    interface's root layout; apache-dubbo's lookup finds and parses the copy."""
    dubbo_url = pytest.importorskip("dubbo.url")
    zk_registry = pytest.importorskip("dubbo.registry.zookeeper.zk_registry")
    registry_url = dubbo_url.create_url(
        f"zookeeper://{zk_server.address}?group={adapter.root.lstrip('/')}"
    )
    registry = zk_registry.ZookeeperRegistryFactory().get_registry(registry_url)
    try:
        provider = dubbo_url.create_url("tri://127.0.0.1:39949?service=org.example.Echo")
        await asyncio.to_thread(registry.register, provider)
        listed = list(await adapter.list_instances())
        assert [i.service.name for i in listed] == ["org.example.Echo"]
        copy = Instance(
            ServiceKey("", "org.example.Copied", ""),
            "copy-1",
            "127.0.0.1",
            endpoints=("tri://127.0.0.1:40001",),
        )
        await adapter.register(copy)
        consumer = dubbo_url.create_url("consumer://127.0.0.1?service=org.example.Copied")
        found = await asyncio.to_thread(registry.lookup, consumer)
        assert len(found) == 1
        parsed = dubbo_url.create_url(found[0], encoded=True)
        assert (parsed.scheme, parsed.host, parsed.port) == ("tri", "127.0.0.1", 40001)
    finally:
        await asyncio.to_thread(registry.destroy)
        # apache-dubbo 3.0.0b1's destroy() stops its KazooClient but never closes it
        # (its socket pair leaks): close it the way kazoo asks
        registry._zk_client._client.close()
