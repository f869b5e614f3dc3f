"""Cost of one importing syncer per remote data center, steady and under churn (issue 17).

One local syncer (``dc-local``, ``--direction receive``) imports from K remote data
centers (``--remotes 1,2,4``); each remote is a real daemon (``--direction send``) filled
in-process with ``--instances`` instances (10 per service) by bench_sync's origin helper,
which keeps them alive with batch heartbeats. Every K is a fresh pool. Once the local
syncer maps every copy, two windows of ``--window`` seconds are measured on it:

- **steady**: nothing changes (the syncer still renews its copies and follows K links);
- **churn**: ``--churn-per-min`` % of every remote's instances change per minute, spread
  evenly in time, alternately a properties update and a delete + re-registration
  (same id) through the remote registry's REST API.

Per window: the local syncer's CPU share (utime+stime / wall), its RSS (median of
samples), the TCP payload bytes per second of its gRPC connections to the remotes'
sync ports (kernel ``tcp_info`` via ``ss``: protobuf + HTTP/2 framing; the gossip's UDP
is not counted, its packets per second are, from ``/metrics``). With
``--local-registry process`` (the default) the local data center's registry is a
separate ``pysyncer registry`` process, so the syncer's own cost and the registry's are
read apart (the registry's CPU, RSS; "with registry" = the sum); with ``embedded`` the
registry lives inside the daemon and only the sum is seen. A least-squares line over K
separates the fixed cost of the process from the cost per remote data center (the
slope), shown beside Istio's published multi-cluster figure.

    python -m benchmarks.bench_cost [--remotes 1,2,4] [--instances 4000]
        [--churn-per-min 1] [--window 60] [--local-registry process|embedded] [--json]

``--json`` prints one flat object (numbers and strings only):

- ``remotes`` ("1,2,4"), ``instances_per_remote``, ``churn_per_min_pct``, ``window_s``,
  ``local_registry`` ("process" or "embedded"), ``wire_counter`` (how bytes are
  counted), ``load_avg_start``, ``load_avg_end``, ``cpus``;
- per K and window (``<w>`` = ``steady`` or ``churn``): ``k<K>_<w>_cpu_share``
  (syncer, fraction of one core), ``k<K>_<w>_registry_cpu_share`` (the separate
  registry; 0 when embedded), ``k<K>_<w>_rss_mib`` and ``k<K>_<w>_registry_rss_mib``,
  ``k<K>_<w>_wire_bytes_per_s`` (received + sent), ``k<K>_<w>_wire_rx_bytes_per_s``,
  ``k<K>_<w>_wire_connections`` (gRPC connections counted),
  ``k<K>_<w>_gossip_packets_per_s``, ``k<K>_<w>_changes`` (changes made at the
  remotes), ``k<K>_<w>_errors`` (changes that failed), ``k<K>_<w>_applied`` (records
  the syncer applied); ``k<K>_sync_s`` (pool formed to every copy mapped);
- the fitted lines, for ``<w>``: ``<w>_cpu_share_per_remote``, ``<w>_cpu_share_fixed``,
  ``<w>_cpu_share_with_registry_per_remote``, ``<w>_rss_mib_per_remote``,
  ``<w>_rss_mib_with_registry_per_remote``, ``<w>_rss_mib_fixed``,
  ``<w>_wire_bytes_per_s_per_remote``, ``<w>_gossip_packets_per_s_per_remote``;
- ``goal_cpu_share_per_remote`` (0.005), ``goal_rss_mib_per_remote`` (10),
  ``istio_cpu_share_per_remote`` (0.01), ``istio_rss_mib_per_remote`` (180).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    MIB,
    fit_line,
    load_average,
    metric_sum,
    port_of,
    tcp_bytes,
)
from benchmarks.bench_sync import Node, pool_formed, proc_cpu, proc_mem, wait_until
from pysyncer.procs import RegistryClient, RegistryProcess, eventually, loopback_host

GOAL_CPU_SHARE = 0.005  # of one core per remote data center (issue 17)
GOAL_RSS_MIB = 10.0
ISTIO_CPU_SHARE = 0.01  # Istio's published multi-cluster figure, per remote cluster of
ISTIO_RSS_MIB = 180.0  # 300 services x 4,000 endpoints (as quoted in issue 17)
WIRE_COUNTER = "tcp_info bytes_received+bytes_sent of the syncer's gRPC connections (ss)"
WINDOWS = ("steady", "churn")
SAMPLE_S = 2.0  # RSS sampling period inside a window
SETTLE_S = 5.0  # after the full sync, before the first window
POOL_BOUND_S = 120.0  # every member sees every other alive
HERE = Path(__file__).resolve()


# -- churn ------------------------------------------------------------------------------


@dataclass
class Target:
    """One instance of a remote registry that the churn may change."""

    client: RegistryClient
    service_id: str
    instance_id: str
    host: str
    endpoints: list[str]


@dataclass
class Churn:
    """Changes made at the remotes from a thread, evenly spaced, until stopped."""

    per_remote: list[list[Target]]
    changes_per_s: float  # in all, over every remote
    done: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        # round-robin over the remotes; within one, its instances in turn
        cursors = [itertools.cycle(targets) for targets in self.per_remote]
        order = itertools.cycle(range(len(cursors)))
        began = time.monotonic()
        for n in itertools.count():
            if self._stop.wait(max(0.0, began + n / self.changes_per_s - time.monotonic())):
                return
            target = next(cursors[next(order)])
            try:
                change(target, n)
            except OSError as exc:  # counted; the window goes on
                self.errors.append(repr(exc))
            else:
                self.done += 1


def change(target: Target, n: int) -> None:
    """Even ``n``: a properties update; odd: a delete and a re-registration, same id."""
    if n % 2 == 0:
        target.client.set_properties(target.service_id, target.instance_id, {"churn": str(n)})
        return
    target.client.unregister(target.service_id, target.instance_id)
    target.client.register(
        target.service_id, target.host, target.endpoints, instance_id=target.instance_id
    )


def churn_targets(remote: Node) -> list[Target]:
    client = RegistryClient(remote.registry)
    return [
        Target(client, str(i["_sid"]), str(i["instanceId"]), str(i["hostName"]), i["endpoints"])
        for i in client.originals()
    ]


# -- one pool of K remotes ----------------------------------------------------------------


@dataclass
class Local:
    """The local syncer, and its registry when that is a separate process."""

    node: Node
    registry: RegistryProcess | None

    def cpu(self) -> tuple[float, float]:
        reg = proc_cpu(self.registry.process.pid) if self.registry is not None else 0.0
        return proc_cpu(self.node.pid), reg

    def rss(self) -> tuple[int, int]:
        reg = proc_mem(self.registry.process.pid, "VmRSS") if self.registry is not None else 0
        return proc_mem(self.node.pid, "VmRSS"), reg


def measure_window(
    local: Local, remotes: list[Node], seconds: float, churn: Churn | None
) -> dict[str, float]:
    """CPU share, median RSS, wire bytes/s and gossip packets/s over ``seconds``."""
    ports = [port_of(r.rpc) for r in remotes]

    def applied() -> int:
        return int(local.node.status()["importer"]["applied"])

    def packets() -> float:
        return metric_sum(local.node.admin, "pysyncer_gossip_packets_total")

    cpu0, reg_cpu0 = local.cpu()
    wire0 = tcp_bytes(local.node.pid, ports)
    applied0, packets0 = applied(), packets()
    began = time.monotonic()
    if churn is not None:
        churn.start()
    rss: list[int] = []
    reg_rss: list[int] = []
    try:
        while time.monotonic() - began < seconds:
            time.sleep(min(SAMPLE_S, max(0.0, seconds - (time.monotonic() - began))))
            own, reg = local.rss()
            rss.append(own)
            reg_rss.append(reg)
    finally:
        if churn is not None:
            churn.stop()
    wall = time.monotonic() - began
    cpu1, reg_cpu1 = local.cpu()
    wire1 = tcp_bytes(local.node.pid, ports)
    return {
        "cpu_share": (cpu1 - cpu0) / wall,
        "registry_cpu_share": (reg_cpu1 - reg_cpu0) / wall,
        "rss_mib": statistics.median(rss) / MIB,
        "registry_rss_mib": statistics.median(reg_rss) / MIB,
        "wire_bytes_per_s": (wire1.total - wire0.total) / wall,
        "wire_rx_bytes_per_s": (wire1.received - wire0.received) / wall,
        "wire_connections": float(wire1.connections),
        "gossip_packets_per_s": (packets() - packets0) / wall,
        "changes": float(churn.done if churn is not None else 0),
        "errors": float(len(churn.errors) if churn is not None else 0),
        "applied": float(applied() - applied0),
    }


def run_pool(k: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """K remotes and the local syncer; the full sync, then the two windows."""
    where = workdir / f"k{k}"
    where.mkdir()
    nodes: list[Node] = []
    registry: RegistryProcess | None = None
    try:
        remotes: list[Node] = []
        for i in range(k):
            join = remotes[0].bind if remotes else ""
            remote = Node(
                f"r{i}",
                loopback_host(i + 1),
                where,
                join=join,
                helper_count=args.instances,
                extra=["--direction", "send"],
            )
            remotes.append(remote)
            nodes.append(remote)
        for remote in remotes:  # each helper prints one line once filled and exported
            assert remote.process.stdout is not None
            if not remote.process.stdout.readline():
                raise RuntimeError(f"remote helper {remote.name} failed:\n{remote.tail()}")
        extra = ["--direction", "receive"]
        if args.local_registry == "process":
            registry = RegistryProcess(where, "local-registry", cwd=HERE.parent.parent)
            eventually(registry.ready, 30, "the local registry", registry)
            extra += ["--registry-url", registry.url]
        node = Node("local", loopback_host(0), where, join=remotes[0].bind, extra=extra)
        nodes.append(node)
        local = Local(node, registry)
        pool_formed(nodes, POOL_BOUND_S)
        expected = k * args.instances
        sync_s = wait_until(
            lambda: node.copies() >= expected, args.bound, "full sync", node, *remotes
        )
        time.sleep(SETTLE_S)
        targets = [churn_targets(r) for r in remotes]
        rate = k * args.instances * args.churn_per_min / 100.0 / 60.0
        row: dict[str, float] = {"sync_s": sync_s}
        for window in WINDOWS:
            churn = Churn(targets, rate) if window == "churn" and rate > 0 else None
            measured = measure_window(local, remotes, args.window, churn)
            row.update({f"{window}_{key}": value for key, value in measured.items()})
            if not args.json:
                print(f"  K={k} {window}: {format_row(measured)}", flush=True)
        return row
    finally:
        for each in reversed(nodes):
            each.stop()
        if registry is not None:
            registry.stop()


def format_row(row: dict[str, float]) -> str:
    return (
        f"syncer CPU {100 * row['cpu_share']:.2f} % of a core, registry "
        f"{100 * row['registry_cpu_share']:.2f} %; RSS {row['rss_mib']:.1f} MiB "
        f"(registry {row['registry_rss_mib']:.1f}); wire {row['wire_bytes_per_s']:.0f} B/s; "
        f"{row['gossip_packets_per_s']:.1f} gossip packets/s; {row['changes']:.0f} changes, "
        f"{row['applied']:.0f} applied"
    )


# -- the model -------------------------------------------------------------------------


def fitted(report: dict[str, Any], ks: list[int]) -> dict[str, float]:
    """Per window: lines over K of the syncer's figures and of the registry-included ones."""
    out: dict[str, float] = {}

    def line(value: Callable[[int], float]) -> tuple[float, float]:
        fit = fit_line([float(k) for k in ks], [value(k) for k in ks])
        return fit.fixed, fit.per_unit

    for w in WINDOWS:

        def get(k: int, key: str, w: str = w) -> float:
            return float(report[f"k{k}_{w}_{key}"])

        fixed, per = line(lambda k: get(k, "cpu_share"))
        out[f"{w}_cpu_share_fixed"], out[f"{w}_cpu_share_per_remote"] = fixed, per
        _, out[f"{w}_cpu_share_with_registry_per_remote"] = line(
            lambda k: get(k, "cpu_share") + get(k, "registry_cpu_share")
        )
        fixed, per = line(lambda k: get(k, "rss_mib"))
        out[f"{w}_rss_mib_fixed"], out[f"{w}_rss_mib_per_remote"] = fixed, per
        _, out[f"{w}_rss_mib_with_registry_per_remote"] = line(
            lambda k: get(k, "rss_mib") + get(k, "registry_rss_mib")
        )
        _, out[f"{w}_wire_bytes_per_s_per_remote"] = line(lambda k: get(k, "wire_bytes_per_s"))
        _, out[f"{w}_gossip_packets_per_s_per_remote"] = line(
            lambda k: get(k, "gossip_packets_per_s")
        )
    return out


