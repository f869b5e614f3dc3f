"""pysyncer.gossip.clock: VirtualClock (simulated time) and LoopClock (one loop handle).

Both clocks run on the dispatcher's TimerQueue, so this file runs once per
implementation: compiled in the normal run, twin under PYSYNCER_NO_EXTENSIONS=1.
Loop tests use asyncio.run (and uvloop when installed) with real time, bounded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import pytest

from pysyncer import _core
from pysyncer.gossip.clock import Clock, LoopClock, VirtualClock
from pysyncer.supervisor import Supervisor

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def test_clocks_use_the_dispatchers_queue() -> None:
    clock: VirtualClock[str] = VirtualClock()
    assert type(clock._queue) is _core.timers.TimerQueue


# --- VirtualClock --------------------------------------------------------------------


class Recorder:
    """A callback that logs (time, key) and may run an action per key."""

    def __init__(self, clock: VirtualClock[Any]) -> None:
        self.clock = clock
        self.log: list[tuple[float, Hashable]] = []
        self.actions: dict[Hashable, Callable[[], object]] = {}

    def __call__(self, key: Hashable) -> None:
        self.log.append((self.clock.now(), key))
        action = self.actions.get(key)
        if action is not None:
            action()


def test_virtual_time_moves_only_when_told() -> None:
    clock: VirtualClock[str] = VirtualClock(start=100.0)
    rec = Recorder(clock)
    clock.call_later("a", 5.0, rec)
    assert clock.now() == 100.0 and clock.deadline_of("a") == 105.0
    assert clock.advance(4.999) == 0
    assert rec.log == []
    assert clock.advance(0.001) == 1
    assert rec.log == [(105.0, "a")]
    assert clock.now() == 105.0
    with pytest.raises(ValueError):
        clock.advance(-1.0)


def test_virtual_fires_in_deadline_then_scheduling_order_at_each_deadline() -> None:
    clock: VirtualClock[str] = VirtualClock()
    rec = Recorder(clock)
    for key, deadline in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("b0", 2.0)]:
        clock.call_at(key, deadline, rec)
    clock.call_at("b1", 2.0, rec)  # re-scheduled: last of the 2.0 group
    clock.run_until(10.0)
    assert rec.log == [(1.0, "a"), (2.0, "b2"), (2.0, "b0"), (2.0, "b1"), (3.0, "c")]
    assert clock.now() == 10.0 and len(clock) == 0


def test_callbacks_may_schedule_more_timers() -> None:
    clock: VirtualClock[str] = VirtualClock()
    rec = Recorder(clock)
    ticks = 0

    def tick(key: str) -> None:  # a periodic gossip tick re-arming itself
        nonlocal ticks
        ticks += 1
        clock.call_later(key, 0.2, tick)

    clock.call_at("gossip", 0.2, tick)
    clock.call_at("a", 1.0, rec)
    rec.actions["a"] = lambda: clock.call_later("b", 0.5, rec)  # a chain
    rec.actions["b"] = lambda: clock.call_at("now", clock.now(), rec)  # due at once
    clock.advance(2.0)
    assert rec.log == [(1.0, "a"), (1.5, "b"), (1.5, "now")]
    assert ticks == 10
    assert clock.deadline_of("gossip") == pytest.approx(2.2)


def test_callbacks_may_cancel_or_reschedule_timers_of_their_own_batch() -> None:
    clock: VirtualClock[str] = VirtualClock()
    rec = Recorder(clock)
    for key in ["first", "cancelled", "moved", "kept"]:
        clock.call_at(key, 1.0, rec)
    cancelled: list[bool] = []

    def first() -> None:
        cancelled.append(clock.cancel("cancelled"))
        clock.call_at("moved", 3.0, rec)
        cancelled.append(clock.cancel("first"))  # itself: already running

    rec.actions["first"] = first
    clock.run_until(5.0)
    assert rec.log == [(1.0, "first"), (1.0, "kept"), (3.0, "moved")]
    assert cancelled == [True, False]


def test_a_timer_in_the_past_runs_now_without_moving_time_back() -> None:
    clock: VirtualClock[str] = VirtualClock(start=10.0)
    rec = Recorder(clock)
    clock.call_at("late", 3.0, rec)
    clock.advance(0.0)
    assert rec.log == [(10.0, "late")]


def test_seeded_ties_are_shuffled_reproducibly() -> None:
    def run(seed: int | None) -> list[int]:
        clock: VirtualClock[int] = VirtualClock(seed=seed)
        rec = Recorder(clock)
        for key in range(30):
            clock.call_at(key, 1.0 + (key % 3), rec)
        clock.run_all()
        return [key for _, key in rec.log if isinstance(key, int)]

    unseeded = run(None)
    assert unseeded == sorted(range(30), key=lambda k: (k % 3, k))
    assert run(42) == run(42)
    assert run(42) != unseeded and run(42) != run(43)
    assert [k % 3 for k in run(42)] == sorted(k % 3 for k in range(30))  # deadlines hold


def test_run_all_and_runaway_guard() -> None:
    clock: VirtualClock[str] = VirtualClock()
    clock.call_at("forever", 1.0, lambda key: clock.call_later(key, 1.0, lambda k: None))
    assert clock.run_all() == 2
    clock.call_at("loop", 1.0, lambda key: None)

    def again(key: str) -> None:
        clock.call_later(key, 1.0, again)

    clock.call_at("loop", 1.0, again)
    with pytest.raises(RuntimeError):
        clock.run_all(max_timers=100)


def test_exception_propagates_and_keeps_the_rest_of_the_batch() -> None:
    clock: VirtualClock[str] = VirtualClock()
    rec = Recorder(clock)

    def boom(key: str) -> None:
        raise KeyError(key)

    clock.call_at("x", 1.0, rec)
    clock.call_at("boom", 2.0, boom)
    clock.call_at("y", 2.0, rec)
    with pytest.raises(KeyError):
        clock.run_until(5.0)
    assert clock.now() == 2.0
    clock.run_until(5.0)
    assert rec.log == [(1.0, "x"), (2.0, "y")]


def test_simulation_is_deterministic() -> None:
    def simulate(seed: int) -> list[tuple[float, Hashable]]:
        rng = random.Random(seed)
        clock: VirtualClock[int] = VirtualClock(seed=seed)
        rec = Recorder(clock)
        for key in range(200):
            clock.call_at(key, float(rng.randrange(50)), rec)

        def chain(key: int) -> Callable[[], None]:
            return lambda: clock.call_later(key + 1000, rng.random(), rec)

        for key in range(0, 200, 7):
            rec.actions[key] = chain(key)
        clock.run_all()
        return rec.log

    assert simulate(5) == simulate(5)
    log = simulate(5)
    assert [t for t, _ in log] == sorted(t for t, _ in log)
    assert len(log) == 200 + len(range(0, 200, 7))


def test_clock_protocol_is_satisfied() -> None:
    def use(clock: Clock[str]) -> float:
        clock.call_later("k", 1.0, lambda key: None)
        return clock.now()

    assert use(VirtualClock[str]()) == 0.0


# --- LoopClock -----------------------------------------------------------------------


def run_on(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_loop_clock_fires_thousands_of_timers_through_one_handle(loop_kind: str) -> None:
    count = 5000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock: LoopClock[int] = LoopClock()
        start = clock.now()
        rng = random.Random(3)
        deadlines = {key: start + rng.uniform(0.01, 0.3) for key in range(count)}
        fired: list[tuple[float, int]] = []
        handles_seen: set[int] = set()
        done = loop.create_future()

        def callback(key: int) -> None:
            fired.append((clock.now(), key))
            handles_seen.add(clock.armed_handles)
            if len(fired) == count:
                done.set_result(None)

        for key, deadline in deadlines.items():
            clock.call_at(key, deadline, callback)
        assert clock.armed_handles == 1
        assert len(clock) == count
        await asyncio.wait_for(done, 10.0)  # the last deadline is 0.3 s out
        assert handles_seen == {0}  # none armed while firing; re-armed after the batch
        assert clock.armed_handles == 0 and len(clock) == 0
        order = [key for _, key in fired]
        assert order == sorted(deadlines, key=deadlines.__getitem__)
        assert all(now >= deadlines[key] for now, key in fired)
        # one handle at a time: re-armed once per wake-up, not once per timer
        assert clock.arm_count < count // 2

    run_on(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_loop_clock_rearms_for_earlier_deadlines_and_cancels(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock: LoopClock[str] = LoopClock(loop)
        fired: list[str] = []
        done = loop.create_future()
        now = clock.now()

        def record(key: str) -> None:
            fired.append(key)
            if key == "last":
                done.set_result(None)

        clock.call_at("late", now + 0.2, record)
        clock.call_at("cancelled", now + 0.01, record)
        clock.call_later("early", 0.02, record)  # earlier than the armed 0.2: re-armed
        clock.call_at("last", now + 0.25, record)
        assert clock.cancel("cancelled") is True
        assert clock.cancel("cancelled") is False
        assert clock.armed_handles == 1
        await asyncio.wait_for(done, 10.0)
        assert fired == ["early", "late", "last"]
        clock.call_later("closed", 0.01, record)
        clock.close()
        assert clock.armed_handles == 0 and len(clock) == 0
        await asyncio.sleep(0.03)
        assert fired == ["early", "late", "last"]

    run_on(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_loop_clock_reports_callback_errors_and_goes_on(loop_kind: str) -> None:
    supervisor = Supervisor()  # the daemon's: bound while its parts start

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock: LoopClock[str] = LoopClock()
        fired: list[str] = []
        done = loop.create_future()

        def boom(key: str) -> None:
            raise ValueError(key)

        def ok(key: str) -> None:
            fired.append(key)
            done.set_result(None)

        now = clock.now()
        clock.call_at("boom", now + 0.01, boom)
        clock.call_at("ok", now + 0.01, ok)
        await asyncio.wait_for(done, 10.0)
        assert fired == ["ok"]
        assert supervisor.swallowed() == {("gossip-timer", "ValueError"): 1}

    with supervisor.bound():
        run_on(loop_kind, main)


def test_loop_clock_limits_each_wake_up_to_max_batch() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock: LoopClock[int] = LoopClock(max_batch=100)
        fired: list[int] = []
        done = loop.create_future()

        def callback(key: int) -> None:
            fired.append(key)
            if len(fired) == 1000:
                done.set_result(None)

        for key in range(1000):
            clock.call_at(key, clock.now(), callback)
        await asyncio.wait_for(done, 10.0)
        assert fired == list(range(1000))
        assert clock.arm_count >= 10  # ten batches, each a loop iteration

    asyncio.run(main())
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            LoopClock(loop, max_batch=0)
    finally:
        loop.close()
