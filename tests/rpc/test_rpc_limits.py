# mypy: disable-error-code="import-untyped"
"""The sync RPC's bounds against a hostile client or peer, on real grpc.aio servers.

Issue 11: 1,000 Watch streams from one anonymous client grew a daemon from 74 to 195 MB.
Here a server process gets 1,000 Watch calls from one client: the first
``MAX_OPEN_STREAMS`` are served, every other one is refused with RESOURCE_EXHAUSTED, and
the server's RSS is printed (run with ``-s``) and bounded. One connection gets at most
``MAX_STREAMS_PER_CONNECTION`` calls at once; a PullSlots answer holds at most
``codec.MAX_SLOT_RECORDS`` records of one slot, on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.procs import DaemonProcess, eventually
from pysyncer.rpc import SyncClient, SyncServer, codec
from pysyncer.rpc import server as rpc_server
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc import sync_pb2_grpc as pb_grpc
from pysyncer.rpc.errors import (
    CallRefusedError,
    OversizedPayloadError,
    PayloadError,
    from_status,
)
from pysyncer.sync.exporter import ExporterStats
from pysyncer.sync.status import exporter_status
from tests.support.gossip import wait_for

DC = "east"
SERVICE = ServiceKey("shop", "cart", "1.0.0", "production")
OTHER = ServiceKey("shop", "pay", "2.0.0", "production")
WAIT = 20.0
MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
ATTEMPTS = 1000


def _records(service: ServiceKey, count: int, start: int = 0) -> list[Record]:
    return [
        Record(DC, service, f"i{n}", n + 1, Instance(service, f"i{n}", f"h{n}", ("rest://h:1",)))
        for n in range(start, start + count)
    ]


class IdleSource:
    """A data center with no changes and ``slots`` holding the given records."""

    def __init__(self, slots: dict[int, list[Record]] | None = None) -> None:
        self.slots = slots or {}

    dc, node, epoch = DC, "n1", "e1"

    def revision(self) -> int:
        return 0

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        return [], False

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        await asyncio.sleep(timeout)
        return 0

    def digest_table(self) -> tuple[int, bytes]:
        return 0, bytes(codec.TABLE_BYTES)

    async def slot_records(self, slots: Sequence[int]) -> AsyncIterator[tuple[int, list[Record]]]:
        for slot in slots:
            if slot in self.slots:
                yield slot, self.slots[slot]


_SERVER_PROCESS = """
import asyncio, sys
from tests.rpc.test_rpc_limits import IdleSource
from pysyncer.rpc import SyncServer

async def main():
    server = SyncServer(IdleSource(), "127.0.0.1", 0, heartbeat_interval=600.0)
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)

asyncio.run(main())
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


