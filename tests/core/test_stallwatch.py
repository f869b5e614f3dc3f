"""The benchmarks' stall watchdog names what the loop thread ran during a stall, and stays
bounded however many stalls it sees."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import threading
import time

import pytest

from benchmarks import stallwatch
from benchmarks.stallwatch import StallWatch


def _spin_in_python(seconds: float) -> int:
    """Keep the loop thread running Python (not sleeping) for ``seconds``."""
    end = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < end:
        turns += 1
    return turns


async def _run_with_watch(watch: StallWatch, blocker: object, stalls: int = 1) -> None:
    async def ticker() -> None:
        while True:
            await asyncio.sleep(watch.tick_period)
            watch.tick()

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0.05)
    for _ in range(stalls):
        assert callable(blocker)
        blocker()
        await asyncio.sleep(0.05)
    task.cancel()


def _watched(
    blocker: object, *, threshold_ms: float = 50.0, tick: float = 0.01, stalls: int = 1
) -> StallWatch:
    """A watch started, run over ``stalls`` calls of ``blocker`` and stopped."""
    watch = StallWatch(threshold_ms=threshold_ms, tick=tick)
    watch.start()
    try:
        asyncio.run(_run_with_watch(watch, blocker, stalls))
    finally:
        watch.stop()
    return watch


def test_a_stall_is_recorded_with_the_stack_that_caused_it() -> None:
    report = _watched(lambda: _spin_in_python(0.4)).report()
    assert report["stalls_seen"] >= 1
    longest = report["stalls"][0]
    assert longest["stall_ms"] >= 350
    assert longest["samples"] >= 1
    frames = [frame for stack in longest["stacks"] for frame in stack["frames"]]
    assert any("_spin_in_python" in frame for frame in frames), frames
    assert longest["loop_thread_cpu_ms"] > 0
    assert report["stalls_by_cpu"][0]["loop_thread_cpu_ms"] == max(
        stall["loop_thread_cpu_ms"] for stall in report["stalls"]
    )
    # its span on CLOCK_MONOTONIC and the cores it ran on, for the machine's witness
    start, end, cores, cpu_ms, preempted = report["spans"][-1]
    assert end - start >= 0.35 and start >= report["origin_s"]
    assert cpu_ms == longest["loop_thread_cpu_ms"] and preempted >= 0
    assert cores and set(cores) <= os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
    assert longest["loop_thread_cores"]
    # the host's steal time over the stall: a count of 10 ms ticks, never negative
    steal = longest["machine_steal_ms"]
    assert steal is not None and steal >= 0 and steal % stallwatch.TICK_MS == 0


def test_the_machine_steal_counter_reads_proc_stat() -> None:
    first = stallwatch.machine_steal()
    assert first >= 0
    assert stallwatch.machine_steal() >= first  # a counter since boot


def test_collections_are_matched_to_the_stall_they_happened_in() -> None:
    garbage = [[i] for i in range(200_000)]

    def collect_while_stalled() -> None:
        _spin_in_python(0.1)
        gc.collect()
        _spin_in_python(0.1)

    watch = _watched(collect_while_stalled)
    del garbage
    report = watch.report()
    longest = report["stalls"][0]
    full = [entry for entry in longest["gc"] if entry["generation"] == 2]
    assert full, longest
    assert full[0]["cpu_ms"] > 0
    assert report["gc_by_generation"]["2"]["count"] >= 1
    assert report["gc_by_generation"]["2"]["cpu_max_ms"] > 0


def test_what_it_keeps_is_bounded() -> None:
    watch = StallWatch(threshold_ms=20.0, tick=0.005)
    watch.start()
    try:
        asyncio.run(
            # each stall 100 ms past the threshold: a loaded machine may run the watchdog late
            _run_with_watch(watch, lambda: _spin_in_python(0.12), stalls=stallwatch.KEEP_STALLS + 5)
        )
    finally:
        watch.stop()
    report = watch.report()
    assert report["stalls_seen"] > stallwatch.KEEP_STALLS
    assert len(report["stalls"]) == stallwatch.KEEP_STALLS
    assert len(report["stalls_by_cpu"]) == stallwatch.KEEP_STALLS
    lengths = [stall["stall_ms"] for stall in report["stalls"]]
    assert lengths == sorted(lengths, reverse=True)
    assert len(report["gc_longest"]) <= stallwatch.KEEP_GC


def test_a_report_walks_none_of_the_collectors_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark asks for the report twice a second from another thread: walking the
    frozen generation (millions of objects, the GIL held) would stall the loop it watches."""

    def walks_the_heap() -> int:
        raise AssertionError("report() walked the frozen generation")

    monkeypatch.setattr(gc, "get_freeze_count", walks_the_heap)
    monkeypatch.setattr(gc, "get_objects", walks_the_heap)
    watch = StallWatch(threshold_ms=50.0, tick=0.01)
    watch.start()
    try:
        # 0.3 s: the watchdog must see the stall while it lasts (past the 50 ms threshold);
        # a 0.1 s stall left it a 40 ms window, missed once on a loaded machine (CI)
        asyncio.run(_run_with_watch(watch, lambda: _spin_in_python(0.3)))
        report = watch.report()
    finally:
        watch.stop()
    assert report["stalls_seen"] >= 1


