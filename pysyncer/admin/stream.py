"""The dashboard's live feed: one snapshot of the whole daemon, then what changed, as SSE.

Owns the :class:`~pysyncer.admin.payloads.DashboardSnapshot` (health, readiness, members
by name, supervised tasks, the sync status and the slot table as runs), the JSON merge
patch (RFC 7386) between two snapshots, and the server-sent-events answer of
``GET /v1/sync/stream``: an ``event: snapshot`` first, then an ``event: delta`` with the
merge patch every :data:`STREAM_INTERVAL` seconds when something changed (a comment
line keeps an idle stream open); every stream ends when the server shuts down. A
snapshot is built at most once per interval however many dashboards watch
(:class:`SnapshotCache`), and at most :data:`MAX_STREAMS` streams are open at once
(one more is refused with 503).

Reads the daemon only through the callables it is given; must not import gossip or sync.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pysyncer.admin.payloads import DashboardSnapshot
from pysyncer.aiowait import wait_event

__all__ = [
    "KEEPALIVE_AFTER",
    "MAX_STREAMS",
    "STREAM_INTERVAL",
    "SnapshotCache",
    "merge_patch",
    "serve_stream",
]

STREAM_INTERVAL = 1.0  # seconds between two deltas
KEEPALIVE_AFTER = 15.0  # seconds without a delta before a comment line keeps the stream open
MAX_STREAMS = 32  # dashboards streaming from one daemon at once
EVENT_STREAM = "text/event-stream"


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (``{}``: no change).

    Objects are compared key by key (a removed key patches to null); anything else,
    lists included, is replaced whole when it differs.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(value, dict) and isinstance(old[key], dict):
                patch[key] = merge_patch(old[key], value)
            else:
                patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


class SnapshotCache:
    """Builds the snapshot at most once per ``interval``: every stream shares it."""

    def __init__(
        self, build: Callable[[], DashboardSnapshot], interval: float = STREAM_INTERVAL
    ) -> None:
        self._build = build
        self.interval = interval
        self._value: DashboardSnapshot | None = None
        self._taken = 0.0
        self.streams = 0  # open streams
        self._closing: asyncio.Event | None = None

    @property
    def closing(self) -> asyncio.Event:
        """Set when the server shuts down: every stream ends (created in the loop)."""
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    async def close(self, app: object = None) -> None:
        """End every stream (an ``on_shutdown`` hook: the server then stops at once
        instead of waiting for open dashboards)."""
        self.closing.set()

    def get(self) -> DashboardSnapshot:
        now = time.monotonic()
        if self._value is None or now - self._taken >= self.interval * 0.9:
            self._value = self._build()
            self._taken = now
        return self._value


def _event(kind: str, payload: Any) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def serve_stream(request: web.Request, cache: SnapshotCache) -> web.StreamResponse:
    """The event stream of one dashboard, until it goes away."""
    if cache.streams >= MAX_STREAMS:
        return web.json_response(
            {"error": f"{MAX_STREAMS} dashboards already stream from this daemon"}, status=503
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": EVENT_STREAM,
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy must pass each event at once
        }
    )
    cache.streams += 1
    try:
        await response.prepare(request)
        previous = cache.get()
        await response.write(_event("snapshot", previous))
        quiet_since = time.monotonic()
        closing = cache.closing
        while not closing.is_set():
            if await wait_event(closing, cache.interval):
                break  # the server shuts down
            current = cache.get()
            patch = merge_patch(previous, current)
            patch.pop("at", None)
            if patch:
                patch["at"] = current["at"]
                await response.write(_event("delta", patch))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_AFTER:
                await response.write(b": idle\n\n")
                quiet_since = time.monotonic()
            previous = current
    except (ConnectionResetError, ConnectionError):
        pass  # the dashboard went away
    finally:
        cache.streams -= 1
    return response
