"""The embedded store's one worker thread: calls in, results back to the event loop.

Owns the thread every SQLite call of :class:`~pysyncer.store.sqlite.SqliteStore` runs
in, and the hand-off of each call and its result between that thread and the event
loop. Knows nothing of SQL, the schema or the Store protocol: it runs callables, in
submission order, one at a time.

Why not ``loop.run_in_executor`` on a one-thread pool: the store is called once per
streamed batch (every peer link's apply, every exporter commit), and the pool's
hand-off cost more CPU than a small batch's transaction itself (a ``concurrent`` future
with its condition and lock, a work item, a thread-count check, an asyncio future
chained to it, a coroutine-function check of the callable, and one wake-up of the loop
per result). Here a call is one tuple put on a :class:`queue.SimpleQueue` and one
asyncio future; results are settled by one callback on the loop, which a busy worker
shares between all the results it finishes before the loop runs it.

A call whose caller was cancelled still runs (at-least-once, as before); its result is
dropped.

The thread runs under ``SCHED_BATCH`` (:func:`yield_on_wake`, Linux): woken by a call, it
does not preempt the event loop's thread on a busy core. Under the default policy it did,
while the loop's thread held the GIL: the worker then waited for the GIL, the loop's
thread for the core, and a store call's ``put`` was where the loop spent 16-20 % of its
GIL-held samples (``bench_host`` at 500 changes/s, py-spy ``--gil``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["StoreWorker", "yield_on_wake"]

_T = TypeVar("_T")

_Job = tuple[asyncio.Future[Any], Callable[[], Any]]
_Outcome = tuple[asyncio.Future[Any], bool, Any]  # (future, raised, result or exception)


class StoreWorker:
    """One thread running submitted callables in order; :meth:`call` awaits one."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Outcome] = collections.deque()
        self._waking = False  # a _settle callback is scheduled and has not started yet
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, job: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run ``job()`` in the worker thread; a future of its result (or exception)."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, job))
        return future

    def stop(self) -> None:
        """Let the jobs submitted so far finish, then end the thread (waits for it)."""
        self._jobs.put(None)
        self._thread.join()

    # -- the worker thread -----------------------------------------------------------

    def _run(self) -> None:
        yield_on_wake()
        jobs = self._jobs
        while True:
            item = jobs.get()
            if item is None:
                return
            future, job = item
            try:
                outcome: _Outcome = (future, False, job())
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (future, True, exc)
            self._finish(outcome)
            # not kept until the next call: the last one's arguments (a commit's mapping
            # entries) would live on, and the importer's garbage-collector freeze with them
            del item, future, job, outcome

    def _finish(self, outcome: _Outcome) -> None:
        """Queue a result for the loop; wake the loop unless a wake-up is still pending
        (then the callback already scheduled settles this result too)."""
        self._done.append(outcome)
        if self._waking:
            return
        self._waking = True
        try:
            outcome[0].get_loop().call_soon_threadsafe(self._settle)
        except RuntimeError:  # the loop is closed: nobody waits for the result
            self._waking = False

    # -- the event loop ----------------------------------------------------------------

    def _settle(self) -> None:
        """Settle every result finished so far (the flag is cleared first: a result the
        worker adds meanwhile either is taken here or schedules the next call)."""
        self._waking = False
        done = self._done
        loop = asyncio.get_running_loop()
        while done:
            outcome = done.popleft()
            future = outcome[0]
            if future.get_loop() is not loop:  # another loop's call (never in a daemon)
                future.get_loop().call_soon_threadsafe(_settle_one, outcome)
            else:
                _settle_one(outcome)


def yield_on_wake() -> None:
    """Put the calling thread under ``SCHED_BATCH``: when woken it waits for the running
    thread's turn to end instead of preempting it (Linux; elsewhere nothing changes)."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: this thread, on Linux


def _settle_one(outcome: _Outcome) -> None:
    future, raised, value = outcome
    if future.done():  # its caller was cancelled
        return
    if not raised:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # a future cannot carry one
        future.set_exception(RuntimeError(f"store call raised StopIteration: {value!r}"))
    else:
        future.set_exception(value)
