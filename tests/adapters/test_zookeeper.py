"""The ZooKeeper client (jute protocol) and the ``zookeeper`` adapter beyond the contract.

Unit tests of the wire format and the Dubbo URL mapping, then behaviour against a real
ZooKeeper (module-scoped, small tickTime): session expiry and re-created copies, watch
re-arming across reconnects, failover between addresses.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.adapters import (
    ChangeEvent,
    ConflictError,
    NotFoundError,
    UnavailableError,
    load_adapter,
)
from pysyncer.adapters.dubbourl import (
    decode_node_name,
    encode_node_name,
    instance_from_url,
    instance_to_url,
)
from pysyncer.adapters.zk import (
    ConnectionLossError,
    MultiOp,
    NodeExistsError,
    NoNodeError,
    Op,
    SessionEvent,
    ZkClient,
    ZkError,
    error_for,
    parse_hosts,
    proto,
)
from pysyncer.adapters.zk.session import Watcher
from pysyncer.adapters.zookeeper import ZookeeperAdapter
from pysyncer.errors import ConfigError
from pysyncer.hostport import bracket_host
from pysyncer.model import ORIGIN_DC_PROPERTY, Instance, ServiceKey
from pysyncer.testing.contract import EventCollector, copy_instance
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import eventually
from tests.support.zk import ZkServer, ZookeeperHarness, expire_session, zk_server

__all__ = ["zk_server"]

# -- wire format ------------------------------------------------------------------------


def test_frame_and_request_header() -> None:
    assert proto.frame(b"abc") == b"\x00\x00\x00\x03abc"
    framed = proto.request(7, Op.GET_CHILDREN, b"body")
    assert framed == struct.pack(">iii", 12, 7, 8) + b"body"
    assert proto.frame_length(b"\x00\x00\x01\x00") == 256
    with pytest.raises(ValueError):
        proto.frame_length(struct.pack(">i", -5))
    with pytest.raises(ValueError):
        proto.frame_length(struct.pack(">i", proto.MAX_FRAME + 1))


def test_connect_request_bytes() -> None:
    request = proto.ConnectRequest(0, 0x10, 4000, 0x1234, b"p" * 16)
    raw = request.encode()
    assert raw == (
        struct.pack(">iqiq", 0, 0x10, 4000, 0x1234) + struct.pack(">i", 16) + b"p" * 16 + b"\x00"
    )
    assert proto.ConnectRequest.decode(raw) == request


def test_connect_response_expired_and_without_read_only_byte() -> None:
    response = proto.ConnectResponse(0, 0, 0, b"\x00" * 16)
    assert response.expired
    old_server = response.encode()[:-1]  # servers before 3.4 send no readOnly byte
    assert proto.ConnectResponse.decode(old_server) == response
    assert not proto.ConnectResponse(0, 4000, 5, b"x").expired


def test_jute_primitives_round_trip() -> None:
    raw = (
        proto.Writer()
        .i32(-1)
        .i64(2**40)
        .boolean(True)
        .buffer(None)
        .string("zoo/é")
        .strings(["a", ""])
        .getvalue()
    )
    r = proto.Reader(raw)
    assert (r.i32(), r.i64(), r.boolean(), r.buffer(), r.string(), r.strings()) == (
        -1,
        2**40,
        True,
        None,
        "zoo/é",
        ["a", ""],
    )
    assert r.remaining == 0


@pytest.mark.parametrize(
    "raw",
    [b"\x00\x00", struct.pack(">i", 10) + b"abc", struct.pack(">i", -7), struct.pack(">i", 99)],
)
def test_malformed_records_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        proto.Reader(raw).strings()


def test_stat_and_watcher_event_decode() -> None:
    stat = proto.Stat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    raw = struct.pack(">qqqqiiiqiiq", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    assert proto.Reader(raw).stat() == stat
    event = proto.WatcherEvent(4, 3, "/dubbo")
    assert proto.WatcherEvent.decode(proto.Reader(event.encode())) == event


def test_multi_encoding_and_results() -> None:
    body = proto.encode_multi([MultiOp(Op.CHECK, "/a", version=3)])
    r = proto.Reader(body)
    assert (r.i32(), r.boolean(), r.i32(), r.string(), r.i32()) == (Op.CHECK, False, -1, "/a", 3)
    assert (r.i32(), r.boolean(), r.i32()) == (-1, True, -1)
    reply = (
        proto.Writer()
        .i32(Op.CREATE)
        .boolean(False)
        .i32(0)
        .string("/a")
        .i32(Op.ERROR)
        .boolean(False)
        .i32(-101)
        .i32(-101)
        .i32(-1)
        .boolean(True)
        .i32(-1)
        .getvalue()
    )
    assert proto.decode_multi(proto.Reader(reply)) == [(Op.CREATE, 0, "/a"), (Op.ERROR, -101, None)]


def test_error_codes_map_to_typed_errors() -> None:
    assert isinstance(error_for(-101, "get", "/x"), NoNodeError)
    assert isinstance(error_for(-101, "get"), NotFoundError)
    assert isinstance(error_for(-110, "create"), ConflictError)
    assert isinstance(error_for(-4, "x"), UnavailableError)
    assert isinstance(error_for(-112, "x"), UnavailableError)
    unknown = error_for(-999, "op", "/p")
    assert type(unknown) is ZkError and unknown.code == "-999" and "/p" in str(unknown)
    assert "NONODE" in str(error_for(-101, "get", "/x")).replace("_", "")


def test_parse_hosts() -> None:
    assert parse_hosts(["a:1,b:2", "zk://c:3/chroot", "[::1]:4", "d"]) == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("::1", 4),
        ("d", 2181),
    ]
    with pytest.raises(ConfigError):
        parse_hosts(["a:x"])
    with pytest.raises(ConfigError):
        parse_hosts([])


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"adapter\.root"):
        load_adapter("zookeeper", ["127.0.0.1:2181"], {"root": "dubbo"})
    with pytest.raises(ConfigError, match=r"adapter\.session-timeout"):
        load_adapter("zookeeper", ["127.0.0.1:2181"], {"session-timeout": "soon"})
    adapter = load_adapter("zookeeper", ["127.0.0.1:2181"], {"root": "/svc", "close_session": 1})
    assert isinstance(adapter, ZookeeperAdapter) and adapter.root == "/svc"


# -- Dubbo URLs -------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_keys = _text.filter(
    lambda k: (bool(k) and not k.startswith("pysyncer.")) or k == ORIGIN_DC_PROPERTY
)


@st.composite
def instances(draw: st.DrawFn) -> Instance:
    service = ServiceKey(
        draw(_text),
        draw(_text.filter(bool)),
        draw(_text),
        draw(st.sampled_from(["", "production"])),
        draw(st.sampled_from(["default/default", "d/p"])),
    )
    host = draw(st.sampled_from(["10.0.0.1", "h.example", "::1", "a b"]))
    port = draw(st.integers(1, 65535))
    scheme = draw(st.sampled_from(["dubbo", "rest", "tri"]))
    shown = bracket_host(host)
    endpoints = draw(
        st.sampled_from(
            [
                (f"{scheme}://{shown}:{port}",),
                (),
                (f"{scheme}://{shown}:{port}", "http://x:1"),
                (f"{scheme}://{shown}:{port}/path",),
            ]
        )
    )
    return Instance(
        service=service,
        instance_id=draw(_text.filter(bool)),
        host_name=draw(st.sampled_from([host, "other-host", ""])),
        endpoints=endpoints,
        status=draw(st.sampled_from(["UP", "DOWN", "OUTOFSERVICE"])),
        properties=draw(st.dictionaries(_keys, _text, max_size=5)),
        health_interval=draw(st.sampled_from([30, 5])),
        health_times=draw(st.sampled_from([3, 1])),
    )


@settings(max_examples=300, deadline=None)
@given(instances())
def test_dubbo_url_round_trip(instance: Instance) -> None:
    url = instance_to_url(instance)
    node = encode_node_name(url)
    assert "/" not in node and node.isascii()
    assert instance_from_url(decode_node_name(node)) == instance


def test_native_provider_url() -> None:
    url = (
        "dubbo://10.0.0.1:20880/com.foo.Bar?anyhost=true&application=shop&dubbo=2.0.2"
        "&group=g1&interface=com.foo.Bar&methods=a,b&side=provider&version=1.0.0"
    )
    instance = instance_from_url(url)
    assert instance.service == ServiceKey("shop", "com.foo.Bar", "1.0.0")
    assert instance.instance_id == url
    assert instance.endpoints == ("dubbo://10.0.0.1:20880",)
    assert instance.properties["group"] == "g1" and instance.properties["methods"] == "a,b"
    assert "side" not in instance.properties and instance.status == "UP"
    # Java's URLEncoder form
    assert encode_node_name("a b~*") == "a+b%7E*"


# -- against a real server --------------------------------------------------------------


@pytest.fixture
async def harness(zk_server: ZkServer) -> AsyncIterator[ZookeeperHarness]:
    h = ZookeeperHarness(zk_server)
    await h.start()
    yield h
    await h.stop()


pytestmark_server = pytest.mark.needs_server("zookeeper")


@pytestmark_server
@pytest.mark.timeout(60)
async def test_client_operations(zk_server: ZkServer) -> None:
    client = ZkClient([zk_server.address], session_timeout=4)
    await client.start()
    try:
        await client.create("/ops/a/b", b"v", make_parents=True)
        with pytest.raises(NodeExistsError):
            await client.create("/ops/a/b")
        children, stat = await client.get_children2("/ops/a")
        assert children == ["b"] and stat.num_children == 1
        data, stat = await client.get_data("/ops/a/b")
        assert data == b"v" and stat.version == 0
        assert (await client.set_data("/ops/a/b", b"w")).version == 1
        fired: list[str] = []
        assert await client.exists("/ops/c", watch=lambda e: fired.append(e.path)) is None
        await client.multi([MultiOp(Op.CREATE, "/ops/c"), MultiOp(Op.DELETE, "/ops/a/b")])
        await eventually(lambda: _true(fired == ["/ops/c"]))
        with pytest.raises(NoNodeError):
            await client.multi([MultiOp(Op.CREATE, "/ops/d"), MultiOp(Op.DELETE, "/ops/nope")])
        assert await client.exists("/ops/d") is None  # nothing of a failed multi applied
        with pytest.raises(ValueError):
            await client.get_children("relative")
        node = await client.create("/ops/e", ephemeral=True)
        assert (await client.exists(node) or proto.Stat(*[0] * 11)).ephemeral_owner == (
            client.session_id
        )
    finally:
        await client.close()


def has_id(instance_id: str) -> Callable[[ChangeEvent], bool]:
    return lambda e: e.instance.instance_id == instance_id


async def _true(value: bool) -> bool:
    return value


@pytestmark_server
@pytest.mark.timeout(60)
async def test_session_expiry_recreates_copies(harness: ZookeeperHarness) -> None:
    adapter = load_adapter("zookeeper", harness.addresses(), harness.settings())
    assert isinstance(adapter, ZookeeperAdapter)
    states: list[SessionEvent] = []
    await adapter.start()
    listener = adapter.client.on_state
    assert listener is not None

    def record(event: SessionEvent) -> None:
        states.append(event)
        listener(event)

    adapter.client.on_state = record
    try:
        refs = [await adapter.register(copy_instance(f"c-{n}")) for n in range(5)]
        old_session = adapter.client.session_id
        await expire_session(harness.server.address, old_session, adapter.client.session_password)
        await eventually(lambda: _true(adapter.recreated == 5))
        assert [s.state for s in states][-2:] == ["expired", "connected"]
        assert states[-1].new_session and adapter.client.session_id != old_session
        assert [r.status for r in await adapter.renew(refs)] == ["ok"] * 5
        for n in range(5):
            assert await adapter.get_instance(refs[n]) == copy_instance(f"c-{n}")
        listed = {i.instance_id for i in await adapter.list_instances()}
        assert {f"c-{n}" for n in range(5)} <= listed
    finally:
        await adapter.close()


@pytestmark_server
@pytest.mark.timeout(60)
async def test_watches_rearmed_across_reconnect_and_expiry(harness: ZookeeperHarness) -> None:
    adapter = load_adapter("zookeeper", harness.addresses(), harness.settings())
    assert isinstance(adapter, ZookeeperAdapter)
    await adapter.start()
    await adapter.list_instances()
    collector = EventCollector(adapter)
    service = harness.service("Watched")
    try:
        for n in range(3):  # each change re-arms the one-shot watch
            app = await harness.app_register(service, "10.2.0.1", 9000 + n)
            await collector.wait_for(has_id(app.instance_id), 5)
        harness.proxy.drop_connections()  # same session, new connection: SetWatches
        app = await harness.app_register(service, "10.2.0.1", 9100)
        await collector.wait_for(lambda e: e.instance.instance_id == app.instance_id, 5)
        client = adapter.client
        await expire_session(harness.server.address, client.session_id, client.session_password)
        await eventually(lambda: _true(client.expirations == 1 and client.connected))
        late = await harness.app_register(service, "10.2.0.1", 9200)
        await collector.wait_for(lambda e: e.instance.instance_id == late.instance_id, 5)
        await harness.app_unregister(late)
        await collector.wait_for(
            lambda e: e.kind == "delete" and e.instance.instance_id == late.instance_id, 5
        )
    finally:
        await collector.stop()
        await adapter.close()


@pytestmark_server
@pytest.mark.timeout(60)
async def test_failover_between_addresses(zk_server: ZkServer) -> None:
    dead = TcpProxy("127.0.0.1", 1)  # answers nothing useful: upstream refused
    first, second = TcpProxy("127.0.0.1", zk_server.port), TcpProxy("127.0.0.1", zk_server.port)
    for proxy in (dead, first, second):
        await proxy.start()
    await dead.stop()
    client = ZkClient([dead.address, first.address, second.address], session_timeout=4)
    try:
        await client.start()
        session = client.session_id
        used = client.address
        await client.create("/failover", ephemeral=True)
        await (first if used == first.address else second).stop()
        assert await client.exists("/failover") is not None  # same session elsewhere
        assert client.session_id == session and client.address != used
    finally:
        await client.close()
        for proxy in (first, second):
            await proxy.stop()


@pytestmark_server
@pytest.mark.timeout(30)
async def test_no_server_is_unavailable() -> None:
    proxy = TcpProxy("127.0.0.1", 1)
    await proxy.start()
    await proxy.stop()
    adapter = load_adapter("zookeeper", [proxy.address], {"connect-timeout": 0.5})
    with pytest.raises(UnavailableError):
        await adapter.start()
    await adapter.close()


class CountingReads:
    """Counts the adapter client's reads by path; can fail one read of a path once."""

    def __init__(self, client: ZkClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        self.fail_once: set[str] = set()
        get_children, exists = client.get_children, client.exists

        async def counted_children(path: str, watch: Watcher | None = None) -> list[str]:
            self._count(path)
            return await get_children(path, watch)

        async def counted_exists(path: str, watch: Watcher | None = None) -> proto.Stat | None:
            self._count(path)
            return await exists(path, watch)

        monkeypatch.setattr(client, "get_children", counted_children)
        monkeypatch.setattr(client, "exists", counted_exists)

    def _count(self, path: str) -> None:
        self.paths.append(path)
        if path in self.fail_once:
            self.fail_once.discard(path)
            raise ConnectionLossError(f"injected: {path}")

    def since(self, mark: int) -> list[str]:
        return self.paths[mark:]


@pytestmark_server
@pytest.mark.timeout(120)
async def test_new_interface_among_many_empty_ones(
    harness: ZookeeperHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interfaces without providers (consumers or configurators only) are read once.

    A change of the root's children reads the new interfaces only, not every interface
    that has no providers (which made a new service wait 2 round trips per such interface).
    """
    app, root = harness.app, harness.root

    async def make_empty(numbers: range) -> None:
        """Interfaces with consumers only, or with a providers node and no provider."""
        category = ("providers", "consumers", "configurators")
        await asyncio.gather(
            *(
                app.create(f"{root}/com.example.Empty{n}/{category[n % 3]}", make_parents=True)
                for n in numbers
            )
        )

    await make_empty(range(50))  # there at the first listing
    adapter = load_adapter("zookeeper", harness.addresses(), harness.settings())
    assert isinstance(adapter, ZookeeperAdapter)
    await adapter.start()
    await adapter.list_instances()
    collector = EventCollector(adapter)
    # more of them while the adapter watches, one of them left empty by its provider
    gone = await harness.app_register(harness.service("Empty50"), "10.3.0.9", 9000)
    await collector.wait_for(has_id(gone.instance_id), 5)
    await harness.app_unregister(gone)
    await collector.wait_for(lambda e: e.kind == "delete" and has_id(gone.instance_id)(e), 5)
    await make_empty(range(51, 200))
    interfaces = {f"{root}/com.example.Empty{n}" for n in range(200)}
    await eventually(lambda: _true(interfaces <= set(adapter.client.watched_paths()["child"])))
    reads = CountingReads(adapter.client, monkeypatch)
    try:
        for n in range(3):  # each new interface changes the root's children
            mark = len(reads.paths)
            app_instance = await harness.app_register(
                harness.service(f"Fresh{n}"), "10.3.0.1", 9000
            )
            await collector.wait_for(has_id(app_instance.instance_id), 5)
            # root + the new interface node + its providers node (+ a few re-reads while
            # the app creates them one by one); never the empty interfaces
            new_reads = reads.since(mark)
            assert len(new_reads) <= 12, new_reads
            assert not [p for p in new_reads if ".Empty" in p], new_reads

        # A transient error while reading a new interface: the rescan is retried, and the
        # interface's watches (read again) stay armed.
        flaky = harness.service("Flaky")
        reads.fail_once.add(f"{root}/{flaky.name}/providers")
        first = await harness.app_register(flaky, "10.3.0.2", 9000)
        await collector.wait_for(has_id(first.instance_id), 5)
        assert not reads.fail_once  # the injected error happened
        armed = adapter.client.watched_paths()["child"]
        assert {root, f"{root}/{flaky.name}", f"{root}/{flaky.name}/providers"} <= set(armed)
        second = await harness.app_register(flaky, "10.3.0.2", 9001)  # the providers watch
        await collector.wait_for(has_id(second.instance_id), 5)
        await harness.app_unregister(first)
        await collector.wait_for(lambda e: e.kind == "delete" and has_id(first.instance_id)(e), 5)
        # the same with the root's own read failing once
        reads.fail_once.add(root)
        late = await harness.app_register(harness.service("Late"), "10.3.0.3", 9000)
        await collector.wait_for(has_id(late.instance_id), 5)
        assert not reads.fail_once
        mark = len(reads.paths)
        again = await harness.app_register(harness.service("Late"), "10.3.0.3", 9001)
        await collector.wait_for(has_id(again.instance_id), 5)
        assert not [p for p in reads.since(mark) if ".Empty" in p]
    finally:
        await collector.stop()
        await adapter.close()
