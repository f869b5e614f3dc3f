"""What a Watch costs per commit and per message: one wait on the source for all streams,
and service keys decoded once per client (a real grpc.aio server on loopback)."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from pysyncer.model import Record
from pysyncer.rpc import PayloadError, SyncClient, SyncServer, codec
from pysyncer.rpc.errors import RemoteError
from tests.rpc.test_rpc import CART, DC, PAY, WAIT, MemorySource
from tests.support.gossip import wait_for


class CountingSource(MemorySource):
    """A source that counts its waits and can be told to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.failing: Exception | None = None

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        self.waits += 1
        if self.failing is not None:
            raise self.failing
        return await super().wait_for_revision(after, timeout)


async def _records(stream: object, count: int) -> list[Record]:
    received: list[Record] = []
    while len(received) < count:
        batch = await asyncio.wait_for(anext(stream), WAIT)  # type: ignore[call-overload]
        received.extend(batch.records)
    return received


async def test_one_wait_on_the_source_wakes_every_waiting_stream() -> None:
    source = CountingSource()
    streams = 6
    async with SyncServer(source, "127.0.0.1", 0, heartbeat_interval=30, coalesce=0) as server:
        clients = [SyncClient(server.address, dc=DC) for _ in range(streams)]
        watches = [client.watch(0) for client in clients]
        pending = [asyncio.ensure_future(anext(w)) for w in watches]
        await wait_for(  # every stream waits at revision 0, and the source's wait has begun
            lambda: server.stats.streams_open == streams and source.waits >= 1,
            WAIT,
            "every stream waiting",
        )
        await asyncio.sleep(0.1)  # the streams that opened last reach the shared wait
        before = source.waits
        for n in range(3):
            change = await source.put(CART, f"i{n}")
            if n == 0:
                batches = await asyncio.wait_for(asyncio.gather(*pending), WAIT)
                assert all(b.records == (change,) for b in batches)
            else:
                for watch in watches:
                    assert await _records(watch, 1) == [change]
            await asyncio.sleep(0.05)  # every stream waits again
        # each commit ended the one wait on the source, not one per stream
        assert source.waits - before <= 3, source.waits - before
        for watch, client in zip(watches, clients, strict=True):
            await watch.aclose()  # type: ignore[attr-defined]
            await client.close()


async def test_a_failing_wait_ends_every_waiting_stream_as_the_source_s_failure() -> None:
    source = CountingSource()
    async with (
        SyncServer(source, "127.0.0.1", 0, heartbeat_interval=30) as server,
        SyncClient(server.address, dc=DC) as one,
        SyncClient(server.address, dc=DC) as two,
    ):
        source.failing = RuntimeError("the change log is gone")
        waits = [asyncio.ensure_future(anext(c.watch(0))) for c in (one, two)]
        for wait in waits:
            with pytest.raises(RemoteError, match="waiting for changes failed"):
                await asyncio.wait_for(wait, WAIT)
        assert server.stats.errors is not None and server.stats.errors["source"] == 2
        # each handler's own end runs after its client has the status: not at once
        await wait_for(lambda: server.stats.streams_open == 0, WAIT, "both streams closed")
        source.failing = None  # the next streams wait again
        stream = one.watch(0)
        await asyncio.sleep(0.1)
        change = await source.put(PAY, "p0")
        assert await _records(stream, 1) == [change]
        await stream.aclose()  # type: ignore[attr-defined]


async def test_streams_wait_on_the_source_served_when_they_opened() -> None:
    starting, exporting = CountingSource(), MemorySource()
    async with SyncServer(starting, "127.0.0.1", 0, heartbeat_interval=30) as server:
        server.source = exporting  # as a daemon does once its exporter runs
        async with SyncClient(server.address, dc=DC) as client:
            stream = client.watch(0)
            waiting = asyncio.ensure_future(_records(stream, 1))
            await asyncio.sleep(0.1)
            change = await exporting.put(CART, "i0")
            assert await asyncio.wait_for(waiting, WAIT) == [change]
            assert starting.waits == 0
            await stream.aclose()  # type: ignore[attr-defined]


def test_a_decoder_reuses_the_service_keys_it_checked_and_keeps_a_bounded_number() -> None:
    records = [
        Record(DC, CART, "c1", 1, None),
        Record(DC, PAY, "p1", 2, None),
        Record(DC, CART, "c2", 3, None),
    ]
    payload = codec.encode_records(DC, records)
    known: codec.ServiceKeys = {}
    first = codec.decode_records(DC, payload, 3, known=known)
    second = codec.decode_records(DC, payload, 3, known=known)
    assert first == second == records
    assert first[0].service is second[0].service is second[2].service
    assert len(known) == 2
    fresh = codec.decode_records(DC, payload, 3)
    assert fresh[0].service == first[0].service and fresh[0].service is not first[0].service
    known.clear()
    for n in range(codec.SERVICES_KEPT):  # as if a peer had named ever new services
        known[(str(n),)] = CART
    assert codec.decode_records(DC, payload, 3, known=known) == records
    assert len(known) == 2  # full: forgotten, then the batch's own services kept


def test_a_decoder_s_keys_tell_services_apart_and_never_keep_a_malformed_one() -> None:
    known: codec.ServiceKeys = {}
    raw = codec.encode_records(DC, [Record(DC, CART, "c1", 1, None)])
    other = raw.replace(b"production", b"productioN")  # another service, same length
    assert codec.decode_records(DC, raw, 1, known=known)[0].service == CART
    assert codec.decode_records(DC, other, 1, known=known)[0].service.environment == "productioN"
    bad = ([{"a": "b"}, "e", "a", "n", "v"], ["p", "e", "a", "n"], ["p", 1, "a", "n", "v"])
    for service in bad:
        payload = msgpack.packb(([service], [(0, "i", 1, None)]), use_bin_type=True)
        for _ in range(2):  # refused again: nothing of it was kept
            with pytest.raises(PayloadError, match="service"):
                codec.decode_records(DC, payload, 1, known=known)
    assert len(known) == 2


async def test_a_client_decodes_each_service_of_its_peer_once(source: MemorySource) -> None:
    async with (
        SyncServer(source, "127.0.0.1", 0, coalesce=0) as server,
        SyncClient(server.address, dc=DC) as client,
    ):
        stream = client.watch(0)
        await source.put(CART, "i0")
        first = await _records(stream, 1)
        await source.put(CART, "i1")
        second = await _records(stream, 1)
        assert first[0].service == second[0].service == CART
        assert first[0].service is second[0].service  # one key object: decoded once
        await stream.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()
