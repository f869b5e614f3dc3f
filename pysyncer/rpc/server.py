# mypy: disable-error-code="import-untyped"
"""The gRPC server of the ``pysyncer.sync.v1.Sync`` service, on grpc.aio.

Serves one data center's exported records, read through a :class:`SyncSource` (the
exporter implements it); it owns no state of its own beyond counters. It must not touch
the store, the registry or gossip: everything it knows comes from the source.

Bounds: messages past ``codec.MAX_MESSAGE_BYTES`` both ways; at most
:data:`MAX_STREAMS_PER_CONNECTION` calls open on one connection (HTTP/2
``max_concurrent_streams``: a client queues the others) and ``max_open_streams`` +
:data:`UNARY_CALLS` in all; at most :data:`MAX_OPEN_STREAMS` Watch and PullSlots streams
at once, all clients together: one more is refused with ``RESOURCE_EXHAUSTED`` and
counted in
``stats.errors["streams_exhausted"]``. A slot's records are sent as they are read, at
most :data:`SLOT_BATCH` of them held at a time, and a slot past
``codec.MAX_SLOT_RECORDS`` ends the call (``RESOURCE_EXHAUSTED``, ``slot_too_large``).

Streams at the same position send the same bytes: a range of changes is encoded once
and the payload kept (the :data:`ENCODED_KEPT` newest ranges) for every other stream
that reads the same range (every peer data center's stream, woken by the same commit).
A busy source's commits are coalesced per stream (:data:`WATCH_COALESCE`).

Identities: served with :class:`~pysyncer.rpc.tls.TlsFiles` (the daemon's mutual TLS),
every call must come from a client whose verified certificate names a syncer
(:mod:`pysyncer.rpc.identity`), else ``UNAUTHENTICATED`` (counted ``unauthenticated``);
and the server's own certificate must name the data center it serves, else every call
is ``FAILED_PRECONDITION`` (``identity_mismatch``): a certificate of ``dc-x`` never
exports as ``dc-y``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc import aio

from pysyncer._version import __version__
from pysyncer.hostport import SYNC_PORT
from pysyncer.model import Instance, Record
from pysyncer.rpc import codec
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc import sync_pb2_grpc as pb_grpc
from pysyncer.rpc.errors import REFUSAL_METADATA, PayloadError
from pysyncer.rpc.listing import listing_message
from pysyncer.rpc.tls import TlsConfig, TlsFiles, peer_identity, server_credentials

__all__ = ["HEARTBEAT_INTERVAL", "ServerStats", "ServiceInspector", "SyncServer", "SyncSource"]

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000  # records per Watch / PullRange batch when the client does not say
HEARTBEAT_INTERVAL = 5.0  # seconds between the heartbeat batches of an idle Watch stream
# A Watch stream that sent changes less than this long ago waits until this long has
# passed before it sends the next ones, so the commits of a busy source meanwhile go out
# in one message (one decode, one apply and one store transaction at the peer, not one
# each), and a busy stream sleeps on a timer instead of a waiter task per message; a
# change after a quiet spell goes out at once. Added latency: at most this (about half
# of it on average while busy). 10 ms: 20 ms saved ~20 % of the streaming path's CPU
# (bench_stream) but doubled the propagation median at 100 changes/s (7 -> 15 ms, bench_sync
# propagation) and showed no CPU gain in the 8-data-center mesh (docs/rpc.md).
WATCH_COALESCE = 0.01
ENCODED_KEPT = 16  # encoded change ranges kept for the other Watch streams to send as is
MAX_SLOTS_PER_CALL = codec.SLOT_COUNT
SLOT_BATCH = 1000  # records per SlotBatch message
MAX_OPEN_STREAMS = 128  # Watch + PullSlots streams at once: one per following peer, and repairs
MAX_STREAMS_PER_CONNECTION = 16  # calls open at once on one HTTP/2 connection
UNARY_CALLS = 64  # calls at once besides the streams; past both, gRPC refuses the call


class SyncSource(Protocol):
    """What the exporter provides to the RPC server: one data center's exported records.

    ``epoch`` names the change log the revisions belong to; it changes when the log is
    replaced (a data-dir reset), which makes every peer fall back to digests.
    """

    @property
    def dc(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def epoch(self) -> str: ...

    def revision(self) -> int:
        """The latest committed revision."""
        ...

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        """At most ``limit`` changes after ``revision``, by ascending revision.

        The second item is True (and the list empty) when ``revision`` has left the log.
        """
        ...

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        """The current revision once it is past ``after``, or after ``timeout`` seconds."""
        ...

    def digest_table(self) -> tuple[int, bytes]:
        """(revision, SlotDigestTable.to_bytes()) taken consistently."""
        ...

    def slot_records(self, slots: Sequence[int]) -> AsyncIterator[tuple[int, list[Record]]]:
        """The current live records of each of ``slots`` (one or more items per slot)."""
        ...


class ServiceInspector(Protocol):
    """What ``ListService`` reads (the diff view): the local registry and the rules."""

    async def registry_instances(self) -> Sequence[Instance]:
        """Every instance the local registry holds, originals and copies."""
        ...

    def filter_rules(self) -> str:
        """This syncer's direction and filter rules, as JSON."""
        ...


