"""Why an event loop stalled: the loop thread's Python stack during each stall, and the GC.

Owns the evidence behind a benchmark's loop-stall figure. A task on the loop calls
:meth:`StallWatch.tick` after each short sleep; a watchdog thread wakes every
:data:`SAMPLE_EVERY` seconds and, while the loop is late by more than ``threshold_ms``,
samples the loop thread's stack (``sys._current_frames``), its scheduler state and the
other threads' innermost frames. When the loop ticks again the stall is closed: its
length, the loop thread's CPU since its last tick (also what a C call keeping the GIL,
and the watchdog out, ran before the stall could be opened) and its time queued for a
core (Linux schedstat): CPU near the wall time, it ran Python or C; queued, the machine
was loaded; neither, it slept (the GIL held by another thread, a lock, the disk) or its
virtual core was not run by the host: the machine's steal time over the stall
(``/proc/stat``, both cores, 10 ms ticks) says which; the garbage
collections that overlapped it (``gc.callbacks``) and its most frequent stacks. Only the
:data:`KEEP_STALLS` longest stalls are kept (and as many of those in which the loop
thread used the most CPU), each with at most :data:`KEEP_STACKS` stacks
of :data:`STACK_DEPTH` frames; the GC log is a ring of :data:`GC_RING` collections.
Every stall over ``count_ms`` is also kept as its span on ``CLOCK_MONOTONIC`` and the cores
the loop thread was seen on (the last :data:`KEEP_SPANS`), for a benchmark to hold against
the machine's own pauses (:mod:`benchmarks.witness`). Every thread's CPU over a stall
(noted every :data:`THREADS_EVERY` wakes) names a thread that kept the GIL from the loop.
Everything is bounded, whatever the run's length.

A sample needs the GIL: a stall inside one long C call (a full collection, a native
call that keeps the GIL) shows as few samples and a gap between them
(``longest_sample_gap_ms``), and the GC record names collections. So each tick also arms
a tripwire, :mod:`faulthandler`'s own timer thread, which needs no GIL: a tick later than
``threshold_ms`` past its due time makes it write every thread's Python stack to a file,
whatever the loop thread holds; the report gives the loop thread's stacks from those
dumps (``trips``, ``trip_stacks``). Re-arming stops and starts faulthandler's thread,
and the loop thread waits for the old one to end: 80 us per tick on an idle machine, up
to ~4 % of the loop thread's samples in a busy 1,000,000-copy sync when it was re-armed at
every tick. So it is re-armed at most every ``tick + count_ms - threshold_ms`` with a
deadline of ``tick + count_ms``: a stall of ``count_ms`` or more always trips it, a shorter
one over ``threshold_ms`` when it falls late enough after the last re-arm. Standard
library only; it must not import pysyncer.
"""

from __future__ import annotations

import collections
import faulthandler
import gc
import heapq
import itertools
import os
import resource
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = ["SAMPLE_EVERY", "StallWatch"]

SAMPLE_EVERY = 0.01  # the watchdog's period, seconds
KEEP_STALLS = 10  # the longest stalls kept
KEEP_STACKS = 5  # distinct stacks kept per stall (the most sampled)
STACK_DEPTH = 14  # innermost frames kept per stack
GC_RING = 512  # collections remembered for matching to stalls
STEAL_RING = 64  # the watchdog's readings of the machine's steal time (the last ~0.6 s)
TICK_MS = 10.0  # /proc counts CPU and steal time in USER_HZ ticks (100 per second)
KEEP_GC = 10  # the longest collections reported
KEEP_SPANS = 4096  # the last stalls over ``count_ms`` kept as (start, end, cores)
THREADS_EVERY = 10  # every this many wakes the watchdog notes each thread's CPU (~0.1 s)
THREADS_RING = 16  # those notes kept (the last ~1.6 s)


