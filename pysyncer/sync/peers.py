"""Peer links: keeping this data center in sync with one remote data center each.

Owns the pull side of the sync protocol for one remote data center. A :class:`PeerLink`
keeps one gRPC watch stream open to one of that data center's live syncers, resumes from
the persisted cursor, and falls back to slot-digest repair when the origin's log no longer
holds that cursor (or its epoch changed). A link reconnects with backoff to another live
syncer of the same data center; a "new revision" gossip event wakes a link that is waiting
to retry. Periodic anti-entropy compares digest tables and pulls only the slots that
differ (while the stream runs, only those that stay still at the origin:
:meth:`PeerLink.repair`). Also owns what a link reports (:class:`PeerStatus`,
:class:`SyncProgress`) and how a remote syncer is described (:class:`RemoteSyncer`, from
gossip tags).

Which links exist, and what happens to a data center's copies when it leaves gossip or
comes back, is :class:`~pysyncer.sync.peerset.Peers`'s job; this module must not import
it, the engine, the configuration or the Serf class. A link is given the syncers it may
follow (the :class:`~pysyncer.sync.trust.TrustBook` rule, applied by its caller) and a
client factory, which is given the syncer dialled, so a TLS client can ask the handshake
for that syncer's identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pysyncer._core import digest as core_digest
from pysyncer.admin.payloads import LinkState
from pysyncer.aiowait import wait_event
from pysyncer.errors import PysyncerError
from pysyncer.rpc.errors import CallRefusedError, DeadlineExceededError
from pysyncer.rpc.server import HEARTBEAT_INTERVAL
from pysyncer.store.base import Store
from pysyncer.supervisor import Supervised, spawn
from pysyncer.sync.importer import Importer

__all__ = [
    "LAG_BUCKETS",
    "PeerLink",
    "PeerStatus",
    "RemoteSyncer",
    "SyncClientLike",
    "SyncProgress",
]

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.2
REPAIR_BATCH = 2000  # records (plus one per slot) reconciled per store transaction
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
BACKOFF_MAX = 10.0
# A peer that refused the call (CallRefusedError: it serves as many streams as it allows)
# is asked again after at least this long, with jitter, whatever gossip says meanwhile.
REFUSED_BACKOFF = 5.0
READ_AHEAD = 64  # watch batches received ahead of the importer (the stream's own buffer)
# A periodic anti-entropy round while the stream runs looks twice, this long apart, and
# pulls only the slots that differ both times with the origin's digest unchanged between:
# the others are changes on their way down the stream (see PeerLink.repair).
SETTLE_LOOK = 2.0
# An idle watch stream carries a heartbeat every HEARTBEAT_INTERVAL: silence for longer
# means its connection is stalled (a partition; after the heal TCP's retransmission backoff
# would hold it for seconds more, then the kernel's user timeout ends it): dial afresh.
STREAM_SILENCE_MAX = 1.5 * HEARTBEAT_INTERVAL
APPLY_MAX_RECORDS = 5000  # queued watch batches merged into one importer call, at most
_END = object()  # the watch stream ended
_ASKED = object()  # a repair was asked for: look at what is due (not a batch)


@dataclass(frozen=True, slots=True)
class RemoteSyncer:
    """A live syncer of another data center, as gossip describes it."""

    node: str
    dc: str
    rpc_target: str  # host:port for gRPC
    group: str = ""  # its ownership group (gossip tag ``group``)


class SyncClientLike(Protocol):
    """What a link needs of :class:`pysyncer.rpc.client.SyncClient`."""

    async def health(self) -> Any: ...

    def watch(self, since: int, epoch: str) -> Any: ...

    async def get_digests(self) -> Any: ...

    def pull_slots(self, slots: Sequence[int]) -> Any: ...

    async def close(self) -> None: ...


ClientFactory = Callable[[RemoteSyncer], SyncClientLike]


@dataclass
class SyncProgress:
    """The current (or last) digest repair of a link: ``initial`` (the first sync from a
    data center) or ``repair``; slots and records pulled of their totals."""

    kind: str = ""  # "initial", "repair"; "" before the first
    running: bool = False
    slots_total: int = 0  # slots whose digests differ
    slots_done: int = 0
    records_total: int = 0  # initial: what the origin exports; a repair: 0 (not known)
    records_done: int = 0
    started_at: float = 0.0  # Unix time
    finished_at: float = 0.0

    def begin(self, kind: str, slots: int, records: int) -> None:
        self.kind, self.running = kind, True
        self.slots_total, self.slots_done = slots, 0
        self.records_total, self.records_done = records, 0
        self.started_at, self.finished_at = time.time(), 0.0

    def end(self) -> None:
        self.running = False
        self.finished_at = time.time()


@dataclass
class PeerStatus:
    dc: str
    state: LinkState = "connecting"  # the admin contract's link states
    syncer: str = ""
    applied_revision: int = 0
    remote_revision: int = 0
    last_applied_at: float = 0.0
    repairs: int = 0
    slots_pulled: int = 0
    slots_settling: int = 0  # slots a streaming round left to the stream (moving at the origin)
    errors: dict[str, int] = field(default_factory=dict)
    # Propagation lag (origin commit -> applied here), as cumulative histogram buckets.
    lag_buckets: list[int] = field(default_factory=lambda: [0] * len(LAG_BUCKETS))
    lag_sum: float = 0.0
    lag_count: int = 0
    progress: SyncProgress = field(default_factory=SyncProgress)

    @property
    def lag(self) -> int:
        return max(0, self.remote_revision - self.applied_revision)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class PeerLink:
    """Keeps this data center in sync with one remote data center."""

    def __init__(
        self,
        dc: str,
        syncers: Callable[[], list[RemoteSyncer]],
        importer: Importer,
        store: Store,
        client_factory: ClientFactory,
        *,
        anti_entropy_interval: float,
        rng: random.Random | None = None,
        on_followed: Callable[[RemoteSyncer], None] | None = None,
    ) -> None:
        self.dc = dc
        self._on_followed = on_followed
        self.status = PeerStatus(dc)
        self._syncers = syncers
        self._importer = importer
        self._store = store
        self._client_factory = client_factory
        self._anti_entropy_interval = anti_entropy_interval
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._repair_now = asyncio.Event()
        self._task: Supervised | None = None
        self.synced = False  # the first sync from this data center (resume or repair) is done
        self._heard_at = 0.0  # when the watch stream last delivered a batch (monotonic)
        self._stream: asyncio.Queue[Any] | None = None  # the running watch's batches
        self._remote_exported = 0  # what the followed syncer exports (its Health answer)
        # A periodic round's first look: the differing slots and the origin's digest of
        # each then (empty between rounds); the slots left moving by the last round.
        self._first_look: dict[int, int] = {}
        self._unsettled: set[int] = set()

    def start(self) -> None:
        self._task = spawn(f"peer-{self.dc}", self._run)

    async def close(self) -> None:
        if self._task is not None:
            await self._task.stop()

    def wake(self) -> None:
        """A sign of life from the remote data center: stop waiting to reconnect."""
        self._wake.set()

    def request_repair(self) -> None:
        """Run a digest repair as soon as possible (manual full resync, lost copies)."""
        self._repair_now.set()
        self._wake.set()
        stream = self._stream
        if stream is not None and not stream.full():  # a full one is read on anyway
            stream.put_nowait(_ASKED)

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        last: str | None = None
        while True:
            candidates = self._syncers()
            if not candidates:
                self.status.state = "gone"
                await self._sleep(BACKOFF_MAX)
                continue
            others = [s for s in candidates if s.rpc_target != last] or candidates
            syncer = self._rng.choice(others)
            last = syncer.rpc_target
            self.status.syncer = syncer.node
            client = self._client_factory(syncer)
            refused = False
            try:
                await self._follow(client, syncer)
            except asyncio.CancelledError:
                raise
            except CallRefusedError as exc:  # it serves all it allows: wait, and longer
                refused = True
                self.status.error(type(exc).__name__)
                log.warning(
                    "link to %s (%s) refused, the peer is at its limit: %s (retrying in %.0f s)",
                    self.dc,
                    syncer.node,
                    exc,
                    max(delay, REFUSED_BACKOFF),
                    extra={"dc": self.dc, "peer": syncer.node},
                )
            except PysyncerError as exc:
                self.status.error(type(exc).__name__)
                log.info(
                    "link to %s (%s) broke: %s",
                    self.dc,
                    syncer.node,
                    exc,
                    extra={"dc": self.dc, "peer": syncer.node},
                )
            except Exception:
                self.status.error("internal")
                log.exception(
                    "link to %s (%s) failed",
                    self.dc,
                    syncer.node,
                    extra={"dc": self.dc, "peer": syncer.node},
                )
            finally:
                self.status.progress.running = False  # a repair cut short stays unfinished
                try:
                    await client.close()
                except Exception as exc:  # the link goes on with a new client
                    self.status.error("close")
                    log.info("link to %s: closing the client failed: %s", self.dc, exc)
            if self.status.state == "streaming" and not refused:  # it had been up: a fresh
                delay = BACKOFF_MIN  # failure, so the backoff starts over
            self.status.state = "backoff"
            if refused:  # not cut short by signs of life: they say nothing of its load
                delay = max(delay, REFUSED_BACKOFF)
                await asyncio.sleep(self._rng.uniform(delay, 1.5 * delay))
            else:
                await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        await wait_event(self._wake, seconds)

    async def _follow(self, client: SyncClientLike, syncer: RemoteSyncer) -> None:
        self.status.state = "connecting"
        health = await client.health()  # over TLS: the handshake verified its identity
        if self._on_followed is not None:
            self._on_followed(syncer)
        epoch = str(health.epoch)
        self._remote_exported = int(getattr(health, "exported", 0) or 0)
        self.status.remote_revision = int(health.revision)
        cursor = await self._store.get_cursor(self.dc)
        if cursor is None or cursor.epoch != epoch:
            revision = await self.repair(client, epoch)
        else:
            revision = cursor.revision
        # When a link is up matters: the first time (nothing else says so at INFO when
        # there was nothing to repair) and after a partition.
        log.info(
            "link to %s (%s) %s at revision %d (remote at %d)",
            self.dc,
            syncer.node,
            "resumed" if self.synced else "up",
            revision,
            self.status.remote_revision,
            extra={"dc": self.dc, "peer": syncer.node, "revision": revision},
        )
        next_anti_entropy = time.monotonic() + self._anti_entropy_interval
        self.status.state = "streaming"
        self.synced = True
        # A reader task receives the stream ahead of the importer; batches that queued up
        # while one was applied are applied together (one registry pass, one store
        # transaction): the importer's fixed cost per call would otherwise bound the
        # rate of a link, and a burst of small batches would queue behind one another.
        queue: asyncio.Queue[Any] = asyncio.Queue(READ_AHEAD)
        self._heard_at, self._stream = time.monotonic(), queue
        reader = asyncio.get_running_loop().create_task(
            _read_stream(client.watch(revision, epoch), queue, self.status, self._heard),
            name=f"peer-{self.dc}-watch",
        )
        try:
            carry: Any = None
            while True:
                if carry is None and self._repair_due(next_anti_entropy):
                    asked = self._repair_asked()
                    await self.repair(client, epoch, streaming=not asked)
                    self.status.state = "streaming"
                    pause = SETTLE_LOOK if self._first_look else self._anti_entropy_interval
                    next_anti_entropy = time.monotonic() + pause
                    continue
                batch = carry if carry is not None else await self._next(queue, next_anti_entropy)
                carry = None
                if batch is None:  # a repair was asked for, or anti-entropy is due
                    continue
                if batch is _END:
                    return
                if isinstance(batch, BaseException):
                    raise batch
                self.status.remote_revision = max(self.status.remote_revision, int(batch.revision))
                if batch.reset:
                    revision = await self.repair(client, epoch)
                    self.status.state = "streaming"
                    continue
                records = list(batch.records)
                committed = [float(getattr(batch, "committed_at", 0.0) or 0.0)] if records else []
                while len(records) < APPLY_MAX_RECORDS and not queue.empty():
                    following = queue.get_nowait()
                    if following is _ASKED:  # seen at the top once this batch is applied
                        continue
                    if following is _END or isinstance(following, BaseException):
                        carry = following
                        break
                    if following.reset:
                        carry = following
                        break
                    if following.records:
                        records.extend(following.records)
                        committed.append(float(getattr(following, "committed_at", 0.0) or 0.0))
                    batch = following
                    self.status.remote_revision = max(
                        self.status.remote_revision, int(batch.revision)
                    )
                if records:
                    await self._importer.apply(self.dc, records, int(batch.revision), epoch)
                    now = time.time()
                    self.status.last_applied_at = now
                    for committed_at in committed:
                        if committed_at:
                            self._record_lag(now - committed_at)
                revision = int(batch.revision)
                self.status.applied_revision = revision
        finally:
            self._stream = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _repair_due(self, next_anti_entropy: float) -> bool:
        """Anti-entropy's time has come, or a repair was asked for (here or by the importer)."""
        return time.monotonic() >= next_anti_entropy or self._repair_asked()

    def _repair_asked(self) -> bool:
        """A repair was asked for (copies lost, a manual resync): it pulls every slot that
        differs, at once."""
        return self._repair_now.is_set() or self.dc in self._importer.needs_repair

    def _heard(self) -> None:
        self._heard_at = time.monotonic()

    async def _next(self, queue: asyncio.Queue[Any], next_anti_entropy: float) -> Any:
        """The next batch of the stream, or None as soon as a repair is due.

        A quiet stream brings only a heartbeat now and then: a repair asked for (copies
        lost, an origin back: :meth:`request_repair` puts a marker in the queue) or
        anti-entropy's time must not wait for one. A stream silent for longer than
        :data:`STREAM_SILENCE_MAX` raises DeadlineExceededError. Waiting costs one queue
        waiter and one timer, no task: this runs once per batch received.
        """
        if not queue.empty():
            got = queue.get_nowait()
            return None if got is _ASKED else got
        silent_until = self._heard_at + STREAM_SILENCE_MAX
        try:
            async with asyncio.timeout(min(next_anti_entropy, silent_until) - time.monotonic()):
                got = await queue.get()
        except TimeoutError:
            self._check_heard()  # a repair asked for runs once dialled again
            return None
        return None if got is _ASKED else got

    def _check_heard(self) -> None:
        """Raise DeadlineExceededError when the running watch stream has been silent for
        longer than :data:`STREAM_SILENCE_MAX` (a full queue is our slowness, not silence)."""
        silence = time.monotonic() - self._heard_at
        if self._stream is None or self._stream.full() or silence < STREAM_SILENCE_MAX:
            return
        raise DeadlineExceededError(
            f"watch of {self.dc} silent for {silence:.1f} s (a heartbeat is due every "
            f"{HEARTBEAT_INTERVAL:.0f} s): dialling afresh",
            "DEADLINE_EXCEEDED",
        )

    async def _unless_silent(self, step: Awaitable[Any]) -> Any:
        """Await ``step``, a repair's call on the watch stream's connection (its digests,
        its next pulled batch). While the stream runs, a stall (it falls silent) gives the
        call up rather than waiting for its deadline (a pull's is minutes)."""
        call = asyncio.ensure_future(step)
        try:
            while not call.done():
                if self._stream is None:  # no watch yet (the first repair): its deadline
                    await asyncio.wait((call,))
                    break
                self._check_heard()
                remaining = self._heard_at + STREAM_SILENCE_MAX - time.monotonic()
                await asyncio.wait((call,), timeout=max(0.05, remaining))
        finally:
            if not call.done():
                call.cancel()
        return call.result()

    def _settled(self, slots: list[int], remote: Any) -> list[int]:
        """A streaming round's look at the differing ``slots``: the first look notes them
        (none to pull yet); the second returns those to pull (see :meth:`repair`)."""
        if not self._first_look:
            self._first_look = {slot: remote[slot] for slot in slots}
            return []
        first, self._first_look = self._first_look, {}
        pull = [
            slot
            for slot in slots
            if slot in self._unsettled or (slot in first and first[slot] == remote[slot])
        ]
        self._unsettled = set(slots) - set(pull)
        self.status.slots_settling += len(self._unsettled)
        return pull

    def _record_lag(self, seconds: float) -> None:
        seconds = max(0.0, seconds)  # clocks of two hosts may disagree a little
        status = self.status
        for index, bound in enumerate(LAG_BUCKETS):
            if seconds <= bound:
                status.lag_buckets[index] += 1
        status.lag_sum += seconds
        status.lag_count += 1

    async def repair(self, client: SyncClientLike, epoch: str, *, streaming: bool = False) -> int:
        """Compare slot digests; pull and reconcile the differing slots. The cursor set.

        ``streaming``: a periodic round while the watch stream runs. A slot then also
        differs while one of its changes is on its way down the stream (a slot holds a
        whole service: pulling it re-reads every instance of a busy service, and the
        stream waits meanwhile). Such a round looks twice (the caller comes back after
        :data:`SETTLE_LOOK`) and pulls only the slots that differ both times with the
        origin's digest unchanged between, and those it left moving the round before:
        a slot that never settles is pulled one round later, never left out for good.
        """
        self.status.state = "repairing"
        if not streaming:
            self._repair_now.clear()
            self._importer.needs_repair.discard(self.dc)
            self._first_look = {}
        revision, remote_epoch, raw = await self._unless_silent(client.get_digests())
        remote = core_digest.SlotDigestTable.from_bytes(raw)
        local = self._importer.digest_table(self.dc)
        wants = self._importer.wants  # slots other syncers of this data center own: not ours
        slots = [slot for slot in core_digest.diff_slots(local, remote) if wants(slot)]
        # The cursor this round may set: the origin's revision of the digests, unless
        # slots were left moving (their changes are still on their way down the stream,
        # which moves the cursor past them; a restart meanwhile replays from there).
        cursor = int(revision)
        if streaming:
            slots = self._settled(slots, remote)
            if self._first_look:
                return self.status.applied_revision  # the second look decides
            if self._unsettled:
                cursor = self.status.applied_revision
        pulled = 0
        progress = self.status.progress
        initial = not self.synced
        progress.begin(
            "initial" if initial else "repair", len(slots), self._remote_exported if initial else 0
        )
        if slots:
            parts: dict[int, list[Any]] = {}
            complete: dict[int, list[Any]] = {}
            buffered = 0
            pulling = aiter(client.pull_slots(slots))
            try:
                while True:
                    try:  # importer writes (below) are never cut short: only the network wait
                        slot, records, last = await self._unless_silent(anext(pulling))
                    except StopAsyncIteration:
                        break
                    parts.setdefault(int(slot), []).extend(records)
                    progress.records_done += len(records)
                    if last:
                        whole = parts.pop(int(slot))
                        complete[int(slot)] = whole
                        buffered += len(whole) + 1
                        pulled += 1
                        progress.slots_done = pulled
                        if buffered >= REPAIR_BATCH:  # one store transaction per batch of slots
                            await self._importer.reconcile_slots(
                                self.dc, complete, cursor, str(remote_epoch)
                            )
                            complete, buffered = {}, 0
            finally:  # stopped early (the importer failed, a silence): the call is freed now
                close = getattr(pulling, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):  # (still running: it ends by itself)
                        await close()
            if complete:
                await self._importer.reconcile_slots(self.dc, complete, cursor, str(remote_epoch))
        elif not (streaming and self._unsettled):
            await self._store.set_cursor(self.dc, cursor, str(remote_epoch))
        progress.end()
        self.status.repairs += 1
        self.status.slots_pulled += pulled
        self.status.applied_revision = cursor
        if pulled:
            log.info(
                "repaired %d slot(s) from %s at revision %d",
                pulled,
                self.dc,
                revision,
                extra={"dc": self.dc, "slots": pulled, "revision": int(revision)},
            )
        return cursor


async def _read_stream(
    stream: Any, queue: asyncio.Queue[Any], status: PeerStatus, heard: Callable[[], None]
) -> None:
    """Move a watch stream's batches into ``queue`` (``heard`` at each), then ``_END`` or
    the error raised."""
    try:
        async for batch in stream:
            heard()
            await queue.put(batch)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await queue.put(exc)
        return
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:  # also when cancelled between batches: the call is freed now
            try:
                await close()
            except Exception as exc:  # the stream is gone either way
                status.error("close")
                log.info("watch of %s: closing the stream failed: %s", status.dc, exc)
    await queue.put(_END)
