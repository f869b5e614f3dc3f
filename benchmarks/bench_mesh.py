"""N data centers in a full mesh: propagation under offered load, and anti-entropy cost.

For each N of ``--dcs`` (a fresh pool each time), N real daemons, each filled in-process
with ``--instances`` instances (10 per service, bench_sync's origin helper) and
importing every other one's, so each holds ``(N - 1) x --instances`` copies. Before
starting, the memory and CPU that N needs are estimated from the per-copy figures of
docs/capacity.md and printed; a size that cannot fit this machine is refused.

1. **Propagation**: once every daemon maps every copy, every data center registers
   ``--changes`` new instances through its REST API at ``--rate`` per second (all data
   centers at once, 8 requests in flight each: a slow answer lowers the rate achieved,
   which is reported), then deletes them at the same rate. Every registry's change feed
   is followed (bench_sync's ``follow_feed``) to timestamp each copy's arrival and
   removal in every other data center: register->visible and delete->gone p50/p99
   across all other data centers. The daemons' CPU over the phase, minus their idle
   CPU rate measured just before, divided by the changes offered, is the **CPU seconds
   per offered change** (and per copy delivered), from which the cores the issue's
   target (8 data centers x 100,000, 500 changes/s each) needs are derived.
2. **Anti-entropy**: a syncer run in this process (the engine's own ``Importer`` and
   ``PeerLink``, an embedded registry, a SQLite store) first repairs from the first data
   center (every slot: the initial sync), then, for each count in ``--ae-slots``, that
   many services of it (each in a different slot) get one instance's properties
   changed and one digest round runs: slots compared (the whole 16,384-slot table),
   slots and records pulled, CPU of this process and of the origin daemon, TCP bytes
   (``ss``), wall time. Median of ``--ae-repeats`` rounds each.

    python -m benchmarks.bench_mesh [--dcs 2,4,8] [--instances 5000] [--rate 500]
        [--changes 2000] [--ae-slots 0,10,100] [--json]

``--json`` prints one flat object (numbers and strings only): ``dcs`` ("2,4"),
``instances_per_dc``, ``rate_per_dc``, ``changes_per_dc``, ``load_avg_start``,
``load_avg_end``, ``cpus``; per N (``n<N>_`` prefix): ``sync_s`` (last spawn to every
copy mapped), ``copies_per_dc``, ``rss_mib_max`` (largest daemon RSS),
``estimated_rss_mib`` (the pre-flight estimate per daemon), ``visible_p50_ms``,
``visible_p99_ms``, ``visible_count``, ``gone_p50_ms``, ``gone_p99_ms``, ``gone_count``,
``copies_expected``, ``offered_rate_per_dc`` and ``achieved_rate_per_dc``
(registrations per second per data center), ``cpu_raw_s`` (all daemons over the phase
of ``phase_s`` seconds), ``idle_cpu_share`` (their CPU s/s before it), ``cpu_s`` (above
idle), ``cpu_per_change_ms``, ``cpu_per_copy_ms``, ``client_cpu_s`` (this process, which
drives the load), ``target_cores`` (the cores 8 x 500 changes/s would need at this
cost per copy), ``ae_initial_s``, ``ae_initial_cpu_s`` (or ``ae_failed`` = 1 when the
anti-entropy phase timed out); per N and changed-slot count S
(``n<N>_ae<S>_`` prefix): ``slots_compared``, ``slots_pulled``, ``records_pulled``,
``cpu_ms`` (this process), ``origin_cpu_ms``, ``wire_bytes``, ``wall_ms``; and
the line over N of the CPU per change: ``cpu_per_change_fixed_ms`` (at N - 1 = 0),
``cpu_per_copy_fit_ms`` (per other data center), ``target_cores_fit`` (cores for 8 x
500 changes/s at that cost); ``target_p50_ms`` (20), ``target_p99_ms`` (100),
``target_dcs`` (8), ``target_instances`` (100000), ``target_rate_per_dc`` (500).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    wait_until,
)
from pysyncer.model import ORIGIN_DC_PROPERTY, ServiceKey
from pysyncer.procs import RegistryClient, loopback_host

TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
TARGET_DCS = 8
TARGET_INSTANCES = 100_000
TARGET_RATE = 500.0
# Pre-flight model, from docs/capacity.md (bench_sync, 100,000-1,000,000 copies):
IDLE_RSS = 80 * (1 << 20)  # an idle daemon's RSS
RSS_PER_COPY = 1_900  # a copy held, embedded registry included
RSS_PER_OWN = 2_500  # an instance of its own (registry + export log + digests)
CPU_PER_COPY_S = 90e-6  # initial full sync, per copy
MEMORY_SHARE = 0.6  # of MemAvailable the pool may take
FEED_WARMUP_S = 1.5  # every feed is past its first (reset) answer
IDLE_RATE_S = 10.0  # seconds of idle CPU measured before the load
MESH_SERVICES = 20  # services per data center for the measured instances
POOL_BOUND_S = 120.0  # every member sees every other alive


def estimate(dcs: int, instances: int) -> dict[str, float]:
    """RSS per daemon and the whole pool's; CPU of the initial full sync, in all."""
    copies = (dcs - 1) * instances
    per_daemon = IDLE_RSS + copies * RSS_PER_COPY + instances * RSS_PER_OWN
    return {
        "copies_per_dc": float(copies),
        "rss_per_daemon": float(per_daemon),
        "rss_total": float(dcs * per_daemon),
        "sync_cpu_s": dcs * copies * CPU_PER_COPY_S,
    }


