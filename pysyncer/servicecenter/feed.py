"""The change feed of the embedded Service-Center: revisions, the change log, long-poll waits.

Owns one tenant's revision (bumped by every change, never by heartbeats), the bounded log
of recent changes behind the long-poll feed (a pysyncer extension, see
``docs/registry.md``), the batch a feed request answers (:class:`FeedBatch`, with
``reset`` when the position is unknown), the feed's limits, waking waiters when a
change lands, and the JSON bytes of a batch (:class:`FeedEncoder`: each stored record
encoded once, however many answers carry it).

It records what the data model reports and never decides what changed: it must not import
the data model (``core``), validation or leases, and it touches no sockets.
"""

from __future__ import annotations

import asyncio
import copy
import json
import json.encoder as json_encoder
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from pysyncer.servicecenter.errors import invalid

__all__ = [
    "DEFAULT_CHANGE_LOG_SIZE",
    "ENCODED_RECORDS",
    "MAX_CHANGES_PER_BATCH",
    "MAX_FEED_TIMEOUT",
    "Action",
    "Change",
    "ChangeLog",
    "FeedBatch",
    "FeedEncoder",
    "check_feed_request",
]

JSON = dict[str, Any]
Action = Literal["CREATE", "UPDATE", "DELETE"]

DEFAULT_CHANGE_LOG_SIZE: Final = 100_000
MAX_CHANGES_PER_BATCH: Final = 10_000
MAX_FEED_TIMEOUT: Final = 60.0
# Stored records whose JSON bytes a FeedEncoder keeps: a whole batch's, so a follower
# reading what another has just read re-encodes nothing (a few MB at most).
ENCODED_RECORDS: Final = MAX_CHANGES_PER_BATCH


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON text, ASCII only (so the text is its own UTF-8 bytes), no cycle check
    (records hold none): ``JSONEncoder.encode`` with these settings, minus the C encoder
    it builds on every call (a fifth of encoding a stored instance), built here once with
    the arguments ``JSONEncoder.iterencode`` gives it; ``encode`` itself without the C
    module or when its signature differs."""
    settings = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    make = getattr(json_encoder, "c_make_encoder", None)
    escape = getattr(json_encoder, "c_encode_basestring_ascii", None)
    if make is None or escape is None:
        return settings.encode
    try:
        chunks = make(None, settings.default, escape, None, ":", ",", False, False, True)
        if "".join(chunks({"a": [1, None]}, 0)) != settings.encode({"a": [1, None]}):
            return settings.encode
    except TypeError:
        return settings.encode
    return lambda value: "".join(chunks(value, 0))


encode_json: Final = _compact_encoder()
_ACTIONS: Final[dict[str, bytes]] = {
    a: b',"action":"%s","service":' % a.encode() for a in ("CREATE", "UPDATE", "DELETE")
}


class Change(NamedTuple):
    """One entry of the change log: what happened at ``revision``.

    ``instance`` is None for a service-level change (a service created, updated or
    deleted on its own); ``service`` is the service as it was at that revision. A named
    tuple: one is made per change (every copy a syncer writes), several times faster
    than a frozen dataclass.
    """

    revision: int
    action: Action
    service: Mapping[str, Any]
    instance: Mapping[str, Any] | None

    def to_json(self, *, deep: bool = True) -> JSON:
        """The JSON shape; ``deep=False`` shares the stored records (read-only use, e.g.
        serialising at once: the feed answers thousands of changes a second)."""
        if not deep:
            return {
                "revision": self.revision,
                "action": self.action,
                "service": self.service,
                "instance": self.instance,
            }
        return {
            "revision": self.revision,
            "action": self.action,
            "service": copy.deepcopy(dict(self.service)),
            "instance": None if self.instance is None else copy.deepcopy(dict(self.instance)),
        }


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """Answer of the change feed (:meth:`ChangeLog.after`); the next ``since`` is ``revision``.

    ``reset`` means the requested position is unknown (older than the log, or from a
    previous life of the registry): the client must re-list and follow from the revision
    of that listing. ``revision`` is the current revision unless the batch was cut at
    ``limit`` changes, then it is the revision of the last change returned.
    """

    revision: int
    reset: bool
    changes: tuple[Change, ...]

    def to_json(self, *, deep: bool = True) -> JSON:
        return {
            "revision": self.revision,
            "reset": self.reset,
            "changes": [c.to_json(deep=deep) for c in self.changes],
        }


class FeedEncoder:
    """The JSON bytes of feed batches (the shape of :meth:`FeedBatch.to_json`), each
    stored record encoded once while it is among the last ``size`` encoded.

    A stored record is never mutated in place (an update replaces it: the data model's
    rule), so its bytes, found by its identity, stay right; the memo holds the record
    itself, so its identity cannot pass to another object while the bytes are kept. A
    service's bytes serve every change of its instances, an instance's its CREATE and
    its DELETE, and a batch read again (another follower, a retry) costs only its
    assembly.
    """

    __slots__ = ("_memo", "_size")

    def __init__(self, size: int = ENCODED_RECORDS) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._memo: OrderedDict[int, tuple[Mapping[str, Any], bytes]] = OrderedDict()

    def __len__(self) -> int:
        """How many records' bytes are kept."""
        return len(self._memo)

    def record(self, record: Mapping[str, Any]) -> bytes:
        """The JSON bytes of one stored record (the oldest kept ones make room)."""
        kept = self._memo.get(id(record))
        if kept is not None and kept[0] is record:
            return kept[1]
        data = encode_json(record).encode()
        if len(self._memo) >= self._size:
            self._memo.popitem(last=False)
        self._memo[id(record)] = (record, data)
        return data

    def batch(self, batch: FeedBatch) -> bytes:
        """``batch`` as the feed's JSON body."""
        record = self.record
        parts = [
            b'{"revision":%d,"reset":%s,"changes":['
            % (batch.revision, b"true" if batch.reset else b"false")
        ]
        for change in batch.changes:
            instance = change.instance
            parts.append(b'{"revision":%d' % change.revision)
            parts.append(_ACTIONS[change.action])
            parts.append(record(change.service))
            parts.append(b',"instance":')
            parts.append(b"null" if instance is None else record(instance))
            parts.append(b"},")
        if batch.changes:
            parts[-1] = b"}"
        parts.append(b"]}")
        return b"".join(parts)


