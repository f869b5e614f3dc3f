"""The admin API's view of a running syncer: gossip and sync state as admin payloads.

Owns turning the gossip stack's members, events, queries and key operations and the sync
engine's status into the answers of :mod:`pysyncer.admin.payloads`; it implements the
backend protocols of :mod:`pysyncer.admin.app`. Reads the gossip side only through
:class:`~pysyncer.gossip.stack.GossipStack`'s public API and the sync engine through the
small :class:`SyncSource` protocol. Must not import the daemon or the configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from pysyncer import __version__, _core
from pysyncer.admin.payloads import (
    CoordinatesAnswer,
    DiffAnswer,
    DryRunAnswer,
    Event,
    Health,
    KeyAnswer,
    LeaveAnswer,
    Member,
    MemberStatusName,
    QueryAnswer,
    SlotRun,
    SyncStatus,
)
from pysyncer.gossip.keymanager import KeyResponse
from pysyncer.gossip.serf import MemberStatus
from pysyncer.gossip.stack import GossipStack

__all__ = ["LEAVE_DELAY", "DaemonPresenter", "SyncSource"]

log = logging.getLogger(__name__)

LEAVE_DELAY = 0.2  # seconds between answering POST /v1/leave and starting to leave

# The admin contract's statuses: alive, suspect, failed, left ("leaving" reads as alive).
_STATUS_NAMES: dict[MemberStatus, MemberStatusName] = {
    MemberStatus.ALIVE: "alive",
    MemberStatus.LEAVING: "alive",
    MemberStatus.LEFT: "left",
    MemberStatus.FAILED: "failed",
}


class SyncSource(Protocol):
    """What the presenter reads from the sync engine."""

    def status(self) -> SyncStatus: ...

    def full_sync(self) -> Sequence[str]: ...

    async def diff(self, service: str, limit: int) -> DiffAnswer: ...

    async def dry_run(self, limit: int = 0) -> DryRunAnswer: ...

    def slot_runs(self) -> list[SlotRun]: ...


def _terminate_self() -> None:
    """Stop this process the way a service manager does: SIGTERM (a graceful leave)."""
    os.kill(os.getpid(), signal.SIGTERM)


class DaemonPresenter:
    """Implements the admin, key, sync and lifecycle backends for one syncer.

    ``shutdown``: what ``POST /v1/leave`` calls once answered (default: SIGTERM to this
    process, which the daemon handles by leaving the pool and stopping).
    """

    def __init__(
        self,
        gossip: GossipStack,
        *,
        node: str,
        dc: str,
        engine: Callable[[], SyncSource | None],
        insecure: bool = False,
        shutdown: Callable[[], None] = _terminate_self,
    ) -> None:
        self.gossip = gossip
        self._shutdown = shutdown
        self._leaving = False
        self.insecure = insecure
        self.node = node
        self.dc = dc
        self._engine = engine

    # -- sync ----------------------------------------------------------------------------

    def sync_status(self) -> SyncStatus | None:
        engine = self._engine()
        return engine.status() if engine is not None else None

    def full_sync(self) -> Sequence[str] | None:
        engine = self._engine()
        return engine.full_sync() if engine is not None else None

    async def diff(self, service: str, limit: int) -> DiffAnswer | None:
        engine = self._engine()
        return await engine.diff(service, limit) if engine is not None else None

    async def dry_run(self) -> DryRunAnswer | None:
        engine = self._engine()
        return await engine.dry_run() if engine is not None else None

    def slot_runs(self) -> list[SlotRun]:
        engine = self._engine()
        return engine.slot_runs() if engine is not None else []

    # -- gossip --------------------------------------------------------------------------

    def health(self) -> Health:
        score = self.gossip.health_score()
        return {
            "status": "ok" if score == 0 else "degraded",
            "node": self.node,
            "dc": self.dc,
            "version": __version__,
            "implementation": _core.IMPLEMENTATION,
            "health_score": score,
            "insecure": self.insecure,
        }

    def members(self) -> Sequence[Member]:
        suspects = self.gossip.suspects()
        return [
            {
                "name": m.name,
                "addr": m.addr,
                "port": m.port,
                "status": "suspect"
                if m.name in suspects
                else _STATUS_NAMES.get(m.status, cast(MemberStatusName, m.status.value)),
                "tags": dict(m.tags),
            }
            for m in sorted(self.gossip.members(), key=lambda m: m.name)
        ]

    def coordinates(self) -> CoordinatesAnswer:
        return {
            "node": self.node,
            "coordinates": {
                name: {
                    "vec": list(c.vec),
                    "error": c.error,
                    "adjustment": c.adjustment,
                    "height": c.height,
                }
                for name, c in sorted(self.gossip.coordinates().items())
            },
        }

    def leave(self) -> LeaveAnswer:
        if not self._leaving:
            self._leaving = True
            log.info("leave requested over the admin API: leaving the pool, then stopping")
            asyncio.get_running_loop().call_later(LEAVE_DELAY, self._shutdown)
        return {"leaving": True, "node": self.node}

    def force_leave(self, node: str, prune: bool) -> None:
        self.gossip.force_leave(node, prune)

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.gossip.serf.user_event(name, payload, coalesce)

    def recent_events(self) -> Sequence[Event]:
        return [
            {"name": e.name, "payload": e.payload.decode(errors="replace"), "ltime": e.ltime}
            for e in self.gossip.serf.recent_events()
        ]

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> QueryAnswer:
        timeout = None if timeout_ms is None else timeout_ms / 1000
        result = await self.gossip.serf.query(name, payload, timeout=timeout, request_ack=True)
        return {
            "acks": sorted(result.acks),
            "responses": {
                node: value.decode(errors="replace")
                for node, value in sorted(result.responses.items())
            },
            "completed_early": result.completed_early,
        }

    async def key_operation(self, op: str, key: str | None) -> KeyAnswer:
        manager = self.gossip.key_manager
        response: KeyResponse
        if op == "list":
            response = await manager.list_keys()
        elif key is None:
            raise ValueError(f"'{op}' needs a key")
        elif op == "install":
            response = await manager.install_key(key)
        elif op == "use":
            response = await manager.use_key(key)
        elif op == "remove":
            response = await manager.remove_key(key)
        else:
            raise ValueError(f"unknown key operation '{op}'")
        return cast(KeyAnswer, response.to_dict())
