"""Supervised background tasks: a failure is logged with its traceback, counted in the
metrics, restarted with backoff and reported by readiness while a critical task is down.

The last test injects the failure the issue found in a real part: the slot-ownership loop
ended silently on an error other than StoreError (a NotFoundError during a re-read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pysyncer.adapters.base import NotFoundError
from pysyncer.admin.metrics import TaskCollector
from pysyncer.readiness import LoopMonitor, Probes
from pysyncer.store.base import SLOT_COUNT, Fence, SlotTable
from pysyncer.supervisor import Supervisor, TaskState, spawn, tolerate
from pysyncer.sync.ownership import SlotOwnership


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def metric_text(supervisor: Supervisor) -> str:
    registry = CollectorRegistry()
    registry.register(TaskCollector(supervisor.states, supervisor.swallowed))
    return generate_latest(registry).decode()


def task_state(supervisor: Supervisor, name: str) -> TaskState:
    return next(state for state in supervisor.states() if state.name == name)


def probes(supervisor: Supervisor) -> Probes:
    return Probes(LoopMonitor(), supervisor, lambda: None, list)


async def test_a_failing_task_is_logged_counted_restarted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(backoff_min=0.01, backoff_max=0.02)
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"injected failure {runs}")
        steady.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="pysyncer.supervisor"):
        handle = supervisor.spawn("flaky", flaky)
        await asyncio.wait_for(steady.wait(), 10)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info and "injected failure" in str(r.exc_info[1]) for r in errors)
    assert "flaky" in errors[0].getMessage()
    assert 'pysyncer_task_restarts_total{task="flaky"} 2.0' in metric_text(supervisor)
    assert 'pysyncer_task_up{task="flaky"} 1.0' in metric_text(supervisor)
    assert probes(supervisor).readiness() == {"status": "ready", "reasons": []}
    await handle.stop()
    assert handle.done()


async def test_a_critical_task_waiting_for_its_restart_makes_the_daemon_not_ready() -> None:
    supervisor = Supervisor(backoff_min=60.0)  # the restart is far away: it stays down

    async def broken() -> None:
        raise ValueError("injected")

    async def optional() -> None:
        raise ValueError("also injected")

    critical = supervisor.spawn("broken", broken)
    extra = supervisor.spawn("optional", optional, critical=False)
    await eventually(lambda: len(supervisor.states()) == 2 and supervisor.down() != [], "down")
    await eventually(lambda: not supervisor.states()[1].running, "optional down too")
    answer = probes(supervisor).readiness()
    assert answer["status"] == "not ready"
    assert answer["reasons"] == ["task broken: restarting after ValueError: injected"]
    assert 'pysyncer_task_up{task="broken"} 0.0' in metric_text(supervisor)
    await critical.stop()
    await extra.stop()
    assert supervisor.down() == []  # stopped on purpose: not a reason any more
    assert probes(supervisor).ready()


async def test_a_task_that_returns_is_done_not_restarted() -> None:
    supervisor = Supervisor(backoff_min=0.01)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    handle = supervisor.spawn("once", once)
    await eventually(handle.done, "returned")
    await asyncio.sleep(0.05)
    assert runs == 1
    assert supervisor.states()[0].restarts == 0
    assert supervisor.down() == []


async def test_spawn_uses_the_supervisor_bound_to_the_context() -> None:
    mine = Supervisor()

    async def child() -> None:
        await asyncio.Event().wait()

    async def parent() -> None:  # started while bound: its own children land there too
        inner = spawn("child", child)
        await asyncio.Event().wait()
        await inner.stop()

    with mine.bound():
        outer = spawn("parent", parent)
    await eventually(lambda: [s.name for s in mine.states()] == ["child", "parent"], "both")
    await outer.stop()


class FlakyCoordinator:
    """A store's coordination, in memory, for one member; ``fail_next`` makes the next
    leader lookup raise (what an adapter's NotFoundError in playback did)."""

    def __init__(self) -> None:
        self.table = SlotTable(0, ("",) * SLOT_COUNT, 0)
        self.members: dict[str, dict[str, str]] = {}
        self.fail_next: BaseException | None = None
        self.changed = asyncio.Event()

    async def join(self, node: str, info: Mapping[str, str], ttl: float) -> None:
        self.members[node] = dict(info)

    async def leave(self) -> None:
        self.members.clear()

    async def live_members(self) -> dict[str, dict[str, str]]:
        return dict(self.members)

    async def watch(self) -> AsyncIterator[None]:
        while True:
            await self.changed.wait()
            self.changed.clear()
            yield None

    async def read_slot_table(self) -> SlotTable:
        return self.table

    async def write_slot_table(self, owners: tuple[str, ...], revision: int) -> SlotTable | None:
        if revision != self.table.revision:
            return None
        self.table = SlotTable(self.table.epoch + 1, tuple(owners), revision + 1)
        return self.table

    async def leader(self) -> str | None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return min(self.members, default=None)

    async def check_fence(self, fence: Fence) -> None:
        return None


async def test_the_slot_ownership_loop_survives_a_failure_it_does_not_expect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(backoff_min=0.01, backoff_max=0.02)
    coordinator = FlakyCoordinator()
    ownership = SlotOwnership("a", coordinator, member_ttl=0.2)  # type: ignore[arg-type]
    with supervisor.bound():
        await ownership.start()
    assert ownership.stats.slots_owned == SLOT_COUNT
    coordinator.fail_next = NotFoundError("service gone during playback (injected)")
    with caplog.at_level(logging.ERROR, logger="pysyncer.supervisor"):
        await eventually(lambda: task_state(supervisor, "slot-ownership-a").restarts == 1, "again")
    assert "NotFoundError" in task_state(supervisor, "slot-ownership-a").last_error
    assert any(r.exc_info for r in caplog.records if "slot-ownership-a" in r.getMessage())
    # still following after the restart: a member joining gets half the slots
    coordinator.members["b"] = {}
    coordinator.changed.set()
    await eventually(lambda: ownership.stats.slots_owned == SLOT_COUNT // 2, "rebalanced")
    assert 'pysyncer_task_restarts_total{task="slot-ownership-a"} 1.0' in metric_text(supervisor)
    await ownership.close()


async def test_a_tolerated_error_is_counted_in_the_metrics_and_logged_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()
    with caplog.at_level(logging.WARNING, logger="pysyncer.supervisor"):
        for _ in range(3):
            supervisor.tolerate("widget-close", OSError("injected"))
        supervisor.tolerate("widget-close", ValueError("injected"), level=logging.ERROR)
        supervisor.tolerate("gadget", KeyError("x"), trace=True)
    assert supervisor.swallowed() == {
        ("gadget", "KeyError"): 1,
        ("widget-close", "OSError"): 3,
        ("widget-close", "ValueError"): 1,
    }
    text = metric_text(supervisor)
    assert 'pysyncer_swallowed_errors_total{reason="OSError",site="widget-close"} 3.0' in text
    assert 'pysyncer_swallowed_errors_total{reason="KeyError",site="gadget"} 1.0' in text
    lines = [r for r in caplog.records if r.name == "pysyncer.supervisor"]
    assert [r.getMessage().split(":")[0] for r in lines] == ["widget-close", "gadget"]
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert lines[1].exc_info is not None  # trace=True: the traceback is in the line


async def test_tolerate_counts_on_the_supervisor_bound_to_the_context() -> None:
    mine = Supervisor()
    with mine.bound():
        tolerate("somewhere", RuntimeError("injected"))
    assert mine.swallowed() == {("somewhere", "RuntimeError"): 1}