def machine_steal() -> int:
    """Ticks the host ran something else on this machine's virtual cores (all cores), or
    0 where ``/proc/stat`` has no steal column."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return 0


def threads_cpu() -> dict[int, tuple[str, int]]:
    """Each thread of this process: its kernel name and CPU so far (USER_HZ ticks, user
    and system), from ``/proc/self/task`` (empty where there is none)."""
    found: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                text = stat.read()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            found[int(tid)] = (name, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _short(path: str) -> str:
    cut = path.rfind("pysyncer/")
    return path[cut:] if cut >= 0 else path.rsplit("/", 2)[-1]


def _where(frame: Any) -> str:
    code = frame.f_code
    return f"{_short(code.co_filename)}:{frame.f_lineno} {code.co_name}"


def _stack(frame: Any) -> tuple[str, ...]:
    frames: list[str] = []
    while frame is not None and len(frames) < STACK_DEPTH:
        frames.append(_where(frame))
        frame = frame.f_back
    return tuple(frames)


def trip_stacks(text: str, thread: int) -> list[tuple[str, ...]]:
    """The stacks of ``thread`` (a ``threading.get_ident()``) in ``text``, complete
    :func:`faulthandler.dump_traceback_later` dumps (each begins ``Timeout (``; a thread's
    block ``Thread 0x...`` then one ``  File "path", line N in name`` per frame, innermost
    first), as :func:`_stack` writes them; a dump without that thread gives ``()``."""
    stacks: list[tuple[str, ...]] = []
    wanted = False
    frames: list[str] = []
    for line in text.splitlines():
        if line.startswith("Timeout ("):
            stacks.append(())
            wanted = False
        elif line.startswith(("Thread 0x", "Current thread 0x")):
            wanted = int(line.split("0x", 1)[1].split()[0], 16) == thread
            frames = []
        elif wanted and stacks and line.startswith('  File "'):
            path, _, rest = line[len('  File "') :].rpartition('", line ')
            number, _, name = rest.partition(" in ")
            if len(frames) < STACK_DEPTH:
                frames.append(f"{_short(path)}:{number} {name}")
                stacks[-1] = tuple(frames)
    return stacks


class _Stall:
    """One stall being sampled."""

    __slots__ = (
        "began",
        "cores",
        "faults_began",
        "gap",
        "last_sample",
        "others",
        "queued_began",
        "samples",
        "stacks",
        "states",
    )

    def __init__(self, began: float, queued_began: float, faults_began: int) -> None:
        self.began = began
        self.faults_began = faults_began
        self.queued_began = queued_began
        self.samples = 0
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.states: collections.Counter[str] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()
        self.last_sample = time.monotonic()
        self.gap = 0.0
        self.cores: set[int] = set()  # the cores the loop thread was seen on


def _unnamed_file() -> int:
    """A descriptor of a new file that no directory names (gone when closed)."""
    fd, path = tempfile.mkstemp(prefix="stallwatch-")
    os.unlink(path)
    return fd


# A stall over count_ms: (start, end, the loop thread's cores, its CPU ms, times preempted).
_Span = tuple[float, float, list[int], float, int]


def _thread_usage() -> tuple[int, int, int]:
    """The calling thread's involuntary and voluntary context switches and minor faults
    (zeros where ``RUSAGE_THREAD`` does not exist)."""
    try:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
    except (AttributeError, OSError):
        return (0, 0, 0)
    return (usage.ru_nivcsw, usage.ru_nvcsw, usage.ru_minflt)


# A collection: (start, end, generation, objects collected, in the loop thread, CPU s).
_GcEntry = tuple[float, float, int, int, bool, float]


def _keep(heap: list[tuple[float, int, dict[str, Any]]], entry: tuple[float, int, Any]) -> None:
    """Keep ``entry`` in ``heap`` if it is among the :data:`KEEP_STALLS` largest."""
    if len(heap) < KEEP_STALLS:
        heapq.heappush(heap, entry)
    elif entry[0] > heap[0][0]:
        heapq.heapreplace(heap, entry)


class StallWatch:
    """A watchdog over the loop running in the thread that creates it."""

    def __init__(
        self,
        threshold_ms: float = 50.0,
        tick: float = 0.01,
        count_ms: float = 100.0,
        *,
        trip: bool = True,
    ) -> None:
        self.threshold = threshold_ms / 1000
        self.count_limit = count_ms / 1000
        self.tick_period = tick
        self._loop_thread = threading.get_ident()
        task = f"/proc/self/task/{threading.get_native_id()}"
        self._schedstat = f"{task}/schedstat"
        self._stat = f"{task}/stat"
        self._origin = time.monotonic()  # stalls' ``at_s`` count from here
        self._due = self._origin + tick  # when the loop's next tick is expected
        self._tick_cpu = time.thread_time()  # the loop thread's CPU at its last tick
        self._tick_usage = _thread_usage()  # and its context switches and minor faults
        self._current: _Stall | None = None
        self._kept: list[tuple[float, int, dict[str, Any]]] = []  # min-heap by stall ms
        self._kept_cpu: list[tuple[float, int, dict[str, Any]]] = []  # by loop-thread CPU
        self._order = itertools.count()
        self._closed = 0
        # (start, end, cores) of the last stalls over ``count_ms``, CLOCK_MONOTONIC seconds
        self._spans: collections.deque[_Span] = collections.deque(maxlen=KEEP_SPANS)
        self._lock = threading.Lock()
        self._gc_ring: collections.deque[_GcEntry] = collections.deque(maxlen=GC_RING)
        # (monotonic time, steal ticks), read by the watchdog on every wake
        self._steal: collections.deque[tuple[float, int]] = collections.deque(maxlen=STEAL_RING)
        # (monotonic time, {thread id: (name, CPU ticks)}), noted every THREADS_EVERY wakes
        self._threads: collections.deque[tuple[float, dict[int, tuple[str, int]]]] = (
            collections.deque(maxlen=THREADS_RING)
        )
        self._gc_longest: list[tuple[float, int, dict[str, Any]]] = []
        # generation -> [count, total, max, CPU total, CPU max] (seconds)
        self._gc_totals: dict[int, list[float]] = {}
        self._gc_began = 0.0
        self._gc_cpu_began = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        # the tripwire's dumps, an unnamed file: faulthandler writes at the descriptor's
        # offset, so it is only ever read with pread; parsed up to ``_trip_read``,
        # ``_trip_size`` at the last look; closed by stop() (None: no tripwire)
        self._trip_fd = _unnamed_file() if trip else None
        self._tripwire = trip
        self._trip_deadline = tick + self.count_limit
        self._trip_every = max(tick, self._trip_deadline - self.threshold)
        self._armed_at = -self._trip_every  # when the tripwire was last (re-)armed
        self._trip_read = self._trip_size = 0
        self._trip_stacks: collections.Counter[tuple[str, ...]] = collections.Counter()

    # -- the loop's side ---------------------------------------------------------------

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        # A first note of the threads' CPU now: a stall before the watchdog's first note
        # (THREADS_EVERY wakes in, later on a loaded machine) still names its threads.
        self._threads.append((time.monotonic(), threads_cpu()))
        self._thread.start()
        self._arm(time.monotonic())

    def stop(self) -> None:
        if self._trip_fd is not None:
            faulthandler.cancel_dump_traceback_later()
        self._stop.set()
        self._thread.join(1.0)
        self._read_trips()
        with self._lock:
            fd, self._trip_fd = self._trip_fd, None
        if fd is not None:
            os.close(fd)
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def tick(self) -> None:
        """The loop ran its timer: a stall in progress ends here."""
        now = time.monotonic()
        # the loop thread's CPU since the last tick: also what it ran before the watchdog
        # could open the stall (a C call keeping the GIL keeps the watchdog out)
        cpu, self._tick_cpu = self._tick_cpu, time.thread_time()
        usage, self._tick_usage = self._tick_usage, _thread_usage()
        with self._lock:
            stall, self._current = self._current, None
            due, self._due = self._due, now + self.tick_period
        if stall is not None:
            switches = [b - a for b, a in zip(self._tick_usage, usage, strict=True)]
            self._close(stall, due, now, self._tick_cpu - cpu, switches)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """The tripwire: every thread's stack dumped if no tick re-arms it within
        ``tick + count_ms`` (re-arming cancels the one before; at most every
        ``tick + count_ms - threshold_ms``: see the module's docstring)."""
        fd = self._trip_fd
        if fd is None or self._stop.is_set() or now - self._armed_at < self._trip_every:
            return
        self._armed_at = now
        faulthandler.dump_traceback_later(self._trip_deadline, file=fd)

    # -- the watchdog thread -----------------------------------------------------------

    def _watch(self) -> None:
        wakes = 0
        while not self._stop.wait(SAMPLE_EVERY):
            now = time.monotonic()
            self._steal.append((now, machine_steal()))
            wakes += 1
            if wakes % THREADS_EVERY == 0:
                self._threads.append((now, threads_cpu()))
            with self._lock:
                due = self._due
                if now - due <= self.threshold:
                    continue
                stall = self._current
                if stall is None:
                    stall = self._current = _Stall(due, self._queued(), self._major_faults())
            state, core = self._where_it_is()
            frames = sys._current_frames()
            frame = frames.pop(self._loop_thread, None)
            frames.pop(threading.get_ident(), None)
            stack = _stack(frame) if frame is not None else ()
            others = [_where(other) for other in frames.values()]
            del frame, frames
            now = time.monotonic()
            with self._lock:
                if self._current is stall:
                    stall.samples += 1
                    stall.gap = max(stall.gap, now - stall.last_sample)
                    stall.last_sample = now
                    stall.stacks[stack] += 1
                    stall.states[state] += 1
                    stall.others.update(others)
                    if core is not None:
                        stall.cores.add(core)

    def _queued(self) -> float:
        """Seconds the loop thread has waited on a run queue for a core (0: not Linux)."""
        try:
            with open(self._schedstat) as stat:
                return int(stat.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def _major_faults(self) -> int:
        """The loop thread's page faults that had to read from disk (0: not Linux): a
        page of a file (code, a mapped file) the kernel dropped and must read again."""
        try:
            with open(self._stat) as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[9])
        except (OSError, IndexError, ValueError):
            return 0

    def _where_it_is(self) -> tuple[str, int | None]:
        """The loop thread's scheduler state (R running or runnable, S sleeping: a lock,
        the GIL, a poll; D waiting for the disk; ? unknown) and the core it last ran on."""
        try:
            with open(self._stat) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return "?", None
        try:
            return fields[0], int(fields[36])
        except (IndexError, ValueError):
            return fields[0] if fields else "?", None

    def _close(
        self, stall: _Stall, due: float, ended: float, cpu: float, switches: list[int]
    ) -> None:
        lasted = ended - due
        gcs = [
            {
                "generation": gen,
                "ms": round(1000 * (end - start), 1),
                "cpu_ms": round(1000 * cpu, 1),
                "collected": collected,
                "in_loop_thread": in_loop,
            }
            for start, end, gen, collected, in_loop, cpu in self._gc_log()
            if end > due and start < ended
        ]
        core = self._where_it_is()[1]
        if core is not None:
            stall.cores.add(core)
        readings = list(self._steal)
        before = [ticks for at, ticks in readings if at <= due]
        steal_began = before[-1] if before else (readings[0][1] if readings else None)
        record: dict[str, Any] = {
            "stall_ms": round(1000 * lasted, 1),
            "at_s": round(due - self._origin, 3),
            "loop_thread_cores": sorted(stall.cores),
            "loop_thread_cpu_ms": round(1000 * cpu, 1),
            "loop_thread_queued_ms": round(1000 * (self._queued() - stall.queued_began), 1),
            "loop_thread_states": dict(stall.states),
            "loop_thread_major_faults": self._major_faults() - stall.faults_began,
            # since the last tick: switched out while runnable (another thread or process
            # took the core), went to sleep (the GIL, a lock, a poll, the disk), page
            # faults served without the disk
            "loop_thread_preempted": switches[0],
            "loop_thread_slept": switches[1],
            "loop_thread_minor_faults": switches[2],
            "other_threads": dict(stall.others.most_common(KEEP_STACKS)),
            # every thread's CPU from the watchdog's last note before the stall to its end
            # (10 ms ticks): a thread that kept the GIL from the loop shows here by name
            "threads_cpu_ms": self._threads_cpu_over(due),
            "samples": stall.samples,
            "longest_sample_gap_ms": round(1000 * stall.gap, 1),
            # the host's: both virtual cores, from the watchdog's last reading before the
            # stall began (None: no reading yet)
            "machine_steal_ms": (
                None if steal_began is None else round(TICK_MS * (machine_steal() - steal_began), 1)
            ),
            "gc_ms": round(sum(g["ms"] for g in gcs), 1),
            "gc": gcs[:KEEP_STACKS],
            "stacks": [
                {"count": count, "frames": list(frames)}
                for frames, count in stall.stacks.most_common(KEEP_STACKS)
            ],
        }
        with self._lock:
            self._closed += 1
            if lasted > self.count_limit:
                self._spans.append(
                    (due, ended, sorted(stall.cores), round(1000 * cpu, 1), switches[0])
                )
            _keep(self._kept, (lasted, next(self._order), record))
            _keep(self._kept_cpu, (cpu, next(self._order), record))

    def _threads_cpu_over(self, due: float) -> dict[str, float]:
        """The threads that used CPU since the last note before ``due``, most first."""
        notes = list(self._threads)
        before = [cpu for at, cpu in notes if at <= due]
        if not before and not notes:
            return {}
        began = before[-1] if before else notes[0][1]
        named = {thread.native_id: thread.name for thread in threading.enumerate()}
        used: collections.Counter[str] = collections.Counter()
        for tid, (comm, ticks) in threads_cpu().items():
            spent = ticks - began.get(tid, (comm, 0))[1]
            if spent > 0:
                used[f"{named.get(tid, comm)}/{tid}"] += spent
        return {name: TICK_MS * ticks for name, ticks in used.most_common(KEEP_STACKS)}

    # -- the garbage collector ---------------------------------------------------------

    def _gc_log(self) -> list[_GcEntry]:
        """The GC ring, copied (a collection in the copy's own allocations appends to it:
        try again; the callback must not take a lock another thread may hold)."""
        for _ in range(5):
            try:
                return list(self._gc_ring)
            except RuntimeError:
                continue
        return []

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        cpu_now = time.thread_time()  # a collection runs in one thread, start to stop
        if phase == "start":
            self._gc_began = now
            self._gc_cpu_began = cpu_now
            return
        generation = info.get("generation", -1)
        took = now - self._gc_began
        cpu = cpu_now - self._gc_cpu_began
        in_loop = threading.get_ident() == self._loop_thread
        collected = info.get("collected", 0)
        self._gc_ring.append((self._gc_began, now, generation, collected, in_loop, cpu))
        totals = self._gc_totals.setdefault(generation, [0, 0.0, 0.0, 0.0, 0.0])
        totals[0] += 1
        totals[1] += took
        totals[2] = max(totals[2], took)
        totals[3] += cpu
        totals[4] = max(totals[4], cpu)
        if len(self._gc_longest) < KEEP_GC or took > self._gc_longest[0][0]:
            entry = (
                took,
                next(self._order),
                {
                    "generation": generation,
                    "ms": round(1000 * took, 1),
                    "cpu_ms": round(1000 * cpu, 1),
                    "at_s": round(now - self._origin, 3),
                },
            )
            if len(self._gc_longest) < KEEP_GC:
                heapq.heappush(self._gc_longest, entry)
            else:
                heapq.heapreplace(self._gc_longest, entry)

    # -- the report --------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The kept stalls (longest first) and the GC figures, JSON-ready. Cheap, whatever
        the heap: nothing here walks the collector's lists (``gc.get_freeze_count()`` walks
        every frozen object with the GIL held: at 1,000,000 copies, called twice a second
        from the benchmark's writer thread, it stalled the loop for up to a second)."""
        self._read_trips()
        with self._lock:
            kept = sorted(self._kept, key=lambda e: -e[0])
            kept_cpu = sorted(self._kept_cpu, key=lambda e: -e[0])
            closed = self._closed
            spans = [[round(a, 6), round(b, 6), *rest] for a, b, *rest in self._spans]
        longest_gc = sorted(list(self._gc_longest), key=lambda e: -e[0])
        return {
            "threshold_ms": round(1000 * self.threshold, 1),
            "stalls_seen": closed,
            # every stall over count_ms (the last KEEP_SPANS): CLOCK_MONOTONIC start and end,
            # the cores the loop thread was seen on, its CPU ms since the tick before and how
            # often it was switched out while runnable; "origin_s" is the clock at at_s = 0
            "count_ms": round(1000 * self.count_limit, 1),
            "origin_s": round(self._origin, 6),
            "spans": spans,
            "stalls": [record for _, _, record in kept],
            # the stalls in which the loop thread itself ran longest: on a loaded machine
            # the longest on the wall clock are mostly waits for a core
            "stalls_by_cpu": [record for _, _, record in kept_cpu],
            "gc_by_generation": {
                str(gen): {
                    "count": int(c),
                    "total_ms": round(1000 * t),
                    "max_ms": round(1000 * m),
                    "cpu_total_ms": round(1000 * ct),
                    "cpu_max_ms": round(1000 * cm, 1),
                }
                for gen, (c, t, m, ct, cm) in sorted(list(self._gc_totals.items()))
            },
            "gc_longest": [record for _, _, record in longest_gc],
            # the tripwire: stalls it caught (every one over count_ms), the loop thread's stacks
            # when it fired (a C call keeping the GIL shows as the Python line calling it)
            "tripwire": self._tripwire,  # armed at all (False: trips are not looked for)
            "trips": sum(self._trip_stacks.values()),
            "trip_stacks": [
                {"count": count, "frames": list(frames)}
                for frames, count in self._trip_stacks.most_common(KEEP_STACKS)
            ],
        }

    def _read_trips(self) -> None:
        """Parse the tripwire's dumps written since the last look: every complete one (a
        dump is complete once another begins after it, or the file has not grown since
        the last look, or the watch is stopped)."""
        with self._lock:
            fd = self._trip_fd
            if fd is None:
                return
            size = os.fstat(fd).st_size
            settled = size == self._trip_size or self._stop.is_set()
            self._trip_size = size
            data = os.pread(fd, size - self._trip_read, self._trip_read)
            end = len(data) if settled else data.rfind(b"Timeout (")
            if end <= 0:
                return
            self._trip_read += end
            for stack in trip_stacks(data[:end].decode(errors="replace"), self._loop_thread):
                self._trip_stacks[stack] += 1