def preflight(dcs: int, instances: int, bound: float) -> dict[str, float]:
    """Print the estimate; ValueError when the pool cannot fit memory or the bound."""
    need = estimate(dcs, instances)
    free = mem_available()
    cores = os.cpu_count() or 1
    print(
        f"N={dcs} x {instances} instances: each daemon holds {need['copies_per_dc']:.0f} "
        f"copies, ~{need['rss_per_daemon'] / MIB:.0f} MiB RSS each, "
        f"~{need['rss_total'] / MIB:.0f} MiB in all (available {free / MIB:.0f} MiB); "
        f"full sync ~{need['sync_cpu_s']:.0f} CPU s on {cores} cores",
        file=sys.stderr,
        flush=True,
    )
    if need["rss_total"] > MEMORY_SHARE * free:
        raise ValueError(
            f"N={dcs} x {instances} needs ~{need['rss_total'] / MIB:.0f} MiB, more than "
            f"{MEMORY_SHARE:.0%} of the {free / MIB:.0f} MiB available"
        )
    if need["sync_cpu_s"] / cores > bound:
        raise ValueError(
            f"N={dcs} x {instances}: the full sync needs ~{need['sync_cpu_s']:.0f} CPU s, "
            f"more than --bound {bound:.0f} s on {cores} cores"
        )
    return need


# -- phase 1: propagation under offered load -------------------------------------------