def verdict(value: float, goal: float) -> str:
    return "meets" if value <= goal else "MISSES"


def print_model(report: dict[str, Any]) -> None:
    registry = report["local_registry"]
    print(
        f"\ncost per remote data center of {report['instances_per_remote']} instances "
        f"(slope over K = {report['remotes']}; local registry: {registry}; "
        f"load average {report['load_avg_start']:.1f} -> {report['load_avg_end']:.1f})"
    )
    churn = f"churn {report['churn_per_min_pct']:g} %/min"
    print(f"{'':<34}{'steady':>14}{churn:>18}{'goal':>10}{'Istio':>10}")
    rows = [
        ("CPU, syncer (% of a core)", "cpu_share_per_remote", 100.0, GOAL_CPU_SHARE * 100, 1.0),
        (
            "CPU, with registry (% of a core)",
            "cpu_share_with_registry_per_remote",
            100.0,
            GOAL_CPU_SHARE * 100,
            1.0,
        ),
        ("RSS, syncer (MiB)", "rss_mib_per_remote", 1.0, GOAL_RSS_MIB, ISTIO_RSS_MIB),
        (
            "RSS, with registry (MiB)",
            "rss_mib_with_registry_per_remote",
            1.0,
            GOAL_RSS_MIB,
            ISTIO_RSS_MIB,
        ),
        ("wire, gRPC (B/s)", "wire_bytes_per_s_per_remote", 1.0, None, None),
        ("gossip packets/s", "gossip_packets_per_s_per_remote", 1.0, None, None),
    ]
    for label, key, scale, goal, istio in rows:
        cells = [scale * report[f"{w}_{key}"] for w in WINDOWS]
        goal_cell = f"{goal:>10.2f}" if goal is not None else f"{'':>10}"
        istio_cell = f"{istio:>10.0f}" if istio is not None else f"{'':>10}"
        marks = ""
        if goal is not None:
            marks = "  " + "/".join(verdict(c, goal) for c in cells)
        print(f"{label:<34}{cells[0]:>14.3f}{cells[1]:>18.3f}{goal_cell}{istio_cell}{marks}")
    print(
        f"fixed (K=0 intercept): syncer CPU {100 * report['steady_cpu_share_fixed']:.2f} % "
        f"of a core, RSS {report['steady_rss_mib_fixed']:.0f} MiB"
    )
    print(
        "Istio: its published multi-cluster figure, about 1 % of a core and 180 MB per remote "
        "cluster of 300 services x 4,000 endpoints"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--remotes", default="1,2,4", help="remote data centers per run (1,2,4)")
    parser.add_argument("--instances", type=int, default=4000, help="per remote dc (4000)")
    parser.add_argument(
        "--churn-per-min", type=float, default=1.0, help="%% of instances changed per minute (1)"
    )
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window (60)")
    parser.add_argument(
        "--local-registry", choices=("process", "embedded"), default="process",
        help="the local dc's registry: a separate pysyncer registry process, or embedded",
    )  # fmt: skip
    parser.add_argument("--bound", type=float, default=120.0, help="full-sync bound (120 s)")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    args = parser.parse_args(argv)
    ks = sorted({int(k) for k in args.remotes.split(",") if k.strip()})
    if not ks or ks[0] < 1:
        parser.error("--remotes: one or more counts >= 1")
    report: dict[str, Any] = {
        "remotes": ",".join(map(str, ks)),
        "instances_per_remote": args.instances,
        "churn_per_min_pct": args.churn_per_min,
        "window_s": args.window,
        "local_registry": args.local_registry,
        "wire_counter": WIRE_COUNTER,
        "load_avg_start": load_average(),
        "cpus": os.cpu_count() or 0,
    }
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        for k in ks:
            if not args.json:
                print(f"K={k}: {k} remote dc(s) x {args.instances} instances", flush=True)
            row = run_pool(k, args, Path(tmp))
            report.update({f"k{k}_{key}": value for key, value in row.items()})
    report["load_avg_end"] = load_average()
    report.update(fitted(report, ks))
    report.update(
        goal_cpu_share_per_remote=GOAL_CPU_SHARE,
        goal_rss_mib_per_remote=GOAL_RSS_MIB,
        istio_cpu_share_per_remote=ISTIO_CPU_SHARE,
        istio_rss_mib_per_remote=ISTIO_RSS_MIB,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_model(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