async def _thousand_watches(target: str, pid: int, dc: str) -> tuple[int, int]:
    """1,000 Watch calls on ``target``; the server's RSS (bytes) idle and with them all.

    Checks that exactly ``MAX_OPEN_STREAMS`` are served, the rest refused with
    RESOURCE_EXHAUSTED, that unary calls still work, and that the places free up.
    """
    limit = rpc_server.MAX_OPEN_STREAMS
    per_channel = rpc_server.MAX_STREAMS_PER_CONNECTION
    channels: list[Any] = []
    calls: list[Any] = []
    refused: list[grpc.StatusCode] = []
    details: list[str] = []

    async def watch(stub: Any) -> None:
        call = stub.Watch(pb.WatchRequest(dc=dc))
        calls.append(call)
        try:
            async for _ in call:
                pass
        except aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                refused.append(exc.code())
                details.append(exc.details() or "")

    try:
        await asyncio.sleep(0.5)
        rss_idle = _rss(pid)
        tasks = []
        for n in range(ATTEMPTS):
            if n % per_channel == 0:
                # a connection of its own each (channels share one by default)
                options = [("grpc.use_local_subchannel_pool", 1)]
                channels.append(aio.insecure_channel(target, options=options))
            stub = pb_grpc.SyncStub(channels[-1])  # type: ignore[no-untyped-call]
            tasks.append(asyncio.ensure_future(watch(stub)))
        await wait_for(lambda: len(refused) >= ATTEMPTS - limit, WAIT, "the refusals")
        await asyncio.sleep(1.0)  # nothing more is refused: the others are served
        rss_full = _rss(pid)
        assert len(refused) == ATTEMPTS - limit
        assert set(refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert f"at most {limit}" in details[0]
        assert sum(not t.done() for t in tasks) == limit
        async with SyncClient(target) as client:  # still serving unary calls
            assert (await client.health()).dc == dc
        for call in calls:
            call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with SyncClient(target) as client:  # the streams' places are free again
            deadline = asyncio.get_running_loop().time() + WAIT
            while True:
                stream = client.watch()
                waiting = asyncio.ensure_future(anext(stream))
                await asyncio.sleep(0.5)
                if not waiting.done() or asyncio.get_running_loop().time() > deadline:
                    break
                # the server ends a cancelled stream a moment after its client: refused
                # until then (any other error is raised here)
                with contextlib.suppress(CallRefusedError):
                    await waiting
                await stream.aclose()  # type: ignore[attr-defined]
            assert not waiting.done()  # served (idle), not refused
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator
    finally:
        for channel in channels:
            await channel.close()
    return rss_idle, rss_full


def _report(what: str, rss_idle: int, rss_full: int) -> None:
    limit = rpc_server.MAX_OPEN_STREAMS
    print(
        f"\n{what} RSS {rss_idle / MIB:.1f} MiB idle, {rss_full / MIB:.1f} MiB with "
        f"{limit} open Watch streams and {ATTEMPTS - limit} refused "
        f"(+{(rss_full - rss_idle) / MIB:.1f} MiB)"
    )


async def test_a_thousand_watch_streams_from_one_client_are_refused_past_the_limit() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_PROCESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT))
        rss_idle, rss_full = await _thousand_watches(f"127.0.0.1:{port}", proc.pid, DC)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    _report("server", rss_idle, rss_full)
    assert rss_full - rss_idle < 48 * MIB


@pytest.mark.e2e
async def test_a_daemon_refuses_a_thousand_watch_streams_past_the_limit(tmp_path: Path) -> None:
    daemon = DaemonProcess("watched", "127.0.0.1", tmp_path, "dc-w")
    try:
        eventually(daemon.ready, 60, "daemon up", daemon)  # nothing else runs on the loop yet
        rss_idle, rss_full = await _thousand_watches(daemon.rpc, daemon.process.pid, "dc-w")
    finally:
        daemon.stop()
    _report("daemon", rss_idle, rss_full)
    assert rss_full - rss_idle < 64 * MIB


@pytest.fixture
async def server() -> AsyncIterator[SyncServer]:
    slots = {SERVICE.slot: _records(SERVICE, 2500)}
    async with SyncServer(IdleSource(slots), "127.0.0.1", 0, heartbeat_interval=600.0) as srv:
        yield srv


async def test_one_connection_gets_a_bounded_number_of_calls_at_once(server: SyncServer) -> None:
    per_channel = rpc_server.MAX_STREAMS_PER_CONNECTION
    async with aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        calls = [stub.Watch(pb.WatchRequest(dc=DC)) for _ in range(per_channel * 3)]
        reads = [asyncio.ensure_future(call.read()) for call in calls]
        await wait_for(lambda: server.stats.streams_open == per_channel, WAIT, "streams open")
        await asyncio.sleep(0.5)
        assert server.stats.streams_open == per_channel  # the others wait in the client
        for call in calls:
            call.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    assert server.stats.errors is not None and not server.stats.errors["streams_exhausted"]


async def test_a_large_slot_is_sent_in_bounded_batches(server: SyncServer) -> None:
    async with aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        got = [m async for m in stub.PullSlots(pb.SlotsRequest(slots=[SERVICE.slot]))]
    assert [(m.count, m.last) for m in got] == [(1000, False), (1000, False), (500, True)]


async def test_a_slot_past_the_cap_is_refused_by_the_server(
    server: SyncServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "MAX_SLOT_RECORDS", 2000)
    async with aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(aio.AioRpcError) as info:
            [m async for m in stub.PullSlots(pb.SlotsRequest(slots=[SERVICE.slot]))]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.stats.errors is not None and server.stats.errors["slot_too_large"] == 1
    # the handler's own end runs after the client has the status: not at once
    await wait_for(lambda: server.stats.streams_open == 0, WAIT, "the refused stream closed")
    # counted where /metrics reads it: pysyncer_sync_errors{part="exporter"}
    assert exporter_status(ExporterStats(), server.stats)["errors"]["rpc_slot_too_large"] == 1