async def propagation(nodes: list[Node], changes: int, rate: float, bound: float) -> Propagation:
    """Every dc registers ``changes`` new instances at ``rate``/s, then deletes them."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=0)
    )
    prop, stop = Propagation(), asyncio.Event()
    async with session:
        feeds = [asyncio.create_task(follow_feed(session, n, prop, stop)) for n in nodes]
        await asyncio.sleep(FEED_WARMUP_S)
        regs: dict[str, list[tuple[str, str, str, Any]]] = {}
        dels: dict[str, list[tuple[str, str, str, Any]]] = {}
        for node in nodes:
            base = f"http://{node.registry}/v4/default/registry/microservices"
            sids = []
            for s in range(MESH_SERVICES):
                body = {"service": {"appId": "mesh", "serviceName": f"m{s}", "version": "1.0.0"}}
                async with session.post(base, json=body) as response:
                    sids.append(str((await response.json())["serviceId"]))
            regs[node.name], dels[node.name] = [], []
            for n in range(changes):
                iid, sid = f"{node.name}-m{n}", sids[n % MESH_SERVICES]
                instance = {
                    "instanceId": iid,
                    "hostName": iid,
                    "endpoints": [f"rest://10.1.0.1:{n}"],
                }
                regs[node.name].append(
                    ("POST", f"{base}/{sid}/instances", iid, {"instance": instance})
                )
                dels[node.name].append(("DELETE", f"{base}/{sid}/instances/{iid}", iid, None))
        expected = changes * len(nodes) * (len(nodes) - 1)
        for jobs, stamps, seen in (
            (regs, prop.acked, prop.arrived),
            (dels, prop.deleted, prop.gone),
        ):
            await asyncio.wait_for(
                asyncio.gather(
                    *(drive(session, jobs[n.name], 8, rate, stamps.__setitem__) for n in nodes)
                ),
                bound,
            )
            deadline = time.monotonic() + bound
            while len(seen) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*feeds, return_exceptions=True)
    return prop


def run_propagation(nodes: list[Node], args: argparse.Namespace) -> dict[str, float]:
    pids = [n.pid for n in nodes]
    idle0 = sum(map(proc_cpu, pids))
    time.sleep(IDLE_RATE_S)
    idle_rate = (sum(map(proc_cpu, pids)) - idle0) / IDLE_RATE_S
    cpu0, client0, began = sum(map(proc_cpu, pids)), time.process_time(), time.monotonic()
    prop = asyncio.run(propagation(nodes, args.changes, args.rate, args.bound))
    wall = time.monotonic() - began
    raw = sum(map(proc_cpu, pids)) - cpu0
    cpu = max(0.0, raw - idle_rate * wall)
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
        "offered_rate_per_dc": args.rate,
        "achieved_rate_per_dc": len(reg_times) / dcs / reg_span if reg_span else 0.0,
        "cpu_s": cpu,
        "cpu_raw_s": raw,
        "phase_s": wall,
        "idle_cpu_share": idle_rate,
        "cpu_per_change_ms": 1000 * cpu / offered,
        "cpu_per_copy_ms": 1000 * per_copy,
        "client_cpu_s": time.process_time() - client0,
        # 8 dcs x 500 changes/s, each delivered to 7 others, at this cost per copy
        "target_cores": per_copy * TARGET_DCS * TARGET_RATE * (TARGET_DCS - 1),
    }


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
        await link.repair(client, epoch)
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
                await link.repair(client, epoch)
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
    """CPU per offered change as a line over the other data centers (N - 1): a fixed part
    (the origin's REST call, registry write, export) and a part per copy delivered; the
    cores the target needs at that cost."""
    line = fit_line(
        [float(n - 1) for n in counts], [report[f"n{n}_cpu_per_change_ms"] for n in counts]
    )
    per_change_ms = line.fixed + line.per_unit * (TARGET_DCS - 1)
    return {
        "cpu_per_change_fixed_ms": line.fixed,
        "cpu_per_copy_fit_ms": line.per_unit,
        "target_cores_fit": per_change_ms / 1000 * TARGET_RATE * TARGET_DCS,
    }


# -- one mesh ----------------------------------------------------------------------------


def run_mesh(dcs: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    need = estimate(dcs, args.instances)
    where = workdir / f"n{dcs}"
    where.mkdir()
    nodes: list[Node] = []
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
        for node in nodes:  # each helper prints one line once filled and exported
            assert node.process.stdout is not None
            if not node.process.stdout.readline():
                raise RuntimeError(f"helper {node.name} failed:\n{node.tail()}")
        pool_formed(nodes, POOL_BOUND_S)
        copies = (dcs - 1) * args.instances
        began = time.monotonic()
        wait_until(
            lambda: all(n.copies() >= copies for n in nodes), args.bound, "full mesh", *nodes
        )
        row: dict[str, float] = {
            "sync_s": time.monotonic() - began,
            "copies_per_dc": float(copies),
            "estimated_rss_mib": need["rss_per_daemon"] / MIB,
        }
        row.update(run_propagation(nodes, args))
        row["rss_mib_max"] = max(proc_mem(n.pid, "VmRSS") for n in nodes) / MIB
        if args.ae_slot_counts:
            try:
                row.update(asyncio.run(anti_entropy(nodes[0], args, where)))
            except TimeoutError as exc:  # the propagation figures are kept and shown
                print(f"N={dcs}: anti-entropy phase failed: {exc}", file=sys.stderr)
                row["ae_failed"] = 1.0
        return row
    finally:
        for node in reversed(nodes):
            node.stop()


def print_mesh(dcs: int, row: dict[str, float], args: argparse.Namespace) -> None:
    print(
        f"N={dcs} dcs x {args.instances} instances ({row['copies_per_dc']:.0f} copies each), "
        f"full mesh synced in {row['sync_s']:.1f} s; largest RSS {row['rss_mib_max']:.0f} MiB "
        f"(estimated {row['estimated_rss_mib']:.0f})"
    )
    print(
        f"  {args.changes} registrations + deletions per dc offered at {args.rate:.0f}/s "
        f"(achieved {row['achieved_rate_per_dc']:.0f}/s per dc)"
    )
    for label, key in (("register->visible", "visible"), ("delete->gone", "gone")):
        p50, p99 = row[f"{key}_p50_ms"], row[f"{key}_p99_ms"]
        print(
            f"  {label:<18} p50 {p50:8.1f} ms ({'meets' if p50 <= TARGET_P50_MS else 'MISSES'} "
            f"<= {TARGET_P50_MS:.0f})  p99 {p99:8.1f} ms "
            f"({'meets' if p99 <= TARGET_P99_MS else 'MISSES'} <= {TARGET_P99_MS:.0f})  "
            f"{row[f'{key}_count']:.0f}/{row['copies_expected']:.0f} copies"
        )
    print(
        f"  daemons' CPU {row['cpu_raw_s']:.1f} s in {row['phase_s']:.1f} s, idle rate "
        f"{row['idle_cpu_share']:.2f} CPU s/s; above idle {row['cpu_s']:.1f} s: "
        f"{row['cpu_per_change_ms']:.2f} ms per "
        f"offered change, {row['cpu_per_copy_ms']:.3f} ms per copy delivered; the target "
        f"({TARGET_DCS} dcs x {TARGET_RATE:.0f} changes/s) needs ~{row['target_cores']:.1f} "
        f"cores at this cost (client's CPU {row['client_cpu_s']:.1f} s, not counted)"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dcs", default="2,4", help="data centers per run (2,4)")
    parser.add_argument("--instances", type=int, default=5000, help="per data center (5000)")
    parser.add_argument("--rate", type=float, default=500.0, help="changes/s offered per dc")
    parser.add_argument("--changes", type=int, default=2000, help="registrations per dc (2000)")
    parser.add_argument("--ae-slots", default="0,10,100", help="changed slots per AE round")
    parser.add_argument("--ae-repeats", type=int, default=3, help="AE rounds per count (3)")
    parser.add_argument("--bound", type=float, default=180.0, help="seconds per wait (180)")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.dcs.split(",") if n.strip()})
    if not counts or counts[0] < 2:
        parser.error("--dcs: counts >= 2")
    args.ae_slot_counts = [int(s) for s in args.ae_slots.split(",") if s.strip()]
    report: dict[str, Any] = {
        "dcs": ",".join(map(str, counts)),
        "instances_per_dc": args.instances,
        "rate_per_dc": args.rate,
        "changes_per_dc": args.changes,
        "load_avg_start": load_average(),
        "cpus": os.cpu_count() or 0,
    }
    for dcs in counts:  # every size is checked before the first starts
        try:
            preflight(dcs, args.instances, args.bound)
        except ValueError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        for dcs in counts:
            row = run_mesh(dcs, args, Path(tmp))
            report.update({f"n{dcs}_{key}": value for key, value in row.items()})
            if not args.json:
                print_mesh(dcs, row, args)
    report.update(cost_model(report, counts))
    if not args.json and len(counts) > 1:
        print(
            f"CPU per change over N = {report['dcs']}: {report['cpu_per_change_fixed_ms']:.3f} ms "
            f"+ {report['cpu_per_copy_fit_ms']:.3f} ms per other data center; the target "
            f"({TARGET_DCS} dcs x {TARGET_RATE:.0f} changes/s) needs "
            f"~{report['target_cores_fit']:.1f} cores"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
