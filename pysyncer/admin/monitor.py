"""``GET /v1/monitor``: the daemon's log records streamed to an operator, like ``serf monitor``.

Owns the logging handler that feeds every open monitor stream and the NDJSON answer: one
JSON object per record (the daemon's JSON log format, :class:`pysyncer.logs.JsonFormatter`,
credentials redacted), at or above the level each client asked for. The handler sits on
the root logger only while some client watches. Each client has a bounded queue of
:data:`QUEUE_LINES` lines: a client that reads too slowly loses lines, never slows the
daemon, and is told how many it lost (a ``{"dropped": N}`` line). At most
:data:`MAX_MONITORS` streams are open at once; closing the admin server ends them.

Records below the daemon's own ``--log-level`` are never made: asking for ``debug`` from a
daemon at ``info`` shows ``info`` and above. Must not import gossip or sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

from aiohttp import web

from pysyncer.logs import LOG_LEVELS, JsonFormatter
from pysyncer.redact import RedactingFilter

__all__ = ["MAX_MONITORS", "NDJSON", "QUEUE_LINES", "LogMonitor", "serve_monitor"]

QUEUE_LINES: Final = 1000  # lines buffered per client before it loses some
MAX_MONITORS: Final = 8  # monitor streams open at once
NDJSON: Final = "application/x-ndjson"
DEFAULT_LEVEL: Final = "info"
_END: Final = b""  # queued to end a stream (the server is closing)


class _Client:
    def __init__(self, level: int, loop: asyncio.AbstractEventLoop) -> None:
        self.level = level
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LINES)
        self.dropped = 0

    def offer(self, line: bytes) -> None:
        """On the loop's thread: queue ``line``, or count it lost when the queue is full."""
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1


class LogMonitor(logging.Handler):
    """Fans log records out to the open monitor streams."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(RedactingFilter())
        self._clients: set[_Client] = set()

    @property
    def streams(self) -> int:
        return len(self._clients)

    def emit(self, record: logging.LogRecord) -> None:
        wanting = [c for c in self._clients if record.levelno >= c.level]
        if not wanting:
            return
        try:
            line = (self.format(record) + "\n").encode()
        except Exception:  # a record that cannot be formatted must not break logging
            self.handleError(record)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for client in wanting:
            if client.loop is running:
                client.offer(line)
            elif not client.loop.is_closed():  # a record logged on another thread
                client.loop.call_soon_threadsafe(client.offer, line)

    def subscribe(self, level: int) -> _Client:
        client = _Client(level, asyncio.get_running_loop())
        if not self._clients:
            logging.getLogger().addHandler(self)
        self._clients.add(client)
        return client

    def unsubscribe(self, client: _Client) -> None:
        self._clients.discard(client)
        if not self._clients:
            logging.getLogger().removeHandler(self)

    def close_streams(self) -> None:
        """End every open stream (the admin server is closing)."""
        for client in self._clients:
            while True:
                try:
                    client.queue.put_nowait(_END)
                    break
                except asyncio.QueueFull:
                    client.queue.get_nowait()  # make room: the end matters more


def _level(request: web.Request) -> int:
    name = request.query.get("level", DEFAULT_LEVEL).lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"'level' must be one of {', '.join(LOG_LEVELS)}")
    return logging.getLevelName(name.upper())  # type: ignore[no-any-return]


async def serve_monitor(request: web.Request, monitor: LogMonitor) -> web.StreamResponse:
    """The NDJSON log stream of one client, until it goes away or the server closes."""
    try:
        level = _level(request)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if monitor.streams >= MAX_MONITORS:
        return web.json_response(
            {"error": f"{MAX_MONITORS} monitors already stream from this daemon"}, status=503
        )
    response = web.StreamResponse(
        headers={"Content-Type": NDJSON, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    client = monitor.subscribe(level)
    try:
        await response.prepare(request)
        while True:
            line = await client.queue.get()
            if line == _END:
                break
            if client.dropped:
                lost, client.dropped = client.dropped, 0
                await response.write(json.dumps({"dropped": lost}).encode() + b"\n")
            await response.write(line)
    except (ConnectionResetError, ConnectionError):
        pass  # the operator went away
    finally:
        monitor.unsubscribe(client)
    return response
