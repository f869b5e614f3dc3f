"""Liveness and readiness of a daemon: the answers of ``/v1/health/live`` and ``/ready``.

Owns the two decisions. *Live*: the event loop keeps time (:class:`LoopMonitor` ticks
every :data:`TICK` seconds; a tick later than :data:`STALLED_AFTER` means a blocked
loop). *Ready*: nothing in the list of reasons, which names what is still missing: the
sync engine not started yet (and why: the registry or store it waits for), what the
engine reports (registry not answering, store degraded, a data center's first sync not
done) and every critical supervised task waiting for its restart. It reads its sources
through callables: it must not import the daemon, the engine or the admin server.

Imports: admin, supervisor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from pysyncer.admin.payloads import Liveness, Readiness, TaskStatus
from pysyncer.supervisor import Supervised, Supervisor, TaskState

__all__ = ["STALLED_AFTER", "TICK", "LoopMonitor", "Probes"]

TICK = 0.5  # seconds between the loop monitor's ticks
STALLED_AFTER = 5.0  # a tick this late (or none for this long): the loop is stalled


class LoopMonitor:
    """Measures how late the event loop runs a timer: its lag, and whether it is stalled."""

    def __init__(self, tick: float = TICK, stalled_after: float = STALLED_AFTER) -> None:
        self.tick = tick
        self.stalled_after = stalled_after
        self.lag = 0.0
        self._last = time.monotonic()
        self._task: Supervised | None = None

    def start(self, supervisor: Supervisor) -> None:
        self._last = time.monotonic()
        self._task = supervisor.spawn("loop-monitor", self._run)

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + self.tick
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.lag = max(0.0, now - expected)
            self._last = now

    def healthy(self) -> bool:
        """Ticks arrive and none was late by :attr:`stalled_after` or more."""
        since = time.monotonic() - self._last
        return since < self.tick + self.stalled_after and self.lag < self.stalled_after


class Probes:
    """The probe backend of the admin API for one daemon.

    ``starting()``: why the daemon has not finished starting (None once it has);
    ``engine_reasons()``: what the running sync engine reports (empty: ready).
    """

    def __init__(
        self,
        monitor: LoopMonitor,
        supervisor: Supervisor,
        starting: Callable[[], str | None],
        engine_reasons: Callable[[], Sequence[str]],
    ) -> None:
        self.monitor = monitor
        self.supervisor = supervisor
        self._starting = starting
        self._engine_reasons = engine_reasons

    def liveness(self) -> Liveness:
        live = self.monitor.healthy()
        return {"status": "live" if live else "stalled", "loop_lag_seconds": self.monitor.lag}

    def reasons(self) -> list[str]:
        """Why the daemon is not ready, in a stable order; empty when it is."""
        starting = self._starting()
        reasons = [starting] if starting is not None else list(self._engine_reasons())
        reasons += [_task_down(state) for state in self.supervisor.down()]
        return reasons

    def readiness(self) -> Readiness:
        reasons = self.reasons()
        return {"status": "not ready" if reasons else "ready", "reasons": reasons}

    def ready(self) -> bool:
        return not self.reasons()

    def tasks(self) -> list[TaskStatus]:
        """Every supervised task with its restarts (the dashboard's alarms)."""
        return [
            {
                "name": state.name,
                "critical": state.critical,
                "running": state.running,
                "restarts": state.restarts,
                "last_error": state.last_error,
            }
            for state in self.supervisor.states()
        ]


def _task_down(state: TaskState) -> str:
    return f"task {state.name}: restarting after {state.last_error}"