@dataclass
class ServerStats:
    """Counters of a :class:`SyncServer` (exported as metrics by the admin layer)."""

    streams_open: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    heartbeats_sent: int = 0
    resets_sent: int = 0
    encodes_shared: int = 0  # Watch batches sent with another stream's encoded payload
    coalesced_waits: int = 0  # Watch sends held back to take in more changes
    errors: Counter[str] | None = None

    def __post_init__(self) -> None:
        if self.errors is None:
            self.errors = Counter()

    def error(self, kind: str) -> None:
        assert self.errors is not None
        self.errors[kind] += 1


class _CommitWaiters:
    """Watch streams waiting for the source's next commit, all woken by one wait on the
    source: a commit then settles one future per stream, instead of waking a task (and
    its timeout's task) per stream. Owns that one waiting task; the streams' own state
    stays in their calls.
    """

    def __init__(self, source: SyncSource) -> None:
        self.source = source
        self._waiting: dict[asyncio.Future[None], int] = {}  # -> the revision it waits past
        self._follower: asyncio.Task[None] | None = None

    async def wait(self, after: int, timeout: float) -> None:
        """Until the source is past ``after``, ``timeout`` s pass, or :meth:`close`.

        Raises what the source's own wait raised.
        """
        if self.source.revision() > after:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting[waiter] = after
        timer = loop.call_later(timeout, _settle, waiter)
        if self._follower is None or self._follower.done():
            self._follower = loop.create_task(self._follow(), name="sync-rpc-commits")
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiting.pop(waiter, None)

    async def _follow(self) -> None:
        """Wait on the source for as long as streams wait, and settle those it passed."""
        waiting = self._waiting
        try:
            while waiting:
                revision = await self.source.wait_for_revision(
                    min(waiting.values()), HEARTBEAT_INTERVAL
                )
                passed = [waiter for waiter, after in waiting.items() if revision > after]
                for waiter in passed:  # woken: no longer waiting (it comes back if it must)
                    del waiting[waiter]
                    _settle(waiter)
        except Exception as exc:  # each waiting stream ends with it
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(exc)

    @property
    def busy(self) -> bool:
        """Streams are waiting."""
        return bool(self._waiting)

    def close(self) -> None:
        """Wake every waiting stream now and stop waiting on the source."""
        for waiter in self._waiting:
            _settle(waiter)
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Servicer(pb_grpc.SyncServicer):
    def __init__(self, owner: SyncServer) -> None:
        self._owner = owner

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.PeerBatch]:
        await self._owner._authorize(context)
        async for batch in self._owner._watch(request, context):
            yield batch

    async def PullRange(self, request: pb.RangeRequest, context: Any) -> pb.PeerBatch:
        await self._owner._authorize(context)
        return await self._owner._pull_range(request, context)

    async def GetDigests(self, request: pb.DigestRequest, context: Any) -> pb.DigestTable:
        await self._owner._authorize(context)
        return await self._owner._get_digests(request, context)

    async def PullSlots(
        self, request: pb.SlotsRequest, context: Any
    ) -> AsyncIterator[pb.SlotBatch]:
        await self._owner._authorize(context)
        async for batch in self._owner._pull_slots(request, context):
            yield batch

    async def Health(self, request: pb.HealthRequest, context: Any) -> pb.HealthReply:
        await self._owner._authorize(context)
        source = self._owner.source
        return pb.HealthReply(
            dc=source.dc,
            node=source.node,
            revision=source.revision(),
            epoch=source.epoch,
            version=__version__,
            exported=_exported(source),
        )

    async def ListService(self, request: pb.ServiceRequest, context: Any) -> pb.ServiceListing:
        await self._owner._authorize(context)
        return await self._owner._list_service(request, context)


