"""N data centers in a full mesh: the initial sync, propagation against offered rate, and
anti-entropy cost.

For each N of ``--dcs`` (a fresh pool each time), N real daemons, each filled in-process
with ``--instances`` instances (10 per service, bench_sync's origin helper) and importing
every other one's, so each holds ``(N - 1) x --instances`` copies. Before anything starts,
every size's memory and CPU are estimated from the figures measured below (``IDLE_RSS``,
``RSS_PER_PEER``, ``RSS_PER_COPY``, ``RSS_PER_OWN``, ``CPU_PER_COPY_S``, ``CPU_PER_OWN_S``,
with a margin) and printed with the bound of each phase; a size whose estimated peak RSS
exceeds ``MEMORY_SHARE`` of MemAvailable is refused.

0. **Sync**: from the last spawn until every helper has filled and exported its instances
   and every daemon maps every copy, bounded by ``--sync-bound`` (by default three times
   the estimated CPU over the share of the cores the daemons can expect at the load
   average when the pool starts, at least ``--bound``). A progress line on stderr every
   ``PROGRESS_S`` gives the copies each daemon maps. Recorded: the wall time, all
   daemons' CPU from their start (filling included), their RSS and peak RSS.
1. **Propagation, per offered rate**: the daemons' idle CPU rate is measured before the
   sweep and again after it, to show its drift (``--idle-window``; by default longer than a
   renew round once a daemon holds 100,000 copies). Each rate of ``--rate`` (ascending,
   one after the other in the same pool, so the sync is paid once) is one phase: every
   data center registers ``--changes`` new instances through its REST API at that rate
   (all data centers at once, 8 requests in flight each: a slow answer lowers the rate
   achieved, which is reported), then deletes them at the same rate. Every registry's
   change feed is followed (bench_sync's ``follow_feed``) to timestamp each copy's arrival
   and removal in every other data center: register->visible and delete->gone p50/p99
   across all other data centers. The daemons' CPU over the phase, minus the idle rate,
   divided by the changes offered, is the **CPU per offered change** (and per copy
   delivered), from which the cores the issue's target (8 data centers x 100,000, 500
   changes/s each) needs are derived. A phase is bounded by ``--bound`` per wait; one that
   times out or has a request refused is recorded (``failed``) and ends the sweep. The
   **sustainable rate** is the highest rate up to which every rate of the sweep had every
   copy arrive and leave, achieved at least ``ACHIEVED_SHARE`` of its offered rate, and
   held p50 <= 20 ms and p99 <= 100 ms for both visible and gone.
2. **Anti-entropy**: a syncer run in this process (the engine's own ``Importer`` and
   ``PeerLink``, an embedded registry, a SQLite store) first repairs from the first data
   center (every slot: the initial sync), then, for each count in ``--ae-slots``, that
   many services of it (each in a different slot) get one instance's properties
   changed and one digest round runs: slots compared (the whole 16,384-slot table),
   slots and records pulled, CPU of this process and of the origin daemon, TCP bytes
   (``ss``), wall time. Median of ``--ae-repeats`` rounds each; every repair and every
   wait for the origin's export is bounded by ``--bound``.

    python -m benchmarks.bench_mesh [--dcs 2,4,8] [--instances 5000] [--rate 25,100,500]
        [--changes 2000] [--ae-slots 0,10,100] [--sync-bound S] [--idle-window S] [--json]
    python -m benchmarks.bench_mesh --dcs 8 --instances 100000 \
        --rate 10,25,50,100,200,500 --changes 500   # the issue's configuration (its estimate:
        # ~10.6 GiB of peak RSS in all, ~580 CPU s of initial sync)

Every daemon is stopped on every way out (an error, a timeout, Ctrl-C, SIGTERM). The exit
status is 1 when a pool did not sync within its bound (its report is printed all the same),
2 when a size is refused.

``--json`` prints one flat object (numbers and strings only): ``dcs`` ("2,4"),
``instances_per_dc``, ``rates_per_dc`` ("25,100"), ``rate_per_dc`` (the highest rate
measured), ``changes_per_dc``, ``load_avg_start``, ``load_avg_end``, ``cpus``,
``mem_available_mib``; per N (``n<N>_`` prefix): ``copies_per_dc``, ``estimated_rss_mib``
(per daemon), ``estimated_sync_cpu_s`` (all daemons), ``sync_bound_s``, ``fill_s`` (last
spawn to every helper filled and exported), ``sync_s`` (last spawn to every copy mapped),
``sync_failed`` (1: not within the bound, and nothing more of this N is measured),
``copies_mapped_min`` and ``copies_mapped_total`` (then: the fewest a daemon mapped, all),
``sync_cpu_s`` (all daemons' CPU from their start to then), ``sync_cpu_per_copy_us``,
``synced_rss_mib_max`` and ``synced_hwm_mib_max`` (the largest daemon's RSS and peak RSS
then), ``rss_mib_max`` (the largest RSS after the sweep), ``idle_window_s``,
``idle_cpu_share`` (all daemons' CPU s/s before the sweep, subtracted from every phase),
``idle_after_cpu_share`` (the same after it: its drift), ``sustainable_rate_per_dc``
(0: none); per N and rate R (``n<N>_r<R>_`` prefix, R as given, "." as "_"):
``visible_p50_ms``, ``visible_p99_ms``, ``visible_count``, ``gone_p50_ms``,
``gone_p99_ms``, ``gone_count``, ``copies_expected``, ``offered_rate_per_dc`` and
``achieved_rate_per_dc`` (registrations per second per data center), ``cpu_raw_s`` (all
daemons over the phase of ``phase_s`` seconds), ``cpu_s`` (above idle),
``cpu_per_change_ms``, ``cpu_per_copy_ms``, ``client_cpu_s`` (this process, which drives
the load), ``target_cores`` (the cores 8 x 500 changes/s would need at this cost per
copy), ``failed`` (1: the phase timed out or a request was refused); the highest rate
measured also without the rate in the key (``n<N>_visible_p50_ms``, ...: run_all's tables
read those); per N ``ae_initial_s``, ``ae_initial_cpu_s`` (or ``ae_failed`` = 1 when the
anti-entropy phase timed out); per N and changed-slot count S (``n<N>_ae<S>_`` prefix):
``slots_compared``, ``slots_pulled``, ``records_pulled``, ``cpu_ms`` (this process),
``origin_cpu_ms``, ``wire_bytes``, ``wall_ms``; the line over N of the CPU per change at
the highest rate: ``cpu_per_change_fixed_ms`` (at N - 1 = 0), ``cpu_per_copy_fit_ms`` (per
other data center), ``target_cores_fit`` (cores for 8 x 500 changes/s at that cost);
``target_p50_ms`` (20), ``target_p99_ms`` (100), ``target_dcs`` (8),
``target_instances`` (100000), ``target_rate_per_dc`` (500).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from benchmarks._harness import (
    MIB,
    fit_line,
    load_average,
    mem_available,
    port_of,
    proc_cpu_ns,
    tcp_bytes,
)
from benchmarks.bench_sync import (
    Node,
    Propagation,
    drive,
    follow_feed,
    percentiles,
    pool_formed,
    proc_cpu,
    proc_mem,
    registry_quota,
)
from pysyncer import procs
from pysyncer.errors import PysyncerError
from pysyncer.model import ORIGIN_DC_PROPERTY, ServiceKey
from pysyncer.procs import RegistryClient, loopback_host
from pysyncer.sync.renewals import DEFAULT_TTL

_T = TypeVar("_T")

TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
TARGET_DCS = 8
TARGET_INSTANCES = 100_000
TARGET_RATE = 500.0
# Pre-flight model, measured with this benchmark on the project's 2-core machine (load 7-11):
#   python -m benchmarks.bench_mesh --dcs 2,3 --instances 100000 --rate 100 --changes 100 \
#       --ae-slots ''
#   python -m benchmarks.bench_mesh --dcs 2 --instances 10 --rate 100 --changes 10 --ae-slots ''
# The largest daemon once the mesh synced (its RSS was its peak RSS each time): 74.8 MiB idle
# (10 own, 10 copies); 392.2 MiB with 100,000 own + 100,000 copies (N=2); 522.7 MiB with
# 100,000 own + 200,000 copies (N=3). So 130.4 MiB per 100,000 copies = 1,368 B per copy
# (the embedded registry's record included), and 187.0 MiB per 100,000 own = 1,961 B per own
# instance. All daemons' CPU from spawn to every copy mapped: 1.5 s, 23.3 s (N=2), 60.0 s
# (N=3): 0.76 s to start, 84 us per copy, 25 us per own instance (filled and exported).
# And ``--dcs 8 --instances 5000`` (load 12-22): 149 MiB, 19 MiB above the figures above
# for its 6 peer links more than N=2's one: ~3 MiB per peer link. ``--dcs 8 --instances
# 20000`` (load 13-27): 334 MiB, 124 CPU s in all: 102 us per copy, more renew rounds
# falling within a longer sync (8 x 50,000 at load 25-38: ~200 us, and not synced in 756 s).
IDLE_RSS = 75 * (1 << 20)  # an idle daemon's RSS, with one peer link
RSS_PER_PEER = 3 * (1 << 20)  # each further peer link
RSS_PER_COPY = 1_370  # a copy held, embedded registry included (peak RSS)
RSS_PER_OWN = 1_960  # an instance of its own (registry + export log + digests)
CPU_PER_COPY_S = 100e-6  # the initial full mesh sync, per copy
CPU_PER_OWN_S = 25e-6  # filling and exporting an instance of its own
RSS_MARGIN = 1.15  # the estimate's safety factor over the measured per-instance figures
MEMORY_SHARE = 0.6  # of MemAvailable the pool may take
SYNC_BOUND_FACTOR = 3.0  # the sync's default bound: this many times the estimate
PROGRESS_S = 10.0  # a progress line on stderr this often while the mesh syncs
SYNC_POLL_S = 1.0  # how often the copies are read while the mesh syncs (a daemon done: no more)
STATUS_TIMEOUT_S = 3.0  # a daemon too busy to answer this soon shows "?" in the progress
FEED_WARMUP_S = 1.5  # every feed is past its first (reset) answer
IDLE_WINDOW_S = 10.0  # idle CPU measured before the sweep (small pools)
RENEW_ROUND_S = DEFAULT_TTL / 4  # a renew round of every copy held, this often
BIG_POOL_COPIES = 100_000  # from here, the idle window spans a renew round
ACHIEVED_SHARE = 0.9  # a rate counts as sustained only if this much of it was achieved
MESH_SERVICES = 20  # services per data center for the measured instances
POOL_BOUND_S = 120.0  # every member sees every other alive
POOL_ATTEMPTS = 3  # a pool whose port was taken between picking and binding starts again
PORT_TAKEN = "already in use"  # how a daemon's log says so (pysyncer.daemon)


def estimate(dcs: int, instances: int) -> dict[str, float]:
    """Peak RSS per daemon (with the margin) and the pool's; CPU of the initial full mesh
    sync, all daemons together."""
    copies = (dcs - 1) * instances
    per_daemon = (
        IDLE_RSS
        + (dcs - 2) * RSS_PER_PEER
        + RSS_MARGIN * (copies * RSS_PER_COPY + instances * RSS_PER_OWN)
    )
    return {
        "copies_per_dc": float(copies),
        "rss_per_daemon": per_daemon,
        "rss_total": dcs * per_daemon,
        "sync_cpu_s": dcs * (copies * CPU_PER_COPY_S + instances * CPU_PER_OWN_S),
    }


def sync_bound(dcs: int, need: dict[str, float], args: argparse.Namespace) -> float:
    """``--sync-bound``, or three times the estimated sync CPU over the share of the cores
    the N daemons can expect beside the load already there (cores x N / (N + load))."""
    if args.sync_bound > 0:
        return float(args.sync_bound)
    cores = os.cpu_count() or 1
    share = min(cores, cores * dcs / (dcs + load_average()))
    return max(float(args.bound), SYNC_BOUND_FACTOR * need["sync_cpu_s"] / share)


def preflight(dcs: int, args: argparse.Namespace) -> dict[str, float]:
    """Print the estimate and the bounds; ValueError when the pool cannot fit memory."""
    need = estimate(dcs, args.instances)
    free = mem_available()
    phase = sum(2 * args.changes / rate + 2 * args.bound for rate in args.rates)
    print(
        f"N={dcs} x {args.instances} instances: each daemon holds "
        f"{need['copies_per_dc']:.0f} copies, ~{need['rss_per_daemon'] / MIB:.0f} MiB peak "
        f"RSS each, ~{need['rss_total'] / MIB:.0f} MiB in all (available {free / MIB:.0f} "
        f"MiB); full mesh sync ~{need['sync_cpu_s']:.0f} CPU s on {os.cpu_count()} cores, "
        f"bounded at {sync_bound(dcs, need, args):.0f} s; the rate sweep at most {phase:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    if need["rss_total"] > MEMORY_SHARE * free:
        raise ValueError(
            f"N={dcs} x {args.instances} needs ~{need['rss_total'] / MIB:.0f} MiB, more than "
            f"{MEMORY_SHARE:.0%} of the {free / MIB:.0f} MiB available"
        )
    return need


def progress(text: str) -> None:
    print(f"[bench_mesh {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- phase 0: the full mesh syncs ----------------------------------------------------------


def mapped_copies(node: Node) -> int | None:
    """The copies ``node`` maps, None when it did not answer within ``STATUS_TIMEOUT_S``."""
    url = f"http://{node.admin}/v1/sync/status"
    try:
        with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as response:
            status = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return sum(int(r.get("copies", 0)) for r in status.get("remote", {}).values())


def read_helper(node: Node, filled: dict[str, float]) -> threading.Thread:
    """A thread reading all the helper writes: the line saying it filled and exported its
    instances (when it came is noted in ``filled``) and its log, copied into its log file,
    so a full pipe never blocks the daemon and ``tail()`` shows its log. Ends with it."""

    def run() -> None:
        assert node.process.stdout is not None
        with node.log_path.open("ab") as log:
            for line in node.process.stdout:
                if node.name not in filled and line.startswith(b"{") and b"exported_s" in line:
                    filled[node.name] = time.monotonic()
                else:
                    log.write(line)
                    log.flush()

    thread = threading.Thread(target=run, name=f"helper-{node.name}", daemon=True)
    thread.start()
    return thread


def sync_mesh(
    nodes: list[Node], filled: dict[str, float], copies: int, bound: float, since: float
) -> dict[str, float]:
    """Wait until every helper filled and every daemon maps ``copies`` copies, at most
    ``bound`` s after ``since`` (the last spawn); a progress line every ``PROGRESS_S``.
    Past the bound, ``sync_failed`` = 1 and the fewest copies a daemon mapped (the last
    count each answered)."""
    known = {n.name: 0 for n in nodes}  # the last count each daemon answered
    mapped: dict[str, int | None] = dict(known)  # None: no answer this time
    next_line = since + PROGRESS_S
    while True:
        for node in nodes:
            if known[node.name] < copies:
                mapped[node.name] = mapped_copies(node)
                known[node.name] = mapped[node.name] or known[node.name]
        now = time.monotonic()
        row = {
            "fill_s": max(filled.values()) - since if len(filled) == len(nodes) else -1.0,
            "sync_s": now - since,
            "copies_mapped_min": float(min(known.values())),
            "copies_mapped_total": float(sum(known.values())),
            "sync_failed": 0.0,
        }
        if min(known.values()) >= copies and len(filled) == len(nodes):
            return row
        counts = " ".join(f"{name} {'?' if c is None else f'{c:,}'}" for name, c in mapped.items())
        if now - since > bound:
            progress(
                f"the full mesh did not sync within {bound:.0f} s: filled {len(filled)} of "
                f"{len(nodes)}, copies mapped {counts} of {copies:,}; this pool is not measured"
            )
            return {**row, "sync_failed": 1.0}
        if now >= next_line:
            progress(
                f"sync {now - since:.0f} s: filled {len(filled)}/{len(nodes)}; copies mapped "
                f"{counts} of {copies:,} each (load {load_average():.1f})"
            )
            next_line = now + PROGRESS_S
        check_alive(nodes)
        time.sleep(SYNC_POLL_S)


def check_alive(nodes: list[Node]) -> None:
    """Raise when a daemon has exited: :class:`PortTaken` when its log says a port it
    picked free was taken meanwhile (start the pool again), else RuntimeError."""
    for node in nodes:
        if node.process.poll() is not None:
            error = PortTaken if PORT_TAKEN in node.tail() else RuntimeError
            raise error(f"{node.name} exited during the sync:\n{node.tail()}")


# -- phase 1: propagation under offered load, per rate ----------------------------------


def rate_key(rate: float) -> str:
    """``r25``, ``r12_5``: a rate in a JSON key."""
    return "r" + f"{rate:g}".replace(".", "_")


async def create_services(nodes: list[Node]) -> dict[str, list[str]]:
    """``MESH_SERVICES`` services in every data center's registry, for the changes."""
    sids: dict[str, list[str]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for node in nodes:
            base = f"http://{node.registry}/v4/default/registry/microservices"
            sids[node.name] = []
            for s in range(MESH_SERVICES):
                body = {"service": {"appId": "mesh", "serviceName": f"m{s}", "version": "1.0.0"}}
                async with session.post(base, json=body) as response:
                    sids[node.name].append(str((await response.json())["serviceId"]))
    return sids


Job = tuple[str, str, str, Any]


def change_jobs(node: Node, sids: list[str], changes: int, tag: str) -> tuple[list[Job], list[Job]]:
    """The registrations and deletions of one data center's ``changes`` new instances."""
    base = f"http://{node.registry}/v4/default/registry/microservices"
    regs: list[Job] = []
    dels: list[Job] = []
    for n in range(changes):
        iid, sid = f"{node.name}-{tag}-m{n}", sids[n % MESH_SERVICES]
        instance = {"instanceId": iid, "hostName": iid, "endpoints": [f"rest://10.1.0.1:{n}"]}
        regs.append(("POST", f"{base}/{sid}/instances", iid, {"instance": instance}))
        dels.append(("DELETE", f"{base}/{sid}/instances/{iid}", iid, None))
    return regs, dels


async def propagation(
    nodes: list[Node], sids: dict[str, list[str]], rate: float, args: argparse.Namespace
) -> tuple[Propagation, bool]:
    """Every dc registers ``--changes`` new instances at ``rate``/s, then deletes them;
    whether every wait ended within ``--bound`` and every request was answered 200."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=0)
    )
    prop, stop = Propagation(), asyncio.Event()
    jobs = {n.name: change_jobs(n, sids[n.name], args.changes, rate_key(rate)) for n in nodes}
    expected = args.changes * len(nodes) * (len(nodes) - 1)
    async with session:
        feeds = [asyncio.create_task(follow_feed(session, n, prop, stop)) for n in nodes]
        try:
            await asyncio.sleep(FEED_WARMUP_S)
            for step, stamps, seen in ((0, prop.acked, prop.arrived), (1, prop.deleted, prop.gone)):
                await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            drive(session, jobs[n.name][step], 8, rate, stamps.__setitem__)
                            for n in nodes
                        )
                    ),
                    args.bound,
                )
                deadline = time.monotonic() + args.bound
                while len(seen) < expected:
                    if time.monotonic() > deadline:
                        return prop, False
                    await asyncio.sleep(0.05)
        except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
            progress(f"the phase at {rate:g}/s per dc failed: {exc!r}")
            return prop, False
        finally:
            stop.set()
            await asyncio.gather(*feeds, return_exceptions=True)
    return prop, True


def idle_rate(nodes: list[Node], window: float) -> float:
    """All daemons' CPU seconds per second over ``window`` s with nothing offered."""
    pids = [n.pid for n in nodes]
    idle0 = sum(map(proc_cpu, pids))
    time.sleep(window)
    return (sum(map(proc_cpu, pids)) - idle0) / window


def run_propagation(
    nodes: list[Node],
    sids: dict[str, list[str]],
    rate: float,
    idle: float,
    args: argparse.Namespace,
) -> dict[str, float]:
    pids = [n.pid for n in nodes]
    cpu0, client0, began = sum(map(proc_cpu, pids)), time.process_time(), time.monotonic()
    prop, complete = asyncio.run(propagation(nodes, sids, rate, args))
    wall = time.monotonic() - began
    raw = sum(map(proc_cpu, pids)) - cpu0
    cpu = max(0.0, raw - idle * wall)
    dcs = len(nodes)
    offered = 2 * args.changes * dcs  # registrations and deletions
    visible = [t - prop.acked[i] for (_, i), t in prop.arrived.items() if i in prop.acked]
    removed = [t - prop.deleted[i] for (_, i), t in prop.gone.items() if i in prop.deleted]
    vis, gone = percentiles(visible), percentiles(removed)
    reg_times = sorted(prop.acked.values())
    reg_span = (reg_times[-1] - reg_times[0]) if len(reg_times) > 1 else 0.0
    per_copy = cpu / max(1, offered * (dcs - 1))
    return {
        "visible_p50_ms": vis.get("p50_ms", -1.0),
        "visible_p99_ms": vis.get("p99_ms", -1.0),
        "visible_count": float(vis["count"]),
        "gone_p50_ms": gone.get("p50_ms", -1.0),
        "gone_p99_ms": gone.get("p99_ms", -1.0),
        "gone_count": float(gone["count"]),
        "copies_expected": float(args.changes * dcs * (dcs - 1)),
        "offered_rate_per_dc": rate,
        "achieved_rate_per_dc": len(reg_times) / dcs / reg_span if reg_span else 0.0,
        "cpu_s": cpu,
        "cpu_raw_s": raw,
        "phase_s": wall,
        "cpu_per_change_ms": 1000 * cpu / offered,
        "cpu_per_copy_ms": 1000 * per_copy,
        "client_cpu_s": time.process_time() - client0,
        # 8 dcs x 500 changes/s, each delivered to 7 others, at this cost per copy
        "target_cores": per_copy * TARGET_DCS * TARGET_RATE * (TARGET_DCS - 1),
        "failed": 0.0 if complete else 1.0,
    }


def sustained(row: dict[str, float]) -> bool:
    """Every copy arrived and left, the rate was achieved, and the latency targets held."""
    return (
        not row["failed"]
        and row["visible_count"] == row["gone_count"] == row["copies_expected"]
        and row["achieved_rate_per_dc"] >= ACHIEVED_SHARE * row["offered_rate_per_dc"]
        and max(row["visible_p50_ms"], row["gone_p50_ms"]) <= TARGET_P50_MS
        and max(row["visible_p99_ms"], row["gone_p99_ms"]) <= TARGET_P99_MS
    )


def sweep(nodes: list[Node], args: argparse.Namespace) -> dict[str, float]:
    """The idle rate, then one propagation phase per rate, ascending, in this pool, then the
    idle rate again; the per-rate rows under ``r<R>_`` keys, the last one also bare, the
    sustainable rate."""
    copies = (len(nodes) - 1) * args.instances
    window = args.idle_window or (
        RENEW_ROUND_S + 5.0 if copies >= BIG_POOL_COPIES else IDLE_WINDOW_S
    )
    idle = idle_rate(nodes, window)
    progress(f"N={len(nodes)}: idle {idle:.2f} CPU s/s over {window:.0f} s; the sweep starts")
    out = {"idle_window_s": window, "idle_cpu_share": idle, "sustainable_rate_per_dc": 0.0}
    sids = asyncio.run(create_services(nodes))
    previous = 0.0  # the sustainable rate counts only rates that all held from the lowest
    for rate in args.rates:
        row = run_propagation(nodes, sids, rate, idle, args)
        progress(
            f"N={len(nodes)} at {rate:g}/s per dc: achieved {row['achieved_rate_per_dc']:.0f}/s; "
            f"visible p50/p99 {row['visible_p50_ms']:.1f}/{row['visible_p99_ms']:.1f} ms, gone "
            f"{row['gone_p50_ms']:.1f}/{row['gone_p99_ms']:.1f} ms; "
            f"{row['cpu_per_change_ms']:.2f} ms CPU per change (load {load_average():.1f})"
            + ("; FAILED, the sweep ends" if row["failed"] else "")
        )
        out.update({f"{rate_key(rate)}_{key}": value for key, value in row.items()})
        out.update(row)  # the highest rate measured, also without the rate in the key
        if sustained(row) and out["sustainable_rate_per_dc"] == previous:
            out["sustainable_rate_per_dc"] = rate
        previous = rate
        if row["failed"]:
            break
    out["idle_after_cpu_share"] = idle_rate(nodes, window)  # how far the baseline drifted
    return out


# -- phase 2: anti-entropy cost against changed slots ------------------------------------


def distinct_slot_services(count: int, services: int) -> list[int]:
    """Indexes of origin-helper services (``svc-<s>``), each in a slot of its own."""
    picked: list[int] = []
    slots: set[int] = set()
    for s in range(services):
        if len(picked) == count:
            return picked
        slot = ServiceKey("bench", f"svc-{s}", "1.0.0").slot
        if slot not in slots:
            slots.add(slot)
            picked.append(s)
    if len(picked) == count:
        return picked
    raise ValueError(f"only {len(picked)} services in distinct slots, {count} wanted")


async def anti_entropy(origin: Node, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    from pysyncer.adapters.embedded import EmbeddedAdapter
    from pysyncer.rpc.client import SyncClient
    from pysyncer.servicecenter.core import EmbeddedRegistry
    from pysyncer.store import create_store
    from pysyncer.sync.importer import Importer
    from pysyncer.sync.peers import PeerLink

    registry = EmbeddedRegistry()
    (workdir / "ae-store").mkdir(exist_ok=True)
    store = create_store("embedded", str(workdir / "ae-store"))
    await store.open()
    importer = Importer("dc-ae", EmbeddedAdapter(registry), store)
    await importer.start(renew_interval=3600)
    client = SyncClient(origin.rpc, dc=origin.dc)
    link = PeerLink(origin.dc, list, importer, store, lambda _: client, anti_entropy_interval=3600)
    rest = RegistryClient(origin.registry)
    listed = rest.instances(timeout=60)  # blocking, before anything is timed
    by_id = {i["instanceId"]: i for i in listed if ORIGIN_DC_PROPERTY not in i["properties"]}
    port = port_of(origin.rpc)
    out: dict[str, float] = {}
    try:
        epoch = str((await client.health()).epoch)
        cpu0, began = time.process_time(), time.monotonic()
        await asyncio.wait_for(link.repair(client, epoch), args.bound)
        out["ae_initial_s"] = time.monotonic() - began
        out["ae_initial_cpu_s"] = time.process_time() - cpu0
        link.synced = True
        rounds = 0
        for changed in args.ae_slot_counts:
            picks = distinct_slot_services(changed, args.instances // 10)
            rows: list[dict[str, float]] = []
            for _ in range(args.ae_repeats):
                rounds += 1
                before = int((await client.health()).revision)
                for s in picks:  # one instance per service: one slot each
                    inst = by_id[f"a-{s * 10}"]
                    rest.set_properties(inst["_sid"], inst["instanceId"], {"ae": str(rounds)})
                deadline = time.monotonic() + args.bound
                while int((await client.health()).revision) < before + changed:
                    if time.monotonic() > deadline:
                        status = origin.status()
                        raise TimeoutError(
                            f"{origin.name} did not export {changed} changes after revision "
                            f"{before}: revision {status.get('revision')}, exporter "
                            f"{status.get('exporter')}\n{origin.tail()}"
                        )
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # the mesh peers' streams take them meanwhile
                pulled0 = link.status.slots_pulled
                wire0 = tcp_bytes(os.getpid(), [port])
                origin0, cpu0, began = (
                    proc_cpu_ns(origin.pid),
                    time.process_time(),
                    time.monotonic(),
                )
                await asyncio.wait_for(link.repair(client, epoch), args.bound)
                wall = time.monotonic() - began
                cpu, origin_cpu = (
                    time.process_time() - cpu0,
                    (proc_cpu_ns(origin.pid) - origin0) / 1e9,
                )
                wire = tcp_bytes(os.getpid(), [port]).total - wire0.total
                rows.append(
                    {
                        "slots_compared": 16384.0,
                        "slots_pulled": float(link.status.slots_pulled - pulled0),
                        "records_pulled": float(link.status.progress.records_done),
                        "cpu_ms": 1000 * cpu,
                        "origin_cpu_ms": 1000 * origin_cpu,
                        "wire_bytes": float(wire),
                        "wall_ms": 1000 * wall,
                    }
                )
            for key in rows[0]:
                out[f"ae{changed}_{key}"] = statistics.median(r[key] for r in rows)
    finally:
        await client.close()
        await importer.close()
        await store.close()
    return out


def cost_model(report: dict[str, Any], counts: list[int]) -> dict[str, float]:
    """CPU per offered change at the highest rate as a line over the other data centers
    (N - 1): a fixed part (the origin's REST call, registry write, export) and a part per
    copy delivered; the cores the target needs at that cost. Pools that did not sync are
    left out; none: nothing."""
    measured = [n for n in counts if f"n{n}_cpu_per_change_ms" in report]
    if not measured:
        return {}
    line = fit_line(
        [float(n - 1) for n in measured], [report[f"n{n}_cpu_per_change_ms"] for n in measured]
    )
    per_change_ms = line.fixed + line.per_unit * (TARGET_DCS - 1)
    return {
        "cpu_per_change_fixed_ms": line.fixed,
        "cpu_per_copy_fit_ms": line.per_unit,
        "target_cores_fit": per_change_ms / 1000 * TARGET_RATE * TARGET_DCS,
    }


# -- one mesh ----------------------------------------------------------------------------


class PortTaken(PysyncerError, RuntimeError):
    """A daemon could not listen on a port picked free a moment before (taken meanwhile)."""


def with_fresh_ports(start: Callable[[int], _T], what: str) -> _T:
    """``start(attempt)`` (1, 2, ...), started again on other ports (at most
    ``POOL_ATTEMPTS`` times) when another process took one of its ports first."""
    for attempt in range(1, POOL_ATTEMPTS):
        try:
            return start(attempt)
        except PortTaken as exc:
            progress(f"{what}: {str(exc).splitlines()[0]} (port taken); starting again")
    return start(POOL_ATTEMPTS)


def run_mesh(dcs: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """One pool of ``dcs`` data centers (:func:`with_fresh_ports`)."""
    return with_fresh_ports(
        lambda attempt: run_pool(dcs, args, workdir / f"n{dcs}-{attempt}"), f"N={dcs}"
    )


def run_pool(dcs: int, args: argparse.Namespace, where: Path) -> dict[str, float]:
    need = estimate(dcs, args.instances)
    bound = sync_bound(dcs, need, args)
    where.mkdir()
    nodes: list[Node] = []
    readers: list[threading.Thread] = []
    filled: dict[str, float] = {}  # helper -> when it said it filled and exported
    quota = registry_quota(args.instances + MESH_SERVICES * 10)
    try:
        for i in range(dcs):
            join = nodes[0].bind if nodes else ""
            nodes.append(
                Node(
                    f"d{i}",
                    loopback_host(i),
                    where,
                    join=join,
                    helper_count=args.instances,
                    extra=quota,
                )
            )
            readers.append(read_helper(nodes[-1], filled))
        copies = (dcs - 1) * args.instances
        row: dict[str, float] = {
            "copies_per_dc": float(copies),
            "estimated_rss_mib": need["rss_per_daemon"] / MIB,
            "estimated_sync_cpu_s": need["sync_cpu_s"],
            "sync_bound_s": bound,
        }
        row.update(sync_mesh(nodes, filled, copies, bound, time.monotonic()))
        sync_cpu = sum(proc_cpu(n.pid) for n in nodes)
        row.update(
            sync_cpu_s=sync_cpu,
            sync_cpu_per_copy_us=(
                1e6 * sync_cpu / row["copies_mapped_total"] if row["copies_mapped_total"] else -1.0
            ),
            synced_rss_mib_max=max(proc_mem(n.pid, "VmRSS") for n in nodes) / MIB,
            synced_hwm_mib_max=max(proc_mem(n.pid, "VmHWM") for n in nodes) / MIB,
        )
        progress(
            f"N={dcs}: full mesh {'NOT ' * bool(row['sync_failed'])}synced in "
            f"{row['sync_s']:.1f} s (filled in "
            f"{row['fill_s']:.1f} s), daemons' CPU {sync_cpu:.0f} s, largest RSS "
            f"{row['synced_rss_mib_max']:.0f} MiB, peak {row['synced_hwm_mib_max']:.0f} MiB"
        )
        if row["sync_failed"]:
            return row
        pool_formed(nodes, POOL_BOUND_S)
        row.update(sweep(nodes, args))
        row["rss_mib_max"] = max(proc_mem(n.pid, "VmRSS") for n in nodes) / MIB
        if args.ae_slot_counts:
            try:
                row.update(asyncio.run(anti_entropy(nodes[0], args, where)))
            except TimeoutError as exc:  # the propagation figures are kept and shown
                why = str(exc) or f"a repair took longer than --bound {args.bound:g} s"
                print(f"N={dcs}: anti-entropy phase failed: {why}", file=sys.stderr)
                row["ae_failed"] = 1.0
        return row
    finally:
        procs.stop_all([n.process for n in nodes], grace=20)
        for reader in readers:  # each ends with its helper's output
            reader.join(timeout=5)
        for node in nodes:
            if node.process.stdout is not None:
                node.process.stdout.close()


def print_rate(rate: float, row: dict[str, float], prefix: str) -> None:
    def verdict(value: float, target: float) -> str:
        return "meets" if 0 <= value <= target else "MISSES"

    print(
        f"  at {rate:g}/s offered per dc: achieved {row[prefix + 'achieved_rate_per_dc']:.0f}/s"
        + ("  (FAILED: a wait past --bound or a request refused)" if row[prefix + "failed"] else "")
    )
    for label, key in (("register->visible", "visible"), ("delete->gone", "gone")):
        p50, p99 = row[f"{prefix}{key}_p50_ms"], row[f"{prefix}{key}_p99_ms"]
        print(
            f"    {label:<18} p50 {p50:8.1f} ms ({verdict(p50, TARGET_P50_MS)} "
            f"<= {TARGET_P50_MS:.0f})  p99 {p99:8.1f} ms ({verdict(p99, TARGET_P99_MS)} "
            f"<= {TARGET_P99_MS:.0f})  "
            f"{row[f'{prefix}{key}_count']:.0f}/{row[prefix + 'copies_expected']:.0f} copies"
        )
    print(
        f"    daemons' CPU {row[prefix + 'cpu_raw_s']:.1f} s in {row[prefix + 'phase_s']:.1f} s;"
        f" above idle {row[prefix + 'cpu_s']:.1f} s: {row[prefix + 'cpu_per_change_ms']:.2f} "
        f"ms per offered change, {row[prefix + 'cpu_per_copy_ms']:.3f} ms per copy delivered;"
        f" the target needs ~{row[prefix + 'target_cores']:.1f} cores at this cost "
        f"(client's CPU {row[prefix + 'client_cpu_s']:.1f} s, not counted)"
    )


def print_mesh(dcs: int, row: dict[str, float], args: argparse.Namespace) -> None:
    synced = (
        f"the full mesh NOT synced within {row['sync_bound_s']:.0f} s (at least "
        f"{row['copies_mapped_min']:.0f} copies mapped by each; nothing else measured)"
        if row["sync_failed"]
        else f"full mesh synced in {row['sync_s']:.1f} s (bound {row['sync_bound_s']:.0f})"
    )
    print(
        f"N={dcs} dcs x {args.instances} instances ({row['copies_per_dc']:.0f} copies each), "
        f"{synced}, "
        f"daemons' CPU {row['sync_cpu_s']:.0f} s ({row['sync_cpu_per_copy_us']:.0f} us per "
        f"copy); largest RSS {row['synced_rss_mib_max']:.0f} MiB, peak "
        f"{row['synced_hwm_mib_max']:.0f} MiB (estimated {row['estimated_rss_mib']:.0f})"
    )
    if row["sync_failed"]:
        return
    print(
        f"  {args.changes} registrations + deletions per dc per rate; idle rate "
        f"{row['idle_cpu_share']:.2f} CPU s/s over {row['idle_window_s']:.0f} s before the "
        f"sweep, {row['idle_after_cpu_share']:.2f} after; target "
        f"{TARGET_DCS} dcs x {TARGET_RATE:.0f} changes/s"
    )
    for rate in args.rates:
        if f"{rate_key(rate)}_failed" in row:
            print_rate(rate, row, f"{rate_key(rate)}_")
    sustainable = row["sustainable_rate_per_dc"]
    print(
        f"  sustainable (p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms, every "
        f"copy): {f'{sustainable:g}/s per dc' if sustainable else 'none of the rates'}"
    )
    if "ae_initial_s" in row:
        print(
            f"  anti-entropy from d0 into an in-process syncer: initial (all slots) "
            f"{row['ae_initial_s']:.2f} s, {row['ae_initial_cpu_s']:.2f} CPU s"
        )
        for changed in args.ae_slot_counts:
            p = f"ae{changed}_"
            print(
                f"    {changed:>4} changed slots: {row[p + 'slots_pulled']:.0f} pulled "
                f"({row[p + 'records_pulled']:.0f} records) of {row[p + 'slots_compared']:.0f} "
                f"compared; CPU {row[p + 'cpu_ms']:.1f} ms here + {row[p + 'origin_cpu_ms']:.1f} "
                f"ms origin; {row[p + 'wire_bytes']:.0f} B on the wire; "
                f"{row[p + 'wall_ms']:.0f} ms"
            )


def numbers(text: str, kind: type[float] | type[int]) -> list[Any]:
    """The sorted distinct numbers of a comma-separated list."""
    return sorted({kind(x) for x in text.split(",") if x.strip()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dcs", default="2,4", help="data centers per run (2,4)")
    parser.add_argument("--instances", type=int, default=5000, help="per data center (5000)")
    parser.add_argument("--rate", default="500", help="changes/s offered per dc, a list (500)")
    parser.add_argument("--changes", type=int, default=2000, help="registrations per dc per rate")
    parser.add_argument("--ae-slots", default="0,10,100", help="changed slots per AE round")
    parser.add_argument("--ae-repeats", type=int, default=3, help="AE rounds per count (3)")
    parser.add_argument("--bound", type=float, default=180.0, help="seconds per wait (180)")
    parser.add_argument("--sync-bound", type=float, default=0.0, help="seconds (0: estimated)")
    parser.add_argument("--idle-window", type=float, default=0.0, help="seconds (0: by size)")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    args = parser.parse_args(argv)
    counts = numbers(args.dcs, int)
    if not counts or counts[0] < 2:
        parser.error("--dcs: counts >= 2")
    args.rates = numbers(args.rate, float)
    if not args.rates or args.rates[0] <= 0:
        parser.error("--rate: rates > 0")
    args.ae_slot_counts = numbers(args.ae_slots, int)
    report: dict[str, Any] = {
        "dcs": ",".join(map(str, counts)),
        "instances_per_dc": args.instances,
        "rates_per_dc": ",".join(f"{r:g}" for r in args.rates),
        "rate_per_dc": args.rates[-1],
        "changes_per_dc": args.changes,
        "load_avg_start": load_average(),
        "cpus": os.cpu_count() or 0,
        "mem_available_mib": mem_available() / MIB,
    }
    for dcs in counts:  # every size is checked before the first starts
        try:
            preflight(dcs, args)
        except ValueError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C, so every daemon is stopped on the way out
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        for dcs in counts:
            row = run_mesh(dcs, args, Path(tmp))
            report.update({f"n{dcs}_{key}": value for key, value in row.items()})
            if not args.json:
                print_mesh(dcs, row, args)
    report.update(cost_model(report, counts))
    if not args.json and "cpu_per_copy_fit_ms" in report and len(counts) > 1:
        print(
            f"CPU per change at {args.rates[-1]:g}/s over N = {report['dcs']}: "
            f"{report['cpu_per_change_fixed_ms']:.3f} ms + {report['cpu_per_copy_fit_ms']:.3f} "
            f"ms per other data center; the target ({TARGET_DCS} dcs x {TARGET_RATE:.0f} "
            f"changes/s) needs ~{report['target_cores_fit']:.1f} cores"
        )
    report.update(
        load_avg_end=load_average(),
        target_p50_ms=TARGET_P50_MS,
        target_p99_ms=TARGET_P99_MS,
        target_dcs=TARGET_DCS,
        target_instances=TARGET_INSTANCES,
        target_rate_per_dc=TARGET_RATE,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    return 1 if any(report[f"n{n}_sync_failed"] for n in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
