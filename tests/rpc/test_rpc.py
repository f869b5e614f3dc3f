# mypy: disable-error-code="import-untyped"
"""The sync RPC end to end: a real grpc.aio server on loopback over an in-memory source."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc import aio

from pysyncer._core import digest
from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.rpc import (
    PayloadError,
    PeerBatch,
    RequestRejectedError,
    SyncClient,
    SyncServer,
    TlsConfig,
    UnavailableError,
    codec,
)
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc.errors import DeadlineExceededError, OversizedPayloadError

DC = "east"
CART = ServiceKey("shop", "cart", "1.0.0", "production")
PAY = ServiceKey("shop", "pay", "2.0.0", "production")
WAIT = 5.0  # the bound of every wait in this file


class MemorySource:
    """A faithful in-memory exporter: a change log with revisions and a digest table."""

    def __init__(self, dc: str = DC, node: str = "n1", epoch: str = "epoch-1") -> None:
        self._dc, self._node, self._epoch = dc, node, epoch
        self.log: list[Record] = []
        self.floor = 0  # revisions <= floor have left the log (except floor itself as start)
        self.state: dict[str, Record] = {}
        self.table = digest.SlotDigestTable()
        self._rev = 0
        self._changed = asyncio.Condition()

    @property
    def dc(self) -> str:
        return self._dc

    @property
    def node(self) -> str:
        return self._node

    @property
    def epoch(self) -> str:
        return self._epoch

    def revision(self) -> int:
        return self._rev

    async def put(self, service: ServiceKey, iid: str, host: str = "h") -> Record:
        inst = Instance(
            service,
            iid,
            host,
            (f"rest://{host}:8080", f"grpc://{host}:9090"),
            properties={"z": "a"},
        )
        return await self._commit(service, iid, inst)

    async def delete(self, service: ServiceKey, iid: str) -> Record:
        return await self._commit(service, iid, None)

    async def _commit(self, service: ServiceKey, iid: str, inst: Instance | None) -> Record:
        rec = self._record(service, iid, inst)
        async with self._changed:
            self._changed.notify_all()
        return rec

    def _record(self, service: ServiceKey, iid: str, inst: Instance | None) -> Record:
        """Commit without waking anyone."""
        self._rev += 1
        rec = Record(self._dc, service, iid, self._rev, inst)
        old = self.state.pop(iid, None)
        if old is not None:
            self.table.remove(old.slot, old.digest)
        if inst is not None:
            self.state[iid] = rec
            self.table.add(rec.slot, rec.digest)
        self.log.append(rec)
        return rec

    def truncate(self, upto: int) -> None:
        self.log = [r for r in self.log if r.revision > upto]
        self.floor = upto

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        if revision < self.floor:
            return [], True
        return [r for r in self.log if r.revision > revision][:limit], False

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        async with self._changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._rev > after), timeout)
        return self._rev

    def digest_table(self) -> tuple[int, bytes]:
        return self._rev, self.table.to_bytes()

    async def slot_records(self, slots: Sequence[int]) -> AsyncIterator[tuple[int, list[Record]]]:
        for slot in slots:
            records = [r for r in self.state.values() if r.slot == slot]
            if records:
                yield slot, records


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def server(source: MemorySource) -> AsyncIterator[SyncServer]:
    srv = SyncServer(source, "127.0.0.1", 0, heartbeat_interval=0.2)
    await srv.start()
    yield srv
    await srv.stop(0.1)


@pytest.fixture
async def client(server: SyncServer) -> AsyncIterator[SyncClient]:
    async with SyncClient(server.address, dc=DC) as c:
        yield c


async def _next(stream: AsyncIterator[PeerBatch], bound: float = WAIT) -> PeerBatch:
    return await asyncio.wait_for(anext(stream), bound)


async def _next_records(stream: AsyncIterator[PeerBatch], bound: float = WAIT) -> PeerBatch:
    while True:
        batch = await _next(stream, bound)
        if not batch.heartbeat:
            return batch


# -- Watch ---------------------------------------------------------------------------------


async def test_watch_sends_backlog_then_live_changes_when_they_commit(
    source: MemorySource,
) -> None:
    first = [await source.put(CART, f"i{n}") for n in range(3)]
    # No heartbeat for 30 s, so nothing but the commit's wake-up can send the change
    # within _next's bound (typically a few milliseconds).
    async with (
        SyncServer(source, "127.0.0.1", 0, heartbeat_interval=30) as server,
        SyncClient(server.address, dc=DC) as client,
    ):
        stream = client.watch(0)
        batch = await _next_records(stream)
        assert batch.records == tuple(first)
        assert (batch.dc, batch.epoch, batch.revision) == (DC, "epoch-1", 3)
        await asyncio.sleep(0.05)  # the server is waiting now
        gone = await source.delete(CART, "i1")
        batch = await _next(stream)
        assert batch.records == (gone,) and batch.records[0].deleted and batch.revision == 4
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_resumes_from_a_revision_and_sends_heartbeats(
    source: MemorySource, client: SyncClient, server: SyncServer
) -> None:
    records = [await source.put(PAY, f"p{n}") for n in range(5)]
    stream = client.watch(3, "epoch-1", max_batch=1)
    assert (await _next(stream)).records == (records[3],)
    last = await _next(stream)
    assert last.records == (records[4],) and last.revision == 5
    beat = await _next(stream)  # idle: heartbeat_interval is 0.2 s
    assert beat.heartbeat and not beat.records and beat.revision == 5
    assert server.stats.heartbeats_sent >= 1 and server.stats.streams_open == 1
    await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_signals_reset_when_the_revision_left_the_log_or_epoch_differs(
    source: MemorySource, client: SyncClient
) -> None:
    for n in range(4):
        await source.put(CART, f"i{n}")
    source.truncate(2)
    batches = [b async for b in client.watch(1, "epoch-1")]
    assert len(batches) == 1 and batches[0].reset and batches[0].revision == 4
    batches = [b async for b in client.watch(3, "another-epoch")]
    assert len(batches) == 1 and batches[0].reset
    # from the floor of the log it still resumes
    stream = client.watch(2, "epoch-1")
    assert [r.revision for r in (await _next(stream)).records] == [3, 4]
    await stream.aclose()  # type: ignore[attr-defined]


class CommitsDuringTheSend(MemorySource):
    """Commits one more change as it hands out its first ones: it is in the log before the
    stream that sends them can look again (a commit that lands during a send)."""

    def __init__(self) -> None:
        super().__init__()
        self.during_send: Record | None = None

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        records, reset = await super().changes_since(revision, limit)
        if records and self.during_send is None:
            self.during_send = self._record(CART, "i1", None)
        return records, reset


async def test_watch_coalesces_commits_within_its_window() -> None:
    # The burst must land inside the window that the send of ``first`` opens; a window
    # this long leaves room for a stall of the machine in between. The batch waits out the
    # whole window, so the window is this test's running time.
    window = 5.0
    source = CommitsDuringTheSend()
    first = await source.put(CART, "i0")  # committed before the stream opens: sent at once
    async with (
        SyncServer(source, "127.0.0.1", 0, coalesce=window) as server,
        SyncClient(server.address, dc=DC) as client,
    ):
        stream = client.watch(0)
        assert (await _next_records(stream)).records == (first,)
        assert server.stats.coalesced_waits == 0
        assert source.during_send is not None
        burst = [source.during_send]  # held back like the rest, not sent on its own
        for n in range(2, 4):  # committed one by one, each a wake-up of the stream
            burst.append(await source.put(CART, f"i{n}"))
            await asyncio.sleep(0.02)
        batch = await _next_records(stream, window + WAIT)
        assert batch.records == tuple(burst) and batch.revision == 4  # one message
        assert server.stats.coalesced_waits == 1
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_sends_a_commit_after_its_window_at_once(source: MemorySource) -> None:
    # A stall only lengthens the quiet spell before the commit, so a short window will do.
    window = 0.3
    first = await source.put(CART, "i0")
    async with (
        SyncServer(source, "127.0.0.1", 0, coalesce=window) as server,
        SyncClient(server.address, dc=DC) as client,
    ):
        stream = client.watch(0)
        assert (await _next_records(stream)).records == (first,)
        await asyncio.sleep(1.5 * window)  # the window after that send is over
        lone = await source.delete(CART, "i0")
        assert (await _next_records(stream)).records == (lone,)
        assert server.stats.coalesced_waits == 0  # not held back
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_streams_at_one_position_share_one_encoding(
    source: MemorySource, server: SyncServer
) -> None:
    async with SyncClient(server.address, dc=DC) as a, SyncClient(server.address, dc=DC) as b:
        streams = [a.watch(0), b.watch(0)]
        await asyncio.sleep(0.1)  # both wait at revision 0
        changes = [await source.put(PAY, "p0"), await source.delete(CART, "absent")]
        for stream in streams:
            received: list[Record] = []
            while len(received) < len(changes):
                received.extend((await _next_records(stream)).records)
            assert received == changes
        assert server.stats.encodes_shared >= 1
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


async def test_server_stop_ends_open_streams_promptly(source: MemorySource) -> None:
    srv = SyncServer(source, "127.0.0.1", 0, heartbeat_interval=30)
    await srv.start()
    async with SyncClient(srv.address) as c:
        stream = c.watch(0)
        waiting = asyncio.ensure_future(_next(stream))
        await asyncio.sleep(0.1)
        start = asyncio.get_running_loop().time()
        await srv.stop(grace=30)
        with pytest.raises(UnavailableError):
            await waiting
        # ended by the stop itself: streams left open would hold it for the 30 s grace
        assert asyncio.get_running_loop().time() - start < 10
    assert srv.stats.streams_open == 0


# -- pulls, digests, health ----------------------------------------------------------------


async def test_pull_range_honours_until_and_limit(source: MemorySource, client: SyncClient) -> None:
    records = [await source.put(CART, f"i{n}") for n in range(6)]
    batch = await client.pull_range(1, 4)
    assert batch.records == tuple(records[1:4]) and batch.revision == 4 and not batch.more
    batch = await client.pull_range(0, limit=2)
    assert batch.records == tuple(records[:2]) and batch.more and batch.revision == 2
    batch = await client.pull_range(6)
    assert batch.records == () and batch.revision == 6 and not batch.more
    source.truncate(3)
    assert (await client.pull_range(1, epoch="epoch-1")).reset
    with pytest.raises(RequestRejectedError):
        await client.pull_range(5, 2)


async def test_digests_round_trip_into_a_slot_digest_table(
    source: MemorySource, client: SyncClient
) -> None:
    await source.put(CART, "i1")
    await source.put(PAY, "p1")
    revision, epoch, table = await client.get_digests()
    assert (revision, epoch) == (2, "epoch-1") and len(table) == 131072
    assert digest.SlotDigestTable.from_bytes(table) == source.table
    assert digest.SlotDigestTable.from_bytes(table)[CART.slot] != 0


async def test_pull_slots_gives_the_full_state_of_each_slot_even_empty(
    source: MemorySource, client: SyncClient
) -> None:
    kept = [await source.put(CART, f"i{n}") for n in range(3)]
    await source.delete(CART, "i0")
    await source.put(PAY, "p1")
    empty = next(s for s in range(16384) if s not in (CART.slot, PAY.slot))
    items = [item async for item in client.pull_slots([CART.slot, empty])]
    by_slot = {item.slot: item for item in items}
    assert set(by_slot) == {CART.slot, empty} and all(i.last for i in items)
    assert sorted(r.instance_id for r in by_slot[CART.slot].records) == ["i1", "i2"]
    assert by_slot[CART.slot].records[0] in kept
    assert by_slot[empty].records == []
    with pytest.raises(ValueError):
        [i async for i in client.pull_slots([16384])]


async def test_health(client: SyncClient, source: MemorySource) -> None:
    await source.put(CART, "i1")
    health = await client.health()
    assert (health.dc, health.node, health.revision, health.epoch) == (DC, "n1", 1, "epoch-1")
    assert health.version


# -- bad input -----------------------------------------------------------------------------


def _rec(iid: str = "i1", dc: str = DC, revision: int = 1) -> Record:
    inst = Instance(CART, iid, "h", ("rest://h:1",), properties={"a": "b"})
    return Record(dc, CART, iid, revision, inst)


def _payload(rows: object, services: object = (("d/p", "e", "a", "n", "v"),)) -> bytes:
    data: bytes = msgpack.packb((services, rows), use_bin_type=True)
    return data


@pytest.mark.parametrize(
    ("payload", "count", "needle"),
    [
        (b"\xc1garbage", 1, "not a valid msgpack"),
        (_payload([[0, "i", 1, None]]) + b"\x00", 1, "not a valid msgpack"),
        (_payload([[0, "i", 1, None]]), 2, "announces 2"),
        (_payload([[1, "i", 1, None]]), 1, "service index"),
        (_payload([[0, "", 1, None]]), 1, "instance id"),
        (_payload([[0, "i", -1, None]]), 1, "revision"),
        (_payload([[0, "i", 99, None]]), 1, "revision"),  # past the batch revision (10)
        (_payload([[0, "i", 1, ["h", [1], "UP", {}, 30, 3]]]), 1, "endpoint"),
        (_payload([[0, "i", 1, ["h", [], "UP", {"k": 1}, 30, 3]]]), 1, "property"),
        (_payload([[0, "i", 1, ["h", [], "UP", {}, 30]]]), 1, "is not [host"),
        (_payload([[0, "i", 1, None]], [["only", "four", "fields", "x"]]), 1, "service"),
        (_payload({"not": "a list"}), 1, "is not [services, records]"),
        (msgpack.packb(["x" * 70_000]), 1, "not a valid msgpack"),  # string over 64 KiB
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_payloads_raise_payload_errors(payload: bytes, count: int, needle: str) -> None:
    msg = pb.PeerBatch(dc=DC, revision=10, count=count, records=payload)
    with pytest.raises(PayloadError, match=re.escape(needle)) as info:
        codec.read_peer_batch(msg)
    assert isinstance(info.value, ValueError)


def test_codec_round_trip_and_encoding_checks() -> None:
    records = [_rec("a", revision=1), Record(DC, PAY, "b", 2, None)]
    msg = codec.peer_batch(DC, "e", 2, records)
    assert codec.read_peer_batch(pb.PeerBatch.FromString(msg.SerializeToString())).records == (
        tuple(records)
    )
    with pytest.raises(PayloadError, match="exports only its own"):
        codec.encode_records(DC, [_rec(dc="west")])
    with pytest.raises(PayloadError, match="tombstone"):
        codec.slot_batch(DC, PAY.slot, [Record(DC, PAY, "b", 2, None)], last=True)
    with pytest.raises(OversizedPayloadError):
        codec.decode_records(DC, b"", codec.MAX_BATCH_RECORDS + 1)
    with pytest.raises(PayloadError, match="131072"):
        codec.read_digest_table(pb.DigestTable(table=b"\x00" * 8))
    fill = range(codec.MAX_PAYLOAD_BYTES * 6 // 10 // 60_000)  # each record: 60% of a payload
    big = Instance(CART, "big", "h", properties={f"k{n}": "v" * 60_000 for n in fill})
    two = [Record(DC, CART, "big", 1, big), Record(DC, CART, "big", 2, big)]
    with pytest.raises(OversizedPayloadError, match="fewer records"):
        codec.encode_records(DC, two)  # over the message limit
    parts = codec.encode_parts(DC, two)  # so the server splits it
    assert [len(part) for part, _ in parts] == [1, 1]
    assert codec.decode_records(DC, parts[1][1], 1) == [two[1]]


def test_decoded_records_share_one_string_per_status() -> None:
    records = [_rec(f"i{n}", revision=n + 1) for n in range(3)]
    payload = codec.encode_records(DC, records)
    first, *others = codec.decode_records(DC, payload, len(records))
    assert first.instance is not None and first.instance.status == "UP"
    assert all(
        r.instance is not None and r.instance.status is first.instance.status for r in others
    )


def test_a_slot_batch_refuses_records_of_another_slot_whichever_service_they_follow() -> None:
    other = next(
        ServiceKey("shop", f"s{n}", "1.0.0", "production")
        for n in range(100)
        if ServiceKey("shop", f"s{n}", "1.0.0", "production").slot != PAY.slot
    )
    good = Record(DC, PAY, "a", 1, Instance(PAY, "a", "h"))
    stray = Record(DC, other, "b", 2, Instance(other, "b", "h"))
    for records in ([good, good, stray], [stray, good], [good, stray, good]):
        payload = codec.encode_records(DC, records, tombstones=False)
        msg = pb.SlotBatch(dc=DC, slot=PAY.slot, count=len(records), records=payload)
        with pytest.raises(PayloadError, match=f"'b' is in slot {other.slot}"):
            codec.read_slot_batch(msg)
    payload = codec.encode_records(DC, [good, good], tombstones=False)
    msg = pb.SlotBatch(dc=DC, slot=PAY.slot, count=2, records=payload, last=True)
    assert codec.read_slot_batch(msg).records == [good, good]


async def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    server: SyncServer, client: SyncClient, source: MemorySource
) -> None:
    async with aio.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/pysyncer.sync.v1.Sync/PullRange")
        with pytest.raises(aio.AioRpcError) as info:
            await raw(b"\xff\xff\xff garbage", timeout=WAIT)
        assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        slots = channel.unary_stream("/pysyncer.sync.v1.Sync/PullSlots")
        with pytest.raises(aio.AioRpcError) as info:
            [m async for m in slots(pb.SlotsRequest(slots=[20000]).SerializeToString())]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with SyncClient(server.address, dc="west") as wrong:
        with pytest.raises(RequestRejectedError, match="exports data center 'east'"):
            await wrong.get_digests()
        with pytest.raises(RequestRejectedError):
            [b async for b in wrong.watch(0)]
    assert server.stats.errors is not None and server.stats.errors["invalid_argument"] >= 1
    await source.put(CART, "i1")
    assert (await client.health()).revision == 1


async def test_a_malformed_batch_from_a_peer_raises_payload_error_in_the_client() -> None:
    async def watch(request: bytes, context: object) -> AsyncIterator[bytes]:
        yield pb.PeerBatch(dc=DC, revision=1, count=1, records=b"\xc1").SerializeToString()

    rogue = aio.server()
    handler = grpc.method_handlers_generic_handler(
        "pysyncer.sync.v1.Sync", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    )
    rogue.add_generic_rpc_handlers((handler,))
    port = rogue.add_insecure_port("127.0.0.1:0")
    await rogue.start()
    try:
        async with SyncClient(f"127.0.0.1:{port}") as c:
            with pytest.raises(PayloadError, match="not a valid msgpack"):
                [b async for b in c.watch(0)]
    finally:
        await rogue.stop(0)


async def test_unreachable_peer_and_deadline_map_to_pysyncer_errors(source: MemorySource) -> None:
    srv = SyncServer(source, "127.0.0.1", 0)
    await srv.start()
    address = srv.address
    await srv.stop(0)
    async with SyncClient(address, timeout=2) as c:
        with pytest.raises(UnavailableError) as info:
            await c.health()
        assert isinstance(info.value, ConnectionError)

    class Slow(MemorySource):
        async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
            await asyncio.sleep(WAIT)
            return [], False

    srv = SyncServer(Slow(), "127.0.0.1", 0)
    await srv.start()
    try:
        async with SyncClient(srv.address) as c:
            with pytest.raises(DeadlineExceededError) as timeout:
                await c.pull_range(0, timeout=0.2)
            assert isinstance(timeout.value, TimeoutError)
    finally:
        await srv.stop(0)


# -- TLS -----------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = _name(subject) if issuer is None else issuer[0].subject
    signer = key if issuer is None else issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage or ExtendedKeyUsageOID.SERVER_AUTH]), False
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            )
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, server (IP SAN 127.0.0.1), client, and another CA nobody trusts."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _cert("pysyncer test CA", ca_key, None)
    _write(root / "ca", ca, ca_key)
    _write(root / "other-ca", _cert("someone else", other_key, None), other_key)
    for name, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = _key()
        _write(root / name, _cert(f"{name}.pysyncer.test", key, (ca, ca_key), usage=usage), key)
    return root


def _server_tls(pki: Path, *, require_client_cert: bool) -> TlsConfig:
    return TlsConfig(
        ca_file=str(pki / "ca.crt"),
        cert_file=str(pki / "server.crt"),
        key_file=str(pki / "server.key"),
        require_client_cert=require_client_cert,
    )


async def test_mutual_tls_accepts_a_client_with_a_valid_cert(
    pki: Path, source: MemorySource
) -> None:
    await source.put(CART, "i1")
    async with SyncServer(
        source, "127.0.0.1", 0, tls=_server_tls(pki, require_client_cert=True)
    ) as srv:
        tls = TlsConfig(str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key"))
        async with SyncClient(srv.address, tls=tls) as c:
            assert (await c.health()).revision == 1
            assert (await _next(c.watch(0))).records[0].instance_id == "i1"


async def test_tls_rejects_a_client_without_cert_and_a_server_from_another_ca(
    pki: Path, source: MemorySource
) -> None:
    async with SyncServer(
        source, "127.0.0.1", 0, tls=_server_tls(pki, require_client_cert=True)
    ) as srv:
        async with SyncClient(srv.address, tls=TlsConfig(str(pki / "ca.crt")), timeout=3) as c:
            with pytest.raises(UnavailableError):
                await c.health()
        wrong_ca = TlsConfig(
            str(pki / "other-ca.crt"), str(pki / "client.crt"), str(pki / "client.key")
        )
        async with SyncClient(srv.address, tls=wrong_ca, timeout=3) as c:
            with pytest.raises(UnavailableError):
                await c.health()
        async with SyncClient(srv.address, timeout=3) as plain:  # no TLS at all
            with pytest.raises(UnavailableError):
                await plain.health()
    # one-way TLS: a client without a cert is fine when the server does not require one
    async with (
        SyncServer(source, "127.0.0.1", 0, tls=_server_tls(pki, require_client_cert=False)) as srv,
        SyncClient(srv.address, tls=TlsConfig(str(pki / "ca.crt"))) as c,
    ):
        assert (await c.health()).dc == DC