async def test_a_refused_stream_is_a_call_refused_error_and_a_large_slot_an_oversized_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slots = {SERVICE.slot: _records(SERVICE, 2500)}
    async with (
        SyncServer(IdleSource(slots), "127.0.0.1", 0, max_open_streams=1) as srv,
        SyncClient(srv.address, dc=DC) as first,
        SyncClient(srv.address, dc=DC) as second,
    ):
        served = first.watch()
        waiting = asyncio.ensure_future(anext(served))
        await wait_for(lambda: srv.stats.streams_open == 1, WAIT, "the first stream")
        with pytest.raises(CallRefusedError, match="at most 1") as refused:
            await anext(second.watch())
        assert isinstance(refused.value, ConnectionRefusedError)
        assert not isinstance(refused.value, PayloadError)  # the same call works later
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await served.aclose()  # type: ignore[attr-defined]  # an async generator
        await wait_for(lambda: srv.stats.streams_open == 0, WAIT, "the place freed")
        monkeypatch.setattr(codec, "MAX_SLOT_RECORDS", 2000)
        with pytest.raises(OversizedPayloadError):  # the server's size refusal
            async for _ in second.pull_slots([SERVICE.slot], timeout=WAIT):
                pass


@pytest.mark.parametrize(
    ("details", "refusal", "expected"),
    [
        ("Received message larger than max (9 vs. 4)", "", OversizedPayloadError),
        ("Sent message larger than max (9 vs. 4)", "", OversizedPayloadError),
        ("slot 3 holds more than 10 records", "slot_too_large", OversizedPayloadError),
        ("Concurrent RPC limit exceeded!", "", CallRefusedError),  # gRPC's call limit
        ("Watch refused: ...", "streams_exhausted", CallRefusedError),
    ],
)
def test_resource_exhausted_is_told_apart_by_what_it_is_about(
    details: str, refusal: str, expected: type[Exception]
) -> None:
    error = from_status("RESOURCE_EXHAUSTED", details, "127.0.0.1:1", refusal)
    assert type(error) is expected


class _HostilePeer(pb_grpc.SyncServicer):
    """Answers PullSlots with ``script``: (slot, records, last) messages, then more forever."""

    def __init__(self, script: list[tuple[ServiceKey, int, bool]], endless: bool) -> None:
        self.script = script
        self.endless = endless
        self.sent = 0

    async def PullSlots(self, request: Any, context: Any) -> AsyncIterator[pb.SlotBatch]:
        start = 0
        for service, count, last in self.script:
            records = _records(service, count, start)
            start += count
            self.sent += count
            yield codec.slot_batch(DC, service.slot, records, last=last)
        while self.endless:
            records = _records(SERVICE, 1000, start)
            start += 1000
            self.sent += 1000
            yield codec.slot_batch(DC, SERVICE.slot, records, last=False)


async def _pull_from(peer: _HostilePeer, slots: list[int]) -> list[int]:
    server = aio.server()
    pb_grpc.add_SyncServicer_to_server(peer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received: list[int] = []
    try:
        async with SyncClient(f"127.0.0.1:{port}", dc=DC) as client:
            async for item in client.pull_slots(slots, timeout=WAIT):
                received.append(len(item.records))
    finally:
        await server.stop(0)
    return received


async def test_a_peer_streaming_one_slot_forever_is_cut_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "MAX_SLOT_RECORDS", 5000)
    received: list[int] = []
    peer = _HostilePeer([], endless=True)
    with pytest.raises(OversizedPayloadError, match="more than 5000 records"):
        received = await _pull_from(peer, [SERVICE.slot])
    assert sum(received) <= 5000


async def test_a_peer_interleaving_or_repeating_slots_is_refused() -> None:
    interleaved = _HostilePeer([(SERVICE, 3, False), (OTHER, 3, True)], endless=False)
    with pytest.raises(PayloadError, match="before slot"):
        await _pull_from(interleaved, [SERVICE.slot, OTHER.slot])
    repeated = _HostilePeer([(SERVICE, 3, True), (SERVICE, 3, True)], endless=False)
    with pytest.raises(PayloadError, match="again"):
        await _pull_from(repeated, [SERVICE.slot])
    honest = _HostilePeer([(SERVICE, 3, False), (SERVICE, 2, True)], endless=False)
    assert await _pull_from(honest, [SERVICE.slot]) == [3, 2]