class SyncServer:
    """Serves ``source`` on ``host:port`` (port 0 picks one; see :attr:`port` after start).

    ``tls``: a :class:`TlsConfig` serves TLS with ``cert_file``/``key_file``; with
    ``require_client_cert`` only clients presenting a certificate signed by ``ca_file`` are
    accepted (mutual TLS). :class:`TlsFiles` serves mutual TLS with syncer identities
    checked on every call and certificates re-read when their files change.
    """

    def __init__(
        self,
        source: SyncSource,
        host: str = "0.0.0.0",
        port: int = SYNC_PORT,
        *,
        tls: TlsConfig | TlsFiles | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        coalesce: float = WATCH_COALESCE,
        max_message_bytes: int = codec.MAX_MESSAGE_BYTES,
        max_open_streams: int = MAX_OPEN_STREAMS,
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        self.tls = tls
        self.heartbeat_interval = heartbeat_interval
        self.coalesce = coalesce  # seconds a Watch stream leaves between two sends, at least
        self.max_message_bytes = max_message_bytes
        self.max_open_streams = max_open_streams
        self.stats = ServerStats()
        self.inspector: ServiceInspector | None = None  # ListService: UNIMPLEMENTED without
        self._server: Any = None
        self._stopping = asyncio.Event()
        self._waiters: list[_CommitWaiters] = []  # of the current source first
        # (epoch, since, last revision, count) -> the encoded parts of that range of changes
        self._encoded: dict[tuple[str, int, int, int], list[tuple[Sequence[Record], bytes]]] = {}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address cannot be bound."""
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        server = aio.server(
            options=options, maximum_concurrent_rpcs=self.max_open_streams + UNARY_CALLS
        )
        pb_grpc.add_SyncServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        bind = f"{self.host}:{self.port}"
        try:
            if self.tls is None:
                port = server.add_insecure_port(bind)
            elif isinstance(self.tls, TlsFiles):
                port = server.add_secure_port(bind, self.tls.server_credentials())
            else:
                port = server.add_secure_port(bind, server_credentials(self.tls))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for RPC on {bind}: {exc}") from None
        if port == 0:
            raise OSError(f"cannot listen for RPC on {bind}")
        self.port = port
        self._stopping.clear()
        await server.start()
        self._server = server
        log.info("sync RPC listening on %s (%s)", self.address, "TLS" if self.tls else "plain")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls; open streams end (UNAVAILABLE), others get ``grace`` s."""
        if self._server is None:
            return
        self._stopping.set()
        for waiters in self._waiters:  # the waiting streams see the server stopping
            waiters.close()
        server, self._server = self._server, None
        await server.stop(grace)

    async def __aenter__(self) -> SyncServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------

    async def _abort(self, context: Any, kind: str, code: grpc.StatusCode, message: str) -> None:
        """Count the error by kind and end the call with ``code`` (raises); the kind goes
        to the client as trailing metadata (``errors.REFUSAL_METADATA``)."""
        self.stats.error(kind)
        await context.abort(code, message, trailing_metadata=((REFUSAL_METADATA, kind),))

    async def _authorize(self, context: Any) -> None:
        """With :class:`TlsFiles`: the client names a syncer, and this server's certificate
        names the data center it serves; else the call ends (raises)."""
        if not isinstance(self.tls, TlsFiles):
            return
        found = peer_identity(context)
        if isinstance(found, str):
            await self._abort(
                context,
                "unauthenticated",
                grpc.StatusCode.UNAUTHENTICATED,
                f"the client certificate names no syncer: {found}",
            )
        own = self.tls.current().identity
        if own.dc != self.source.dc:
            await self._abort(
                context,
                "identity_mismatch",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this syncer's certificate names data center {own.dc!r}, "
                f"not {self.source.dc!r}: it exports nothing",
            )

    async def _check_dc(self, context: Any, dc: str) -> None:
        if dc and dc != self.source.dc:
            await self._abort(
                context,
                "wrong_dc",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this syncer exports data center {self.source.dc!r}, not {dc!r}",
            )

    async def _open_stream(self, context: Any, call: str) -> None:
        """Count one more open stream, or refuse it when :attr:`max_open_streams` are open."""
        if self.stats.streams_open >= self.max_open_streams:
            await self._abort(
                context,
                "streams_exhausted",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{call} refused: this syncer already serves {self.stats.streams_open} streams "
                f"(at most {self.max_open_streams}); try again later",
            )
        self.stats.streams_open += 1

    @staticmethod
    def _limit(asked: int) -> int:
        return DEFAULT_BATCH if asked == 0 else min(asked, codec.MAX_BATCH_RECORDS)

    async def _changes(self, context: Any, since: int, limit: int) -> tuple[list[Record], bool]:
        try:
            return await self.source.changes_since(since, limit)
        except Exception as exc:  # the source's failure ends this call, not the server
            log.exception("changes_since(%d) failed", since)
            await self._abort(
                context, "source", grpc.StatusCode.INTERNAL, f"reading the change log failed: {exc}"
            )
            raise  # pragma: no cover - abort raises

    async def _encode(
        self, context: Any, records: Sequence[Record], *, tombstones: bool = True
    ) -> list[tuple[Sequence[Record], bytes]]:
        try:
            return codec.encode_parts(self.source.dc, records, tombstones=tombstones)
        except PayloadError as exc:
            log.error("cannot send records: %s", exc)
            await self._abort(
                context, "payload", grpc.StatusCode.INTERNAL, f"cannot encode records: {exc}"
            )
            raise  # pragma: no cover - abort raises

    async def _encode_range(
        self, context: Any, epoch: str, since: int, records: Sequence[Record]
    ) -> list[tuple[Sequence[Record], bytes]]:
        """:meth:`_encode` of the changes after ``since`` in ``epoch``, encoded once for
        every stream: a revision of an epoch never changes, so the range is its key."""
        key = (epoch, since, records[-1].revision, len(records))
        parts = self._encoded.get(key)
        if parts is None:
            parts = await self._encode(context, records)
            encoded = self._encoded
            if len(encoded) >= ENCODED_KEPT:
                del encoded[next(iter(encoded))]  # the oldest
            encoded[key] = parts
        else:
            self.stats.encodes_shared += 1
        return parts

    async def _watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.PeerBatch]:
        source = self.source
        await self._check_dc(context, request.dc)
        limit = self._limit(request.max_batch)
        last = request.since_revision
        dc, epoch = source.dc, source.epoch
        loop = asyncio.get_running_loop()
        waiters = self._commit_waiters(source)
        await self._open_stream(context, "Watch")
        try:
            if last and request.epoch != epoch:  # another change log: revisions mean nothing
                self.stats.resets_sent += 1
                yield codec.peer_batch(dc, epoch, source.revision(), reset=True)
                return
            idle_since = loop.time()
            sent_at = float("-inf")  # nothing sent yet: the first changes go at once
            catching_up = False  # the last send was a full batch: more wait in the log
            while not self._stopping.is_set():
                early = sent_at + self.coalesce - loop.time()
                if early > 0 and not catching_up:  # sent a moment ago: what is committed
                    await asyncio.sleep(early)  # meanwhile goes together (a timer, no task)
                    if source.revision() > last:
                        self.stats.coalesced_waits += 1
                current = source.revision()  # read before the changes: they reach at least it
                records, reset = await self._changes(context, last, limit)
                if reset:
                    self.stats.resets_sent += 1
                    yield codec.peer_batch(dc, epoch, current, reset=True)
                    return
                if records:
                    top = max(rec.revision for rec in records)
                    upto = top if len(records) >= limit else max(top, current)
                    parts = await self._encode_range(context, epoch, last, records)
                    for i, (part, payload) in enumerate(parts):
                        rev = upto if i == len(parts) - 1 else max(r.revision for r in part)
                        self.stats.batches_sent += 1
                        self.stats.records_sent += len(part)
                        committed = _commit_time(source, max(r.revision for r in part))
                        yield codec.peer_batch(
                            dc, epoch, rev, part, payload=payload, committed_at=committed
                        )
                    last = upto
                    catching_up = len(records) >= limit
                    idle_since = sent_at = loop.time()
                    continue
                last = max(last, current)
                idle = loop.time() - idle_since
                if idle >= self.heartbeat_interval:
                    self.stats.heartbeats_sent += 1
                    yield codec.peer_batch(dc, epoch, last, heartbeat=True)
                    idle_since = loop.time()
                    continue
                try:
                    await waiters.wait(last, self.heartbeat_interval - idle)
                except Exception as exc:  # the source's failure ends this call
                    await self._abort(
                        context,
                        "source",
                        grpc.StatusCode.INTERNAL,
                        f"waiting for changes failed: {exc}",
                    )
            await self._abort(
                context, "stopping", grpc.StatusCode.UNAVAILABLE, "the syncer is stopping"
            )
        finally:
            self.stats.streams_open -= 1

    def _commit_waiters(self, source: SyncSource) -> _CommitWaiters:
        """The waiters on ``source``'s commits (a daemon replaces the source it serves
        once its exporter runs: streams opened before keep theirs)."""
        kept = self._waiters
        if not kept or kept[0].source is not source:
            kept = [_CommitWaiters(source)] + [w for w in kept if w.busy]
            self._waiters = kept
        return kept[0]

    async def _pull_range(self, request: pb.RangeRequest, context: Any) -> pb.PeerBatch:
        source = self.source
        dc, epoch = source.dc, source.epoch
        current = source.revision()
        since = request.since
        if request.until and request.until < since:
            await self._abort(
                context,
                "invalid_argument",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"until {request.until} is before since {since}",
            )
        until = min(request.until or current, current)
        if since and request.epoch and request.epoch != epoch:
            self.stats.resets_sent += 1
            return codec.peer_batch(dc, epoch, current, reset=True)
        limit = self._limit(request.limit)
        records, reset = await self._changes(context, since, limit)
        if reset:
            self.stats.resets_sent += 1
            return codec.peer_batch(dc, epoch, current, reset=True)
        inside = [rec for rec in records if rec.revision <= until]
        more = len(records) >= limit and len(inside) == len(records)
        upto = max(rec.revision for rec in inside) if more else max(until, since)
        parts = await self._encode(context, inside) if inside else [((), b"")]
        part, payload = parts[0]
        if len(parts) > 1:  # too big for one message: the first part, and ask for more
            upto, more = max(rec.revision for rec in part), True
        self.stats.batches_sent += 1
        self.stats.records_sent += len(part)
        return codec.peer_batch(dc, epoch, upto, part, payload=payload, more=more)

    async def _get_digests(self, request: pb.DigestRequest, context: Any) -> pb.DigestTable:
        await self._check_dc(context, request.dc)
        revision, table = self.source.digest_table()
        if len(table) != codec.TABLE_BYTES:
            await self._abort(
                context,
                "source",
                grpc.StatusCode.INTERNAL,
                f"the digest table is {len(table)} bytes, not {codec.TABLE_BYTES}",
            )
        return pb.DigestTable(
            dc=self.source.dc, revision=revision, epoch=self.source.epoch, table=bytes(table)
        )

    async def _list_service(self, request: pb.ServiceRequest, context: Any) -> pb.ServiceListing:
        inspector = self.inspector
        if inspector is None:
            await self._abort(
                context, "unimplemented", grpc.StatusCode.UNIMPLEMENTED, "no registry to list"
            )
            raise AssertionError  # pragma: no cover - abort raises
        try:
            instances = await inspector.registry_instances()
        except Exception as exc:  # the registry's failure ends this call, not the server
            await self._abort(
                context, "registry", grpc.StatusCode.UNAVAILABLE, f"listing the registry: {exc}"
            )
            raise  # pragma: no cover - abort raises
        source = self.source
        return listing_message(
            source.dc, source.node, instances, request.name, request.limit,
            inspector.filter_rules(),
        )  # fmt: skip

    async def _pull_slots(
        self, request: pb.SlotsRequest, context: Any
    ) -> AsyncIterator[pb.SlotBatch]:
        asked = list(request.slots)
        if len(asked) > MAX_SLOTS_PER_CALL or any(s >= codec.SLOT_COUNT for s in asked):
            await self._abort(
                context,
                "invalid_argument",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"slots must be at most {MAX_SLOTS_PER_CALL} values in 0..{codec.SLOT_COUNT - 1}",
            )
        slots = list(dict.fromkeys(asked))
        wanted = set(slots)
        await self._open_stream(context, "PullSlots")
        try:
            # a slot's items come together; its records go out SLOT_BATCH at a time as they
            # are read, the slot's last message (last=True) once the next slot starts; every
            # asked slot is sent, empty ones too: the client learns the full current state
            current: int | None = None
            held: list[Record] = []
            count = 0
            iterator = self.source.slot_records(slots)
            while True:
                try:
                    slot, records = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    log.exception("slot_records failed")
                    await self._abort(
                        context, "source", grpc.StatusCode.INTERNAL, f"reading slots failed: {exc}"
                    )
                    raise  # pragma: no cover - abort raises
                if slot != current:
                    if slot not in wanted:
                        await self._abort(
                            context,
                            "source",
                            grpc.StatusCode.INTERNAL,
                            f"the source gave slot {slot} twice or unasked",
                        )
                    if current is not None:
                        async for msg in self._slot_messages(context, current, held, last=True):
                            yield msg
                    wanted.discard(slot)
                    current, held, count = slot, [], 0
                count += len(records)
                if count > codec.MAX_SLOT_RECORDS:
                    await self._abort(
                        context,
                        "slot_too_large",
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"slot {slot} holds more than {codec.MAX_SLOT_RECORDS} records",
                    )
                held.extend(records)
                while len(held) > SLOT_BATCH:  # the slot goes on: send what is full
                    chunk, held = held[:SLOT_BATCH], held[SLOT_BATCH:]
                    async for msg in self._slot_messages(context, slot, chunk, last=False):
                        yield msg
            if current is not None:
                async for msg in self._slot_messages(context, current, held, last=True):
                    yield msg
            for slot in slots:
                if slot in wanted:
                    async for msg in self._slot_messages(context, slot, [], last=True):
                        yield msg
        finally:
            self.stats.streams_open -= 1

    async def _slot_messages(
        self, context: Any, slot: int, records: list[Record], *, last: bool
    ) -> AsyncIterator[pb.SlotBatch]:
        """Messages of ``records`` of ``slot``; with ``last`` the final one ends the slot."""
        dc = self.source.dc
        parts: list[tuple[Sequence[Record], bytes]] = []
        for i in range(0, len(records), SLOT_BATCH):
            parts.extend(await self._encode(context, records[i : i + SLOT_BATCH], tombstones=False))
        if not parts:
            parts = [((), b"")]
        for i, (part, payload) in enumerate(parts):
            final = last and i == len(parts) - 1
            try:
                msg = codec.slot_batch(dc, slot, part, last=final, payload=payload)
            except PayloadError as exc:
                await self._abort(
                    context, "payload", grpc.StatusCode.INTERNAL, f"cannot send slot {slot}: {exc}"
                )
                raise  # pragma: no cover - abort raises
            self.stats.batches_sent += 1
            self.stats.records_sent += len(part)
            yield msg


def _exported(source: object) -> int:
    """How many instances the source exports (0 when it does not say)."""
    count = getattr(source, "exported_count", None)
    return int(count()) if callable(count) else 0


def _commit_time(source: object, revision: int) -> float:
    """When the source committed ``revision`` (0.0 when it does not keep the time)."""
    commit_time = getattr(source, "commit_time", None)
    return float(commit_time(revision)) if callable(commit_time) else 0.0