def check_feed_request(timeout: float, limit: int) -> None:
    """Refuse (400001) a long-poll ``timeout`` or batch ``limit`` outside the feed's bounds."""
    if not 0 <= timeout <= MAX_FEED_TIMEOUT:
        raise invalid(f"'timeout' must be within 0..{MAX_FEED_TIMEOUT:g} seconds")
    if not 1 <= limit <= MAX_CHANGES_PER_BATCH:
        raise invalid(f"'limit' must be within 1..{MAX_CHANGES_PER_BATCH}")


class ChangeLog:
    """One tenant's revision and its last ``size`` changes, consecutive up to ``revision``.

    Everything runs on one event loop: :meth:`record` and :meth:`after` are atomic.
    """

    __slots__ = ("_dropped_upto", "_log", "_waiters", "revision")

    def __init__(self, start: int, size: int) -> None:
        self.revision = start
        self._dropped_upto = start  # every revision <= this one may be missing from the log
        self._log: deque[Change] = deque(maxlen=size)
        # One future per sleeping waiter (a dict: ordered, O(1) removal): woken all at
        # once by a change, each by its own timer otherwise. Cheaper per long-poll than an
        # Event under wait_for, which wraps every wait in a task.
        self._waiters: dict[asyncio.Future[None], None] = {}

    @property
    def waiting(self) -> int:
        """How many :meth:`wait` calls sleep now."""
        return len(self._waiters)

    def record(self, action: Action, service: JSON, instance: JSON | None) -> None:
        """Log a change at the next revision and wake whoever waits for one."""
        self.revision += 1
        if len(self._log) == self._log.maxlen:
            self._dropped_upto = self._log[0].revision
        self._log.append(Change(self.revision, action, service, instance))
        if self._waiters:
            self.wake()

    def after(self, since: int, limit: int) -> FeedBatch | None:
        """The batch answering ``since`` now, or None when nothing happened after it yet."""
        if since > self.revision or since < self._dropped_upto:
            return FeedBatch(self.revision, True, ())
        if since == self.revision:
            return None
        first = self._log[0].revision
        start = since + 1 - first
        picked = [self._log[i] for i in range(start, min(len(self._log), start + limit))]
        revision = picked[-1].revision if len(picked) == limit else self.revision
        return FeedBatch(revision, False, tuple(picked))

    def idle(self) -> FeedBatch:
        """The answer of a wait that saw no change: the current revision, nothing in it."""
        return FeedBatch(self.revision, False, ())

    async def wait(self, timeout: float) -> None:
        """Sleep until the next change (or :meth:`wake`), at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = None
        timer = loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)

    def wake(self) -> None:
        """Wake every waiter now."""
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            _release(waiter)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
