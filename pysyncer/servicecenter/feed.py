"""The change feed of the embedded Service-Center: revisions, the change log, long-poll waits.

Owns one tenant's revision (bumped by every change, never by heartbeats), the bounded log
of recent changes behind the long-poll feed (a pysyncer extension, see
``docs/registry.md``), the batch a feed request answers (:class:`FeedBatch`, with
``reset`` when the position is unknown), the feed's limits, and waking waiters when a
change lands.

It records what the data model reports and never decides what changed: it must not import
the data model (``core``), validation or leases, and it touches no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from pysyncer.servicecenter.errors import invalid

__all__ = [
    "DEFAULT_CHANGE_LOG_SIZE",
    "MAX_CHANGES_PER_BATCH",
    "MAX_FEED_TIMEOUT",
    "Action",
    "Change",
    "ChangeLog",
    "FeedBatch",
    "check_feed_request",
]

JSON = dict[str, Any]
Action = Literal["CREATE", "UPDATE", "DELETE"]

DEFAULT_CHANGE_LOG_SIZE: Final = 100_000
MAX_CHANGES_PER_BATCH: Final = 10_000
MAX_FEED_TIMEOUT: Final = 60.0


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

    __slots__ = ("_changed", "_dropped_upto", "_log", "revision")

    def __init__(self, start: int, size: int) -> None:
        self.revision = start
        self._dropped_upto = start  # every revision <= this one may be missing from the log
        self._log: deque[Change] = deque(maxlen=size)
        self._changed: asyncio.Event | None = None  # created by the first waiter after a change

    def record(self, action: Action, service: JSON, instance: JSON | None) -> None:
        """Log a change at the next revision and wake whoever waits for one."""
        self.revision += 1
        if len(self._log) == self._log.maxlen:
            self._dropped_upto = self._log[0].revision
        self._log.append(Change(self.revision, action, service, instance))
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
        event = self._changed
        if event is None:
            event = self._changed = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def wake(self) -> None:
        """Wake every waiter now; the next waiter makes a new event."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None
