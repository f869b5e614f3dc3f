"""The admin routes that inspect the pool: the diff across data centers and the filter dry run.

Owns reading their query parameters (``service``: one service name, or none for the
whole pool; ``limit``: instances per registry, 1..:data:`MAX_LIMIT`), how many run at
once (:data:`MAX_RUNNING`: each lists every registry; one more answers 503) and the
:class:`InspectBackend` protocol the daemon's presenter implements. The comparison
itself is :mod:`pysyncer.sync.diff`'s, the verdicts :mod:`pysyncer.sync.dryrun`'s; this
module must not import either, nor gossip or sync internals.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from pysyncer.admin.payloads import DiffAnswer, DryRunAnswer, ErrorAnswer, SlotRun
from pysyncer.errors import PysyncerError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_SERVICE_NAME", "InspectBackend", "diff", "dry_run"]

DEFAULT_LIMIT = 2_000  # instances per registry when the request names no limit
MAX_LIMIT = 10_000  # what a listing of the sync RPC holds at most (rpc/listing.MAX_LISTED)
MAX_SERVICE_NAME = 256
MAX_RUNNING = 2  # diffs and dry runs under way at once (each lists every registry)
NOT_RUNNING = "the sync engine is not running"
_running = 0  # under way now, in this process


@runtime_checkable
class InspectBackend(Protocol):
    """What the inspection routes need (optional: without it they answer 503, as the sync
    routes do without a sync engine)."""

    async def diff(self, service: str, limit: int) -> DiffAnswer | None:
        """The diff of ``service`` ("" = the pool); None while no sync engine runs."""

    async def dry_run(self) -> DryRunAnswer | None:
        """The verdicts of the current rules; None while no sync engine runs."""

    def slot_runs(self) -> list[SlotRun]:
        """This data center's slot table as runs (empty without a sync engine)."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response(ErrorAnswer(error=message), status=status)


def _service(request: web.Request) -> str:
    name = request.query.get("service", "").strip()
    if len(name) > MAX_SERVICE_NAME or any(ord(c) < 0x20 for c in name):
        raise ValueError(f"'service' must be a service name of at most {MAX_SERVICE_NAME} chars")
    return name


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"'limit' must be an integer in 1..{MAX_LIMIT}")
    return int(raw)


async def _answer(work: Coroutine[Any, Any, DiffAnswer | DryRunAnswer | None]) -> web.Response:
    """``work``'s answer, unless :data:`MAX_RUNNING` already run (503)."""
    global _running
    if _running >= MAX_RUNNING:
        work.close()
        return _error(503, f"{MAX_RUNNING} diffs or dry runs already under way: try again")
    _running += 1
    try:
        answer = await work
    except PysyncerError as exc:  # this data center's registry cannot be listed yet
        return _error(503, str(exc))
    finally:
        _running -= 1
    if answer is None:
        return _error(503, NOT_RUNNING)
    return web.json_response(answer)


async def diff(request: web.Request, backend: InspectBackend | None) -> web.Response:
    if backend is None:
        return _error(503, NOT_RUNNING)
    try:
        service, limit = _service(request), _limit(request)
    except ValueError as exc:
        return _error(400, str(exc))
    return await _answer(backend.diff(service, limit))


async def dry_run(request: web.Request, backend: InspectBackend | None) -> web.Response:
    if backend is None:
        return _error(503, NOT_RUNNING)
    return await _answer(backend.dry_run())
