"""One host of the 8 x 100,000 full mesh: the syncer under test on a core of its own.

``benchmarks/bench_mesh.py`` runs all eight daemons of the issue's mesh on this machine
and saturates its two cores long before 500 changes/s per data center; in production each
syncer has a host of its own. This benchmark measures what decides the target there: one
syncer **U** doing its full share of the mesh's work on one core.

- **U**: bench_sync's origin helper (a real ``Daemon`` in its own process, filled with
  ``--instances`` instances of its own through the embedded registry's Python API), with
  every thread pinned to CPU ``U_CPU`` alone: the benchmark's thread spawning it holds
  that affinity for the spawn, so the process inherits it (no ``preexec_fn``: procs
  spawns through ``setpriv``). It ends up holding ``--peers`` x ``--instances`` copies.
- **Peers** P1..P``--peers``: origin helpers too (``--instances`` each), joined to U's
  gossip pool, with ``direction = "send"``: each exports its instances and its changes to
  U over the Watch stream U opens, and imports nothing. What belongs to a peer's own
  host stays off U's: its instances are kept alive by one registry holder renewed every
  30 s (origin helper ``--clients-held``: its clients' heartbeats reach its own registry,
  not U's host; they were a fifth of a peer's CPU), and its data directory is in memory
  (``PEERS_DISK``) rather than on U's disk.
- **Followers**: U exports to ``--peers`` Watch streams, opened by a thread of this
  process exactly as a peer's syncer opens its stream to U; each record is timestamped on
  receipt. A peer's import of U's changes (its importer, its registry writes) is its own
  host's cost, not U's: two cores cannot carry seven full syncers beside U (a first
  version with the peers importing U's changes kept CPU ``REST_CPU`` saturated from
  100/s on, with U at a third of its core).
- **The measured peer** P1 goes first on the shared core: P2..P``--peers`` (the load
  peers) run ``LOAD_PEER_NICE`` lower (every thread, from the sweep on). In the mesh
  each peer has a host of its own; P1 stands for one, its registry write -> commit
  taking what it would there, while the load peers still deliver their full rate into U
  (``peer_achieved_rate_min``) and lag among themselves as they must on one core. The
  verdict is about P1's changes into U (``measured_``); every peer's (``in_``) is
  reported beside it. Before this, seven peers at one priority held CPU ``REST_CPU`` at
  82-91 % at 500/s, and their store work falling due at one instant put p99 tails of
  106-280 ms into the peers' own part in one sweep of five.
- The peers, the followers, this process and all their threads run on CPU ``REST_CPU``.
  At 500/s per dc the peers and this process need about that whole core. Once the daemons
  run, this process lowers its priority by ``CLIENT_NICE`` (the followers' and the REST
  writes' threads inherit it), so the emulated data centers' exporters go first: the
  verdict is about the path into U, and a harness delaying a peer's export adds latency no
  peer host would have. The price: U's REST writes may fall short of the offered rate
  (``u_achieved_rate``; 380-430/s at 500/s here), and the followers' receipts come late
  (the figures out of U are pessimistic). With only the followers niced, the REST writes
  kept 500/s but CPU ``REST_CPU`` saturated and the followers fell seconds behind.
- **Churn**, per rate of ``--rate`` (ascending, one pool), from one instant: (a) every
  peer registers ``--changes`` new instances at that rate in process through its
  embedded registry's Python API (bench_sync's ``churn`` command on its stdin: the REST
  cost of a peer's own writes belongs to the peer's host), then deletes them at the rate;
  (b) this process registers ``--changes`` instances at U through U's REST API at the
  rate (bench_sync's ``drive``, ``CONCURRENCY`` requests in flight), then deletes them;
  (c) U follows its own registry's change feed in process (a ``churn`` command with
  nothing to write) and timestamps the peers' copies created and deleted and its own
  REST writes landing. So U imports ``--peers`` x rate changes/s, takes rate changes/s
  through its REST API and exports them on ``--peers`` streams: at the target, 7 x 500
  + 500. Every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every
  process of the host).

Reported per rate: **into U** (a peer's registry write -> the copy created / deleted in
U's registry): p50/p99 of register->visible and delete->gone and the counts (every copy
must arrive and leave, else ``failed``), from the measured peer (``measured_``: what the
verdict against 20 / 100 ms is about; this path crosses its exporter on the shared core,
then U under its whole load) and from every peer (``in_``); **out of U** (U's registry
write of a REST registration or deletion -> a follower received the record): p50/p99 and
counts, the receipt timed on the shared core; the
achieved rates (U's REST writes, the slowest peer's); **U's share of its core** over the
churn window (``/proc/PID/stat``) and per change it handled, above its idle share
measured before the sweep (``--idle-window``, by default a renew round of its copies);
**CPU ``REST_CPU``'s busy share** (``/proc/stat``; the peers' and this process's CPU
seconds beside it): near 1, the shared core was saturated and the figures are
pessimistic; the load average. The figures into U are the upper bound of what U adds:
they include a peer's export on a loaded core. **Split at the origin's commit** (each
exporter's commit time of each change, read from it after the phase): a peer's part (its
registry write -> its exporter's commit, on the shared core) and the rest into U (that
commit -> the copy in U's registry); U's own origin part (its registry's feed showing a
REST write -> U's commit, on U's core under its whole load); and **composed**, U's origin
part plus the rest into U, each value of the latter with one of the former drawn at
random: a change between two hosts that each carry a whole syncer's share, as in the
mesh. A composition of two measured parts, not one measured path: the verdict stays the
one from the measured peer into U (``meets_target``); ``composed_meets_target`` is
reported beside it.

Sizing: the peak RSS of every daemon is estimated with bench_mesh's model before anything
starts (U as a daemon of a mesh of ``--peers`` + 1, a peer as one holding one data
center's copies: more than a sender needs) and a size over ``MEMORY_SHARE`` of
MemAvailable is refused (exit 2). Every wait is bounded: the initial sync (every helper
filled, U maps every copy) by ``--sync-bound`` (default: ``SYNC_BOUND_FACTOR`` times the
estimated CPU of the sync over the two cores, at least ``--bound``), each churn wait by
``--bound``. Progress lines go to stderr; every daemon is stopped on every way out; exit
1 when the pool did not sync.

    python -m benchmarks.bench_host [--instances 100000] [--peers 7] [--rate 100,250,500]
        [--changes 2000] [--bound 120] [--sync-bound S] [--idle-window S] [--json]

``--json`` prints one flat object: ``instances_per_dc``, ``peers``, ``rates_per_dc``,
``changes_per_dc``, ``u_cpu``, ``rest_cpu``, ``cpus``, ``load_avg_start``,
``load_avg_end``, ``mem_available_mib``, ``estimated_rss_mib_u``,
``estimated_rss_mib_total``, ``sync_bound_s``, ``u_copies_expected``, ``u_sync_s`` and
``peers_sync_s`` (from the last spawn), ``u_fill_s``, ``sync_failed``,
``u_copies_mapped``, ``u_sync_cpu_s``, ``u_rss_mib``, ``u_hwm_mib``, ``peer_rss_mib_max``,
``u_pinned`` and ``rest_pinned`` (1: every thread's affinity was its CPU alone),
``peers_data_in_memory`` (1: the peers' data directories were under ``PEERS_DISK``),
``idle_window_s``, ``u_idle_share``, ``rest_cpu_idle_busy``, ``sustainable_rate_per_dc``
(the highest rate up to which every rate met the target into U; 0: none); per rate R
(``r<R>_`` prefix, bench_mesh's ``rate_key``): ``in_visible_p50_ms``,
``in_visible_p99_ms``, ``in_visible_max_ms``, ``in_visible_count``, ``in_gone_p50_ms``,
``in_gone_p99_ms``, ``in_gone_max_ms``, ``in_gone_count``, ``in_expected``, ``out_``
the same, ``out_expected``, ``offered_rate_per_dc``, ``u_achieved_rate``,
``peer_achieved_rate_min``, ``window_s``, ``u_cpu_s``, ``u_cpu_share``,
``u_cpu_per_change_ms`` (above idle, per change U imported or registered),
``measured_visible_`` and ``measured_gone_`` with ``p50_ms``, ``p99_ms``, ``max_ms``,
``count`` and ``measured_expected`` (the measured peer's changes into U),
``load_peers_nice`` (the load peers' main threads' nice value as the phase ran),
``peers_cpu_s``, ``client_cpu_s`` (this process), ``rest_cpu_busy``, ``u_core_busy``
(CPU ``U_CPU``) and ``u_core_others`` (its busy share not U's: other processes of the
machine, which pinning U does not keep away), ``load_avg``,
``u_stall_max_ms``, ``u_stalls_over_100ms`` and ``u_stalled_ms`` (U's event loop over the
phase: a 10 ms sleep in U waking late, stalls of bench_sync's ``LAG_NOTE_MS`` or more),
``u_link_lag_p50_le_ms`` and ``u_link_lag_p99_le_ms`` (the bucket bound of U's peer
links' histogram from a peer's exporter committing a batch to U applying it, which holds
half / 99 % of the phase's batches: the part of "into U" after the peer's own delay),
``peer_stall_max_ms`` (the worst stall of a peer's event loop, sampled as U's),
``in_origin_``, ``in_after_``, ``u_origin_`` and ``composed_`` each with ``visible_`` and
``gone_`` then ``p50_ms``, ``p99_ms``, ``max_ms``, ``count`` (the split above),
``composed_meets_target``, ``all_peers_meet_target`` (every peer's changes into U),
``meets_target`` (the measured peer's), ``failed``; ``target_p50_ms``,
``target_p99_ms``, ``target_rate_per_dc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._harness import MIB, cpu_ticks, load_average, mem_available
from benchmarks.bench_mesh import (
    ACHIEVED_SHARE,
    BIG_POOL_COPIES,
    CPU_PER_COPY_S,
    CPU_PER_OWN_S,
    IDLE_WINDOW_S,
    MEMORY_SHARE,
    MESH_SERVICES,
    POOL_BOUND_S,
    RENEW_ROUND_S,
    RSS_PER_PEER,
    SYNC_BOUND_FACTOR,
    TARGET_P50_MS,
    TARGET_P99_MS,
    TARGET_RATE,
    change_jobs,
    check_alive,
    create_services,
    estimate,
    idle_rate,
    numbers,
    rate_key,
    read_helper,
    sync_mesh,
    with_fresh_ports,
)
from benchmarks.bench_sync import (
    CHURN_SERVICES,
    LAG_NOTE_MS,
    Node,
    Propagation,
    drive,
    percentiles,
    pool_formed,
    proc_cpu,
    proc_mem,
    registry_quota,
)
from pysyncer import procs
from pysyncer.procs import loopback_host

U_CPU = 0  # the syncer under test, alone
REST_CPU = 1  # the peers, this benchmark and its threads
U_NAME = "u"
CONCURRENCY = 8  # REST requests in flight at U (as bench_mesh)
CLIENT_NICE = 10  # this process once the daemons run: the peers go first on the shared core
LOAD_PEER_NICE = 10  # every peer but the measured one (the first), from the sweep on
CHURN_MARGIN_S = 1.0  # the churn starts this long after its commands are sent
# The peers' data directories: memory when there is a tmpfs here. A peer's disk is its own
# host's. On U's disk, seven stores filled alike write back their WALs together, and ext4
# holds every fsync behind such writeback (here, one 224 MiB write held eight processes'
# small fsyncs up to 125 ms); each peer's exporter fsyncs every commit.
PEERS_DISK = Path("/dev/shm")


def progress(text: str) -> None:
    print(f"[bench_host {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """The calling thread on ``cpu`` alone meanwhile (a process spawned then inherits it),
    then back on ``REST_CPU``."""
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, {REST_CPU})


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` at ``nice`` (on Linux a thread's nice value is its own, and
    a thread it starts inherits it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def pinned_to(pid: int, cpu: int) -> bool:
    """Whether every thread of ``pid`` may run on ``cpu`` only."""
    tasks = Path(f"/proc/{pid}/task")
    return all(os.sched_getaffinity(int(t.name)) == {cpu} for t in tasks.iterdir())


# -- sizing --------------------------------------------------------------------------------


def host_estimate(args: argparse.Namespace) -> dict[str, float]:
    """U's peak RSS (a daemon of a full mesh of ``--peers`` + 1), a peer's (one data
    center's copies, links to every other peer), all of them, and the sync's CPU."""
    mesh, pair = estimate(args.peers + 1, args.instances), estimate(2, args.instances)
    peer = pair["rss_per_daemon"] + (args.peers - 1) * RSS_PER_PEER
    copies = 2 * args.peers * args.instances  # U's, and U's instances at each peer
    own = (args.peers + 1) * args.instances
    return {
        "rss_u": mesh["rss_per_daemon"],
        "rss_total": mesh["rss_per_daemon"] + args.peers * peer,
        "sync_cpu_s": copies * CPU_PER_COPY_S + own * CPU_PER_OWN_S,
    }


def preflight(args: argparse.Namespace) -> dict[str, float]:
    """Print the estimate and bounds; ValueError when the pool does not fit memory or the
    machine has no two CPUs for this process."""
    allowed = os.sched_getaffinity(0)
    if not {U_CPU, REST_CPU} <= allowed:
        raise ValueError(f"CPUs {U_CPU} and {REST_CPU} are needed, this process may use {allowed}")
    need = host_estimate(args)
    need["sync_bound_s"] = args.sync_bound or max(
        args.bound, SYNC_BOUND_FACTOR * need["sync_cpu_s"] / 2
    )
    free = mem_available()
    progress(
        f"U + {args.peers} peers x {args.instances} instances: U holds "
        f"{args.peers * args.instances:,} copies, ~{need['rss_u'] / MIB:.0f} MiB peak RSS; "
        f"~{need['rss_total'] / MIB:.0f} MiB in all (available {free / MIB:.0f} MiB); sync "
        f"~{need['sync_cpu_s']:.0f} CPU s, bounded at {need['sync_bound_s']:.0f} s"
    )
    if need["rss_total"] > MEMORY_SHARE * free:
        raise ValueError(
            f"~{need['rss_total'] / MIB:.0f} MiB needed, more than {MEMORY_SHARE:.0%} of the "
            f"{free / MIB:.0f} MiB available"
        )
    return need


class Followers:
    """``len(names)`` Watch streams on U's sync server, each as a peer data center's
    syncer opens it, run by a thread of this process on an event loop of its own: every
    record U sends is timestamped on receipt (``arrived`` / ``gone`` per follower, by
    instance id). What a follower then does with a record (its importer, its registry)
    is its own host's cost, so none is done here."""

    def __init__(self, u: Node, names: list[str]) -> None:
        self.u = u
        self.arrived: dict[str, dict[str, float]] = {n: {} for n in names}
        self.gone: dict[str, dict[str, float]] = {n: {} for n in names}
        self.errors: list[str] = []
        self.watching: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="followers", daemon=True)

    def start(self, bound: float) -> None:
        """Open every stream; at most ``bound`` s."""
        self._thread.start()
        deadline = time.monotonic() + bound
        while len(self.watching) + len(self.errors) < len(self.arrived):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.watching)} of {len(self.arrived)} Watch streams")
            time.sleep(0.05)
        if self.errors:
            raise RuntimeError(f"a follower of U failed: {self.errors[0]}")

    def wait(self, created: Iterable[str], deleted: Iterable[str], bound: float) -> None:
        """Until every follower received the records of ``created`` and ``deleted``;
        TimeoutError past ``bound`` s."""
        wanted = [(got, set(ids)) for got, ids in ((self.arrived, created), (self.gone, deleted))]
        deadline = time.monotonic() + bound
        while any(not ids <= table.keys() for got, ids in wanted for table in got.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"U's records did not reach every follower within {bound:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        tasks = [asyncio.create_task(self._follow(name)) for name in self.arrived]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, name: str) -> None:
        from pysyncer.rpc.client import SyncClient

        arrived, gone = self.arrived[name], self.gone[name]
        client = SyncClient(self.u.rpc, dc=self.u.dc)
        try:
            health = await client.health(timeout=30)
            self.watching.add(name)
            async for batch in client.watch(int(health.revision), str(health.epoch)):
                now = time.monotonic()
                if batch.reset:
                    raise RuntimeError(f"U reset {name}'s Watch stream")
                for record in batch.records:
                    (gone if record.deleted else arrived).setdefault(record.instance_id, now)
        except Exception as exc:  # noted; the phase then misses copies and says so
            self.errors.append(f"{name}: {exc!r}")
        finally:
            await client.close()


# -- one rate ------------------------------------------------------------------------------


async def drive_u(
    u: Node, sids: list[str], rate: float, start: float, args: argparse.Namespace
) -> tuple[Propagation, bool]:
    """From ``start``: register ``--changes`` instances at U through its REST API at
    ``rate`` (bench_sync's ``drive``), then delete them; the acknowledgements' times and
    whether every request was answered 200 within ``--bound``."""
    prop = Propagation()
    regs, dels = change_jobs(u, sids, args.changes, rate_key(rate))
    timeout = aiohttp.ClientTimeout(total=30)
    session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
    async with session:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        try:
            for jobs, stamps in ((regs, prop.acked), (dels, prop.deleted)):
                await asyncio.wait_for(
                    drive(session, jobs, CONCURRENCY, rate, stamps.__setitem__), args.bound
                )
        except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
            progress(f"U's REST writes at {rate:g}/s failed: {exc!r}")
            return prop, False
    return prop, True


def churn_results(outs: dict[str, Path], bound: float) -> dict[str, dict[str, Any]]:
    """Every helper's churn result (bench_sync's ``churn``), waiting at most ``bound`` s."""
    deadline = time.monotonic() + bound
    while not all(p.exists() for p in outs.values()):
        if time.monotonic() > deadline:
            missing = sorted(n for n, p in outs.items() if not p.exists())
            raise TimeoutError(f"no churn result from {', '.join(missing)} within {bound:g} s")
        time.sleep(0.02)
    results = {name: json.loads(path.read_text()) for name, path in outs.items()}
    for name, result in results.items():
        if "error" in result:
            raise RuntimeError(f"{name}'s churn failed: {result['error']}")
    return results


def spans(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> list[float]:
    """``later[id] - earlier[id]`` (s) over ``(earlier, later)`` pairs of timestamp tables."""
    return [
        later[key] - stamp
        for earlier, later in pairs
        for key, stamp in earlier.items()
        if key in later
    ]


def summary(values: list[float], prefix: str) -> dict[str, float]:
    """p50/p99/max (ms) and count of ``values`` (s)."""
    row = percentiles(values)
    return {
        f"{prefix}_p50_ms": row.get("p50_ms", -1.0),
        f"{prefix}_p99_ms": row.get("p99_ms", -1.0),
        f"{prefix}_max_ms": row.get("max_ms", -1.0),
        f"{prefix}_count": float(row["count"]),
    }


def latencies(
    pairs: list[tuple[dict[str, float], dict[str, float]]], prefix: str
) -> dict[str, float]:
    """:func:`summary` of the :func:`spans` of ``pairs``."""
    return summary(spans(pairs), prefix)


def composed(first: list[float], second: list[float], prefix: str) -> dict[str, float]:
    """:func:`summary` of a path of two independent parts: each value of ``second`` plus a
    value of ``first`` drawn at random (seeded: the same figures from the same values)."""
    draw = random.Random(0)
    return summary([value + draw.choice(first) for value in second] if first else [], prefix)


def achieved(stamps: dict[str, float]) -> float:
    """Writes per second between the first and the last of ``stamps``."""
    times = sorted(stamps.values())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def link_lag(u: Node) -> dict[float, int]:
    """U's peer links' commit -> applied histogram, summed over the links: batches of
    changes from a peer's exporter committing them to U applying them, cumulative per
    upper bound in seconds (``/v1/sync/status``)."""
    sums: dict[float, int] = {}
    for remote in u.status().get("remote", {}).values():
        for bound, count in remote["propagation"]["buckets"].items():
            sums[float(bound)] = sums.get(float(bound), 0) + int(count)
    return sums


def lag_quantile(before: dict[float, int], after: dict[float, int], share: float) -> float:
    """The smallest bucket bound (ms) holding ``share`` of the batches between the two
    histograms; -1 when none was counted."""
    grown = {bound: after.get(bound, 0) - before.get(bound, 0) for bound in after}
    total = grown.get(float("inf"), 0)
    for bound in sorted(grown):
        if total and grown[bound] >= share * total:
            return 1000 * bound
    return -1.0


def send_churn(node: Node, command: dict[str, Any]) -> None:
    assert node.process.stdin is not None
    node.process.stdin.write((json.dumps(command) + "\n").encode())
    node.process.stdin.flush()


def run_rate(
    u: Node,
    peers: list[Node],
    followers: Followers,
    sids: list[str],
    rate: float,
    idle: float,
    args: argparse.Namespace,
) -> dict[str, float]:
    """One phase: the churn commands (every peer writes in process, U follows its own
    registry), U's REST writes from here, the followers' receipts; the phase's figures."""
    tag = rate_key(rate)
    bound = 2 * args.changes / rate + 2 * args.bound  # the churn, then its copies
    start = time.monotonic() + CHURN_MARGIN_S
    outs = {n.name: Path(args.workdir) / f"{n.name}-{tag}.json" for n in (u, *peers)}
    common = {"tag": tag, "rate": rate, "start": start, "bound": bound, "lag": True}
    for peer in peers:
        send_churn(peer, {**common, "count": args.changes, "follow": [], "expect": 0,
                          "out": str(outs[peer.name])})  # fmt: skip
    follow = [f"{p.name}-{tag}-m" for p in peers]  # churn's instance ids at the peers
    send_churn(u, {**common, "count": 0, "follow": follow, "expect": len(peers) * args.changes,
                   "own": f"{U_NAME}-{tag}-m", "own_expect": args.changes,
                   "out": str(outs[u.name])})  # fmt: skip
    for peer in peers[1:]:  # the load peers, threads started since the last phase too
        renice(peer.pid, LOAD_PEER_NICE)
    lag0 = link_lag(u)
    time.sleep(max(0.0, start - time.monotonic()))
    pids = [p.pid for p in peers]
    cpu0, peers0, ticks0 = proc_cpu(u.pid), sum(map(proc_cpu, pids)), cpu_ticks(REST_CPU)
    u_ticks0 = cpu_ticks(U_CPU)
    client0, began = time.process_time(), time.monotonic()
    rest, complete = asyncio.run(drive_u(u, sids, rate, start, args))
    results: dict[str, dict[str, Any]] = {}

    def window() -> dict[str, float]:
        return {
            "window_s": time.monotonic() - began,
            "u_cpu_s": proc_cpu(u.pid) - cpu0,
            "peers_cpu_s": sum(map(proc_cpu, pids)) - peers0,
            "client_cpu_s": time.process_time() - client0,
            "rest_cpu_busy": cpu_ticks(REST_CPU).busy_share(ticks0),
            "u_core_busy": cpu_ticks(U_CPU).busy_share(u_ticks0),
        }

    row: dict[str, float] = {}
    try:
        results.update(churn_results({u.name: outs[u.name]}, bound))  # U saw every change
        row = window()
        results.update(churn_results(outs, bound))
        followers.wait(results[u.name]["registered"], results[u.name]["deleted"], args.bound)
    except (TimeoutError, RuntimeError) as exc:
        progress(f"the phase at {rate:g}/s failed: {exc}")
        complete = False
    row = row or window()
    at_u = results.get(u.name, {"registered": {}, "deleted": {}, "arrived": {}, "gone": {}})
    at_peers = [results[p.name] for p in peers if p.name in results]
    row.update(latencies([(r["registered"], at_u["arrived"]) for r in at_peers], "in_visible"))
    row.update(latencies([(r["deleted"], at_u["gone"]) for r in at_peers], "in_gone"))
    measured = results.get(peers[0].name, {"registered": {}, "deleted": {}})
    row.update(latencies([(measured["registered"], at_u["arrived"])], "measured_visible"))
    row.update(latencies([(measured["deleted"], at_u["gone"])], "measured_gone"))
    sent = followers.arrived.values(), followers.gone.values()
    row.update(latencies([(at_u["registered"], got) for got in sent[0]], "out_visible"))
    row.update(latencies([(at_u["deleted"], got) for got in sent[1]], "out_gone"))
    # The path split at the origin's exporter commit (bench_sync's churn ``committed``): a
    # peer's part, on the shared core; the rest, into U. And U as an origin: its REST writes
    # (as its registry's feed shows them) to its own commit, on its own core under its
    # whole load. Composed: U's origin part + the rest into U, a change between two hosts
    # that each carry a whole syncer's share, as the mesh has them.
    for key, write, seen, commit in (
        ("visible", "registered", "arrived", "committed"),
        ("gone", "deleted", "gone", "committed_gone"),
    ):
        row.update(latencies([(r[write], r[commit]) for r in at_peers], f"in_origin_{key}"))
        after = spans([(r[commit], at_u[seen]) for r in at_peers])
        row.update(summary(after, f"in_after_{key}"))
        origin = spans([(at_u[write], at_u.get(commit, {}))])
        row.update(summary(origin, f"u_origin_{key}"))
        row.update(composed(origin, after, f"composed_{key}"))
    lag1 = link_lag(u)
    row.update(
        u_link_lag_p50_le_ms=lag_quantile(lag0, lag1, 0.5),
        u_link_lag_p99_le_ms=lag_quantile(lag0, lag1, 0.99),
    )
    stalls = [ms for _, ms in at_u.get("stalls", [])]
    row.update(
        u_stall_max_ms=max(stalls, default=0.0),
        u_stalls_over_100ms=float(sum(ms > TARGET_P99_MS for ms in stalls)),
        u_stalled_ms=sum(stalls),
        peer_stall_max_ms=max((ms for r in at_peers for _, ms in r["stalls"]), default=0.0),
    )
    expected = float(len(peers) * args.changes)
    handled = 2 * args.changes * (len(peers) + 1)  # imported, and registered through REST
    row.update(
        offered_rate_per_dc=rate,
        measured_expected=float(args.changes),
        load_peers_nice=float(
            min((os.getpriority(os.PRIO_PROCESS, p.pid) for p in peers[1:]), default=0)
        ),
        in_expected=expected,
        out_expected=expected,
        u_achieved_rate=achieved(rest.acked),
        peer_achieved_rate_min=min((achieved(r["registered"]) for r in at_peers), default=0.0),
        u_cpu_share=row["u_cpu_s"] / row["window_s"],
        u_core_others=max(0.0, row["u_core_busy"] - row["u_cpu_s"] / row["window_s"]),
        u_cpu_per_change_ms=1000 * max(0.0, row["u_cpu_s"] - idle * row["window_s"]) / handled,
        load_avg=load_average(),
    )
    counts = [row[f"{k}_count"] for k in ("in_visible", "in_gone", "out_visible", "out_gone")]
    row["failed"] = float(not complete or min(counts) < expected or bool(followers.errors))
    row["composed_meets_target"] = float(
        not row["failed"]
        and max(row["composed_visible_p50_ms"], row["composed_gone_p50_ms"]) <= TARGET_P50_MS
        and max(row["composed_visible_p99_ms"], row["composed_gone_p99_ms"]) <= TARGET_P99_MS
        and min(row["composed_visible_count"], row["composed_gone_count"]) >= expected
    )
    rates_held = min(row["u_achieved_rate"], row["peer_achieved_rate_min"]) >= ACHIEVED_SHARE * rate
    for verdict, path in (("all_peers_meet_target", "in"), ("meets_target", "measured")):
        row[verdict] = float(
            not row["failed"]
            and rates_held
            and max(row[f"{path}_visible_p50_ms"], row[f"{path}_gone_p50_ms"]) <= TARGET_P50_MS
            and max(row[f"{path}_visible_p99_ms"], row[f"{path}_gone_p99_ms"]) <= TARGET_P99_MS
        )
    return row


# -- the pool ------------------------------------------------------------------------------


def run_host(args: argparse.Namespace, need: dict[str, float]) -> dict[str, float]:
    """Spawn U and the peers, wait for the sync, measure the idle shares, run every rate."""
    where = Path(args.workdir)
    bound = need["sync_bound_s"]
    nodes: list[Node] = []
    readers: list[threading.Thread] = []
    followers: Followers | None = None
    filled_u: dict[str, float] = {}
    filled_peers: dict[str, float] = {}
    quota = registry_quota(args.instances + 10 * (MESH_SERVICES + CHURN_SERVICES * len(args.rates)))
    try:
        with pinned(U_CPU):
            u = Node(U_NAME, loopback_host(0), where, helper_count=args.instances, extra=quota)
        nodes.append(u)
        readers.append(read_helper(u, filled_u))
        config = where / "peer.toml"
        config.write_text('direction = "send"\n')  # they import nothing: the followers do
        for i in range(1, args.peers + 1):
            peer = Node(
                f"p{i}",
                loopback_host(i),
                Path(args.peers_workdir),
                join=u.bind,
                helper_count=args.instances,
                extra=[*quota, "--config", str(config), "--clients-held", "1"],
            )
            nodes.append(peer)
            readers.append(read_helper(peer, filled_peers))
        peers = nodes[1:]
        os.nice(CLIENT_NICE)  # this thread, and every thread started from it from now on
        progress(f"U is pid {u.pid} on CPU {U_CPU}; {args.peers} peers on CPU {REST_CPU}")
        since = time.monotonic()
        copies = args.peers * args.instances
        synced_u = sync_mesh([u], filled_u, copies, bound, since)
        check_alive(peers)  # a peer that died (a port taken) is why U could not sync
        row: dict[str, float] = {
            "u_copies_expected": float(copies),
            "u_sync_s": synced_u["sync_s"],
            "u_fill_s": synced_u["fill_s"],
            "u_copies_mapped": synced_u["copies_mapped_min"],
            "sync_failed": synced_u["sync_failed"],
        }
        if not row["sync_failed"]:
            synced_peers = sync_mesh(peers, filled_peers, 0, bound, since)
            row.update(peers_sync_s=synced_peers["sync_s"], sync_failed=synced_peers["sync_failed"])
        row.update(
            u_sync_cpu_s=proc_cpu(u.pid),
            u_rss_mib=proc_mem(u.pid, "VmRSS") / MIB,
            u_hwm_mib=proc_mem(u.pid, "VmHWM") / MIB,
            peer_rss_mib_max=max(proc_mem(p.pid, "VmRSS") for p in peers) / MIB,
            u_pinned=float(pinned_to(u.pid, U_CPU)),
            rest_pinned=float(
                all(pinned_to(n.pid, REST_CPU) for n in [*peers])
                and pinned_to(os.getpid(), REST_CPU)
            ),
        )
        progress(
            f"U {'NOT ' * bool(row['sync_failed'])}synced: {row['u_copies_mapped']:,.0f} copies "
            f"in {row['u_sync_s']:.1f} s, U's CPU {row['u_sync_cpu_s']:.0f} s, RSS "
            f"{row['u_rss_mib']:.0f} MiB (peak {row['u_hwm_mib']:.0f}); pinned: U "
            f"{row['u_pinned']:.0f}, the rest {row['rest_pinned']:.0f} (load {load_average():.1f})"
        )
        if row["sync_failed"]:
            return row
        pool_formed(nodes, POOL_BOUND_S)
        followers = Followers(u, [p.name for p in peers])  # as the peers' importers would
        followers.start(POOL_BOUND_S)
        row.update(sweep(u, peers, followers, args))
        return row
    finally:
        if followers is not None:
            followers.stop()
        procs.stop_all([n.process for n in nodes], grace=20)
        for reader in readers:  # each ends with its helper's output
            reader.join(timeout=5)
        for node in nodes:
            for pipe in (node.process.stdout, node.process.stdin):
                if pipe is not None:
                    pipe.close()


def sweep(
    u: Node, peers: list[Node], followers: Followers, args: argparse.Namespace
) -> dict[str, float]:
    """The idle shares (U's CPU, CPU ``REST_CPU`` busy), then one phase per rate."""
    copies = len(peers) * args.instances
    window = args.idle_window or (
        RENEW_ROUND_S + 5.0 if copies >= BIG_POOL_COPIES else IDLE_WINDOW_S
    )
    ticks = cpu_ticks(REST_CPU)
    idle = idle_rate([u], window)
    out = {
        "idle_window_s": window,
        "u_idle_share": idle,
        "rest_cpu_idle_busy": cpu_ticks(REST_CPU).busy_share(ticks),
        "sustainable_rate_per_dc": 0.0,
    }
    progress(
        f"idle over {window:.0f} s: U {idle:.2f} of its core, CPU {REST_CPU} "
        f"{out['rest_cpu_idle_busy']:.0%} busy; the sweep starts"
    )
    sids = asyncio.run(create_services([u]))[u.name]
    held = True  # every rate so far met the target
    for rate in args.rates:
        row = run_rate(u, peers, followers, sids, rate, idle, args)
        progress(
            f"at {rate:g}/s: the measured peer into U visible p50/p99 "
            f"{row['measured_visible_p50_ms']:.1f}/{row['measured_visible_p99_ms']:.1f} ms, gone "
            f"{row['measured_gone_p50_ms']:.1f}/{row['measured_gone_p99_ms']:.1f} ms (every "
            f"peer: {row['in_visible_p99_ms']:.1f}/{row['in_gone_p99_ms']:.1f} ms p99); "
            f"U {row['u_cpu_share']:.0%} of its core, CPU "
            f"{REST_CPU} {row['rest_cpu_busy']:.0%} busy (load {row['load_avg']:.1f})"
            + ("; FAILED, the sweep ends" if row["failed"] else "")
        )
        out.update({f"{rate_key(rate)}_{key}": value for key, value in row.items()})
        held = held and bool(row["meets_target"])
        if held:
            out["sustainable_rate_per_dc"] = rate
        if row["failed"]:
            break
    return out


# -- the report ----------------------------------------------------------------------------


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    def verdict(value: float, target: float) -> str:
        return "meets" if 0 <= value <= target else "MISSES"

    print(
        f"U + {args.peers} peers x {args.instances:,} instances: U (CPU {U_CPU} alone) holds "
        f"{report['u_copies_expected']:,.0f} copies; synced in {report['u_sync_s']:.1f} s "
        f"(U's CPU {report['u_sync_cpu_s']:.0f} s, RSS {report['u_rss_mib']:.0f} MiB, peak "
        f"{report['u_hwm_mib']:.0f} MiB; estimated {report['estimated_rss_mib_u']:.0f})"
        + ("  NOT SYNCED within the bound" if report["sync_failed"] else "")
    )
    if report["sync_failed"]:
        return
    print(
        f"  idle: U {report['u_idle_share']:.2f} of its core, CPU {REST_CPU} "
        f"{report['rest_cpu_idle_busy']:.0%} busy; {args.changes} registrations + deletions "
        f"per dc per rate; load {report['load_avg_start']:.1f} at the start"
    )
    for rate in args.rates:
        p = rate_key(rate) + "_"
        if p + "failed" not in report:
            continue
        print(
            f"  at {rate:g}/s offered per dc: U's REST writes {report[p + 'u_achieved_rate']:.0f}"
            f"/s, the slowest peer {report[p + 'peer_achieved_rate_min']:.0f}/s"
            + ("  (FAILED: a wait past --bound or a copy missing)" if report[p + "failed"] else "")
        )
        paths = (
            ("measured", "into U, from the measured peer"),
            ("in", "into U, from every peer"),
            ("out", f"out of U, to a follower on CPU {REST_CPU}"),
        )
        for side, what in paths:
            for label, key in (("register->visible", "visible"), ("delete->gone", "gone")):
                p50, p99 = report[f"{p}{side}_{key}_p50_ms"], report[f"{p}{side}_{key}_p99_ms"]
                print(
                    f"    {what:<40} {label:<18} p50 {p50:7.1f} ms "
                    f"({verdict(p50, TARGET_P50_MS)})  p99 {p99:7.1f} ms "
                    f"({verdict(p99, TARGET_P99_MS)})  "
                    f"{report[f'{p}{side}_{key}_count']:.0f}/{report[f'{p}{side}_expected']:.0f}"
                )
        for label, key in (("register->visible", "visible"), ("delete->gone", "gone")):
            part = {
                name: f"{report[f'{p}{name}_{key}_p50_ms']:.1f} / "
                f"{report[f'{p}{name}_{key}_p99_ms']:.1f}"
                for name in ("in_origin", "in_after", "u_origin", "composed")
            }
            print(
                f"    {label:<18} split at the origin's commit, p50 / p99 ms: a peer's part "
                f"{part['in_origin']}, then into U {part['in_after']}; U's own origin part "
                f"{part['u_origin']}; composed (U's origin part + into U) {part['composed']}"
            )
        print(
            f"    U: {report[p + 'u_cpu_share']:.0%} of its core over {report[p + 'window_s']:.1f}"
            f" s, {report[p + 'u_cpu_per_change_ms']:.3f} ms CPU per change handled (above "
            f"idle; others on its core {report[p + 'u_core_others']:.0%}); CPU {REST_CPU} "
            f"{report[p + 'rest_cpu_busy']:.0%} busy (peers "
            f"{report[p + 'peers_cpu_s']:.1f} s, this process {report[p + 'client_cpu_s']:.1f} s)"
            + (" (saturated: pessimistic)" if report[p + "rest_cpu_busy"] > 0.95 else "")
            + f"; load {report[p + 'load_avg']:.1f}"
        )
        print(
            f"    U's event loop: worst stall {report[p + 'u_stall_max_ms']:.0f} ms, "
            f"{report[p + 'u_stalls_over_100ms']:.0f} over 100 ms, "
            f"{report[p + 'u_stalled_ms']:.0f} ms in stalls of {LAG_NOTE_MS:.0f} ms or more; "
            f"a peer's commit -> applied at U: p50 <= {report[p + 'u_link_lag_p50_le_ms']:g} "
            f"ms, p99 <= {report[p + 'u_link_lag_p99_le_ms']:g} ms (batches); a peer's worst "
            f"stall {report[p + 'peer_stall_max_ms']:.0f} ms"
        )
    sustainable = report["sustainable_rate_per_dc"]
    print(
        f"  into U from the measured peer, p50 <= {TARGET_P50_MS:.0f} ms and p99 <= "
        f"{TARGET_P99_MS:.0f} ms with every copy, up to: "
        f"{f'{sustainable:g}/s per dc' if sustainable else 'none of the rates'} "
        f"(target {TARGET_RATE:.0f}/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000, help="per dc (100000)")
    parser.add_argument("--peers", type=int, default=7, help="other data centers (7)")
    parser.add_argument("--rate", default="100,250,500", help="changes/s per dc, a list")
    parser.add_argument("--changes", type=int, default=2000, help="registrations per dc per rate")
    parser.add_argument("--bound", type=float, default=120.0, help="seconds per wait (120)")
    parser.add_argument("--sync-bound", type=float, default=0.0, help="seconds (0: estimated)")
    parser.add_argument("--idle-window", type=float, default=0.0, help="seconds (0: by size)")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    args = parser.parse_args(argv)
    args.rates = numbers(args.rate, float)
    if not args.rates or args.rates[0] <= 0:
        parser.error("--rate: rates > 0")
    if args.peers < 1 or args.instances < 10 or args.changes < 1:
        parser.error("--peers >= 1, --instances >= 10, --changes >= 1")
    try:
        need = preflight(args)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "instances_per_dc": args.instances,
        "peers": args.peers,
        "rates_per_dc": ",".join(f"{r:g}" for r in args.rates),
        "changes_per_dc": args.changes,
        "u_cpu": U_CPU,
        "rest_cpu": REST_CPU,
        "cpus": os.cpu_count() or 0,
        "load_avg_start": load_average(),
        "mem_available_mib": mem_available() / MIB,
        "estimated_rss_mib_u": need["rss_u"] / MIB,
        "estimated_rss_mib_total": need["rss_total"] / MIB,
        "sync_bound_s": need["sync_bound_s"],
    }
    # SIGTERM unwinds like Ctrl-C, so every daemon is stopped on the way out
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.sched_setaffinity(0, {REST_CPU})  # before any thread: they inherit it
    peers_disk = PEERS_DISK if PEERS_DISK.is_dir() else None
    report["peers_data_in_memory"] = float(peers_disk is not None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-host-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-host-peers-", dir=peers_disk) as peers_tmp,
    ):

        def start(attempt: int) -> dict[str, float]:
            args.workdir = str(Path(tmp) / f"pool-{attempt}")
            args.peers_workdir = str(Path(peers_tmp) / f"pool-{attempt}")
            Path(args.workdir).mkdir()
            Path(args.peers_workdir).mkdir()
            return run_host(args, need)

        report.update(with_fresh_ports(start, "bench_host"))
    report.update(
        load_avg_end=load_average(),
        target_p50_ms=TARGET_P50_MS,
        target_p99_ms=TARGET_P99_MS,
        target_rate_per_dc=TARGET_RATE,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args)
    return 1 if report["sync_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