def test_a_stall_spent_asleep_is_told_from_one_spent_running() -> None:
    asleep = _watched(lambda: time.sleep(0.3)).report()["stalls"][0]
    assert asleep["stall_ms"] >= 250
    assert asleep["loop_thread_slept"] >= 1  # a voluntary switch: it went to sleep
    assert asleep["loop_thread_cpu_ms"] < asleep["stall_ms"] / 2
    assert asleep["loop_thread_preempted"] >= 0 and asleep["loop_thread_minor_faults"] >= 0


def test_a_thread_that_ran_during_a_stall_is_named_with_its_cpu() -> None:
    """The loop sleeps while another thread of the process runs Python: the stall names that
    thread and the CPU it used (the evidence for a thread keeping the GIL from the loop)."""
    ran, release = threading.Event(), threading.Event()

    def spin_for_cpu() -> None:  # CPU, not wall time: a loaded machine may not run it at once
        while time.thread_time() < 0.1:
            _spin_in_python(0.01)
        ran.set()
        release.wait(30)  # alive (asleep) until the stall is reported: its CPU is read then

    hog = threading.Thread(target=spin_for_cpu, name="the-hog")

    def stall_while_another_thread_runs() -> None:
        hog.start()
        assert ran.wait(30)  # the loop is held until the hog has used 0.1 s of CPU

    watch = StallWatch(threshold_ms=50.0, tick=0.01)
    watch.start()
    try:
        asyncio.run(_run_with_watch(watch, stall_while_another_thread_runs))
    finally:
        watch.stop()
        release.set()
        hog.join()
    used = watch.report()["stalls"][0]["threads_cpu_ms"]
    hogs = [name for name in used if name.startswith("the-hog/")]
    assert hogs, used
    assert used[hogs[0]] > 0 and used[hogs[0]] % stallwatch.TICK_MS == 0


def test_a_stall_before_the_watchdogs_first_note_still_names_its_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog notes the threads' CPU every THREADS_EVERY wakes; a stall that ends
    before its first note is measured from the note ``start`` takes."""
    monkeypatch.setattr(stallwatch, "THREADS_EVERY", 10**9)  # the watchdog never notes
    used = _watched(lambda: _spin_in_python(0.3)).report()["stalls"][0]["threads_cpu_ms"]
    assert any(name.startswith("MainThread/") for name in used), used


def _hold_the_gil() -> int:
    """One C call that runs no bytecode, so no other thread gets the GIL (0.3-1 s)."""
    return sum(range(40_000_000))


def test_a_stall_in_one_call_that_keeps_the_gil_is_named_by_the_tripwire() -> None:
    """The watchdog cannot sample a stall that never lets go of the GIL; the tripwire's
    timer needs no GIL and names the Python line that made the call."""
    report = _watched(_hold_the_gil).report()
    assert report["trips"] >= 1
    stacks = [stack["frames"] for stack in report["trip_stacks"]]
    assert any(frames and frames[0].endswith(" _hold_the_gil") for frames in stacks), stacks


def test_no_tick_late_no_trip_and_the_tripwire_can_be_left_out() -> None:
    def quiet() -> None:
        pass

    assert _watched(quiet).report()["trips"] == 0
    watch = StallWatch(threshold_ms=50.0, tick=0.01, trip=False)
    watch.start()
    try:
        asyncio.run(_run_with_watch(watch, _hold_the_gil))
    finally:
        watch.stop()
    report = watch.report()
    assert report["trips"] == 0  # the same stall as above, no dump


def test_the_dumps_are_parsed_for_the_loop_thread_only() -> None:
    text = (
        "Timeout (0:00:00.060000)!\n"
        "Thread 0x00000000000000aa (most recent call first):\n"
        '  File "/srv/x/pysyncer/sync/other.py", line 3 in elsewhere\n'
        "\n"
        "Thread 0x00000000000000bb (most recent call first):\n"
        '  File "/srv/x/pysyncer/sync/importer.py", line 42 in _hold\n'
        '  File "/usr/lib/python3.11/asyncio/events.py", line 80 in _run\n'
        "Timeout (0:00:00.060000)!\n"
        "Thread 0x00000000000000aa (most recent call first):\n"
        '  File "/srv/x/pysyncer/sync/other.py", line 3 in elsewhere\n'
    )
    assert stallwatch.trip_stacks(text, 0xBB) == [
        ("pysyncer/sync/importer.py:42 _hold", "events.py:80 _run"),
        (),
    ]


def test_the_tripwire_is_re_armed_at_most_every_tick_plus_count_less_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-arming stops and starts faulthandler's thread: not at every tick, but as seldom
    as still catches every stall of ``count_ms``."""
    deadlines: list[float] = []
    arm = faulthandler.dump_traceback_later

    def counted(timeout: float, *, file: int) -> None:
        deadlines.append(timeout)
        arm(timeout, file=file)

    monkeypatch.setattr(faulthandler, "dump_traceback_later", counted)
    watch = StallWatch(threshold_ms=50.0, tick=0.01, count_ms=100.0)
    watch.start()
    ticks = 0

    async def healthy() -> None:
        nonlocal ticks
        began = time.monotonic()
        while time.monotonic() - began < 0.6:
            await asyncio.sleep(watch.tick_period)
            watch.tick()
            ticks += 1

    try:
        asyncio.run(healthy())
    finally:
        watch.stop()
    assert ticks >= 20
    assert deadlines == [pytest.approx(0.11)] * len(deadlines)  # a tick plus count_ms
    assert len(deadlines) <= 0.6 / 0.06 + 2 < ticks  # at most every 60 ms, the first at start
