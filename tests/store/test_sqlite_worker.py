"""The embedded store's worker thread: order, errors, cancellation, shared wake-ups."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from typing import Any

import pytest

from pysyncer.store.sqlite_worker import StoreWorker


def _constant(n: int) -> functools.partial[int]:
    return functools.partial(int, n)


async def test_calls_run_in_one_thread_in_order_and_return_their_results() -> None:
    worker = StoreWorker("test-store")
    seen: list[tuple[int, str]] = []

    def job(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    try:
        results = await asyncio.gather(*(worker.call(functools.partial(job, n)) for n in range(20)))
    finally:
        worker.stop()
    assert results == [n * n for n in range(20)]
    assert [n for n, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test-store"}


async def test_the_worker_keeps_nothing_of_a_call_once_it_is_answered() -> None:
    """Its arguments (a commit's mapping entries) must not live on in the idle worker until
    the next call: the importer freezes what is alive into the garbage collector's
    permanent generation."""

    class Payload:
        pass

    worker = StoreWorker("test-store")
    payload = Payload()
    gone = weakref.ref(payload)
    try:
        assert await worker.call(functools.partial(id, payload)) == id(payload)
        del payload
        for _ in range(50):  # the worker drops its references after it answers
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert gone() is None
    finally:
        worker.stop()


async def test_an_exception_reaches_its_caller_only() -> None:
    worker = StoreWorker("test-store")

    def fail() -> None:
        raise KeyError("boom")

    def stop_iteration() -> None:
        raise StopIteration

    try:
        failing = worker.call(fail)
        odd = worker.call(stop_iteration)
        fine = worker.call(lambda: "ok")
        with pytest.raises(KeyError, match="boom"):
            await failing
        with pytest.raises(RuntimeError, match="StopIteration"):
            await odd
        assert await fine == "ok"
    finally:
        worker.stop()


async def test_a_cancelled_call_still_runs_and_the_next_ones_are_answered() -> None:
    worker = StoreWorker("test-store")
    release = threading.Event()
    ran: list[str] = []

    def slow() -> str:
        release.wait(5)
        ran.append("slow")
        return "slow"

    try:
        call = asyncio.ensure_future(worker.call(slow))
        await asyncio.sleep(0)
        call.cancel()
        release.set()
        assert await worker.call(lambda: "after") == "after"
    finally:
        worker.stop()
    assert ran == ["slow"]  # at-least-once: the write happened, its answer was dropped
    assert call.cancelled()


async def test_results_finished_together_share_one_wake_up_of_the_loop() -> None:
    loop = asyncio.get_running_loop()
    worker = StoreWorker("test-store")
    wakes: list[Any] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        wakes.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    try:
        calls = [worker.call(_constant(n)) for n in range(50)]
        deadline = time.monotonic() + 10
        while len(worker._done) < 50:  # the loop is busy: the worker finishes every call
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert await asyncio.gather(*calls) == list(range(50))
        assert len(wakes) == 1
        assert await worker.call(lambda: "next") == "next"  # a later result wakes it again
        assert len(wakes) == 2
    finally:
        del loop.call_soon_threadsafe
        worker.stop()


async def test_stop_lets_the_submitted_calls_finish() -> None:
    worker = StoreWorker("test-store")
    ran: list[int] = []
    calls = [worker.call(functools.partial(ran.append, n)) for n in range(5)]
    worker.stop()
    assert ran == list(range(5))
    await asyncio.gather(*calls)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
async def test_the_worker_thread_yields_on_wake() -> None:
    worker = StoreWorker("test-store")
    try:
        policy = await worker.call(lambda: os.sched_getscheduler(0))
    finally:
        worker.stop()
    assert policy == os.SCHED_BATCH
    assert os.sched_getscheduler(0) != os.SCHED_BATCH  # the caller's thread is left alone
