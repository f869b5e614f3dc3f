"""Supervised background work: every long-lived task of a daemon runs under one supervisor.

Owns running a task's coroutine, and when it raises: one ERROR line with the traceback,
a restart counted per task name (``pysyncer_task_restarts_total{task}`` in
:mod:`pysyncer.admin.metrics`), and a new run after a backoff that doubles from
:data:`BACKOFF_MIN` up to :data:`BACKOFF_MAX`. A run that lasted :data:`STABLE_AFTER`
seconds resets the backoff. A task that returns is done (not restarted). While a
*critical* task waits to be restarted it is listed by :meth:`Supervisor.down`, which
readiness reports.

Errors a task survives on purpose (a callback that raised, a close that failed) go through
:func:`tolerate`: a log line at the level the site chooses, at most one per site every
:data:`LOG_EVERY` seconds (with the number left out since), and a count per site and
error type (``pysyncer_swallowed_errors_total{site,reason}``). No part swallows an
unexpected error any other way; errors that are expected (closing a closed socket) are
caught by their own type instead.

Parts do not take a supervisor as an argument: :func:`spawn` uses the supervisor bound to
the current context (:meth:`Supervisor.bound` while the daemon starts; tasks created
from then on inherit it), or a process-wide default when none is bound (a part built
alone, in a unit test). Standard library only: it must not import any other part of
pysyncer.

Imports: -.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "STABLE_AFTER",
    "Supervised",
    "Supervisor",
    "TaskState",
    "current",
    "spawn",
    "tolerate",
]

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5  # seconds before the first restart
BACKOFF_MAX = 30.0  # the backoff doubles up to this
STABLE_AFTER = 60.0  # a run this long resets the backoff
LOG_EVERY = 60.0  # a site that keeps failing logs one line per this many seconds

Factory = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class TaskState:
    """One supervised task as metrics and readiness see it."""

    name: str
    critical: bool
    running: bool = False
    restarts: int = 0
    last_error: str = ""


class Supervised:
    """The handle of one supervised task: cancel it with :meth:`stop`."""

    def __init__(self, supervisor: Supervisor, state: TaskState, task: asyncio.Task[None]) -> None:
        self._supervisor = supervisor
        self.state = state
        self.task = task

    @property
    def name(self) -> str:
        return self.state.name

    def done(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        self.task.cancel()

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended. A cancellation of the caller
        itself still propagates (``asyncio.wait`` does not swallow it, where suppressing
        CancelledError around ``await self.task`` would)."""
        self.task.cancel()
        await asyncio.wait([self.task])


class Supervisor:
    """Runs, restarts and reports the long-lived tasks of one daemon."""

    def __init__(
        self,
        *,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self._states: dict[str, TaskState] = {}
        self._live: dict[str, int] = {}  # name -> handles running under it
        self._swallowed: dict[tuple[str, str], int] = {}  # (site, error type) -> count
        self._quiet: dict[str, tuple[float, int]] = {}  # site -> (last logged, left out)

    # -- running -------------------------------------------------------------------------

    def spawn(self, name: str, factory: Factory, *, critical: bool = True) -> Supervised:
        """Run ``factory()`` now, again after each failure, until it returns or is stopped."""
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = TaskState(name, critical)
        state.critical = critical
        task = asyncio.get_running_loop().create_task(self._run(state, factory), name=name)
        return Supervised(self, state, task)

    async def _run(self, state: TaskState, factory: Factory) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_min
        self._live[state.name] = self._live.get(state.name, 0) + 1
        try:
            while True:
                state.running = True
                started = loop.time()
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    state.running = False
                    state.restarts += 1
                    state.last_error = f"{type(exc).__name__}: {exc}"
                    if loop.time() - started >= self.stable_after:
                        delay = self.backoff_min
                    log.error(
                        "task %s failed (restart %d in %.1f s)",
                        state.name,
                        state.restarts,
                        delay,
                        exc_info=True,
                        extra={"task": state.name},
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            state.running = False
            self._live[state.name] -= 1
            if not self._live[state.name]:
                del self._live[state.name]

    @contextlib.contextmanager
    def bound(self) -> Iterator[Supervisor]:
        """Make this the supervisor :func:`spawn` uses in the current context (and in every
        task created from it) for the ``with`` block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def tolerate(
        self, site: str, exc: BaseException, *, level: int = logging.WARNING, trace: bool = False
    ) -> None:
        """Count an error the caller survives at ``site`` and log it (rate-limited per
        site); ``trace`` adds the traceback (for errors that are bugs, not weather)."""
        reason = type(exc).__name__
        key = (site, reason)
        self._swallowed[key] = self._swallowed.get(key, 0) + 1
        now = time.monotonic()
        last, left_out = self._quiet.get(site, (float("-inf"), 0))
        if now - last < LOG_EVERY:
            self._quiet[site] = (last, left_out + 1)
            return
        self._quiet[site] = (now, 0)
        since = f" ({left_out} more since the last line)" if left_out else ""
        log.log(
            level,
            "%s: %s: %s%s",
            site,
            reason,
            exc,
            since,
            exc_info=exc if trace else None,
            extra={"site": site},
        )

    # -- reporting -----------------------------------------------------------------------

    def states(self) -> list[TaskState]:
        """Every task ever supervised here, by name (restart counters never go back)."""
        return [self._states[name] for name in sorted(self._states)]

    def swallowed(self) -> dict[tuple[str, str], int]:
        """``(site, error type) -> count`` of the errors tolerated here (never go back)."""
        return dict(sorted(self._swallowed.items()))

    def down(self) -> list[TaskState]:
        """Critical tasks that failed and wait for their restart."""
        return [
            state
            for state in self.states()
            if state.critical and not state.running and state.name in self._live
        ]


_DEFAULT = Supervisor()
_CURRENT: contextvars.ContextVar[Supervisor] = contextvars.ContextVar(
    "pysyncer_supervisor", default=_DEFAULT
)


def current() -> Supervisor:
    """The supervisor bound to this context, or the process-wide default."""
    return _CURRENT.get()


def spawn(name: str, factory: Factory, *, critical: bool = True) -> Supervised:
    """:meth:`Supervisor.spawn` on the :func:`current` supervisor."""
    return current().spawn(name, factory, critical=critical)


def tolerate(
    site: str, exc: BaseException, *, level: int = logging.WARNING, trace: bool = False
) -> None:
    """:meth:`Supervisor.tolerate` on the :func:`current` supervisor."""
    current().tolerate(site, exc, level=level, trace=trace)
