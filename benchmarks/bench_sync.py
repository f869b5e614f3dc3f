"""Sync engine figures from real ``pysyncer daemon`` processes with embedded registries.

Three phases, each bounded in time, every subprocess stopped by its pid at the end:

1. **Propagation**: three data centers in one gossip pool; a client registers
   ``--services`` x ``--instances`` instances through the origins' REST APIs (services
   spread over the three data centers, all registering in parallel), then deletes them.
   Every destination registry is followed through its change feed
   (``GET /v4/default/registry/changes``) to timestamp each copy's arrival and removal;
   latency = arrival - the origin's acknowledgement. p50/p99 and the throughput.
2. **Initial full sync**: dc A (an in-process daemon in a helper process, filled with
   ``--full`` instances through the embedded registry's Python API) and then dc B, a real
   daemon: time from B's spawn until B maps every copy; B's peak RSS (VmHWM).
3. **Renewals and memory**: B's CPU (utime+stime) over one renewal pass of every copy,
   scaled to a TTL period; B's RSS minus an idle daemon's, per copy. ``--breakdown N``
   also maps N copies in-process under tracemalloc and shows where the memory goes.

``--secure on`` runs every daemon with gossip encryption and mutual TLS on the sync plane
(a key and certificates made as the demo makes them); ``--secure both`` runs the
propagation phase plaintext and then secure, reports the overhead of p50/p99, and times
fresh connections (TCP, TLS handshake, one Health call) both ways.

    python -m benchmarks.bench_sync [--small] [--full 100000] [--breakdown 20000] [--json]
    python -m benchmarks.bench_sync --phases propagation --secure both [--rounds 3]
    python -m benchmarks.bench_sync --phases full --full 100000 --secure on
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.witness import Witnesses, classify, paused
from pysyncer import procs
from pysyncer.demo.pki import PoolSecrets
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY
from pysyncer.procs import free_port

TARGET_P50_MS = 100.0
TARGET_P99_MS = 500.0
TARGET_FULL_SYNC_S = 10.0  # up to 100,000 instances
TARGET_FULL_SYNC_PER_MILLION_S = 60.0  # beyond: 60 s per 1,000,000 (issue 17)
TARGET_BYTES_PER_COPY = 300.0
TARGET_SECURE_P50_OVERHEAD = 0.10  # mutual TLS + gossip encryption: p50 within +10%
HANDSHAKES = 50  # fresh connections timed per mode
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HERE = Path(__file__).resolve()


# -- processes ----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    user, system, _ = proc_usage(pid)
    return user + system


def proc_usage(pid: int) -> tuple[float, float, int]:
    """``pid``'s CPU so far in seconds, its own code's (user) and the kernel's for it
    (system: page faults, writes, task switches), and its minor page faults (a fresh page
    first touched; on a virtual machine whose host backs memory lazily, the system time
    grows with them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, int(fields[7])


PROBE_KEYS = 200_000  # the host probe's dict: a fixed piece of the work a sync does


def host_probe() -> float:
    """Seconds of this process's CPU for a fixed piece of Python work (a dict of
    :data:`PROBE_KEYS` string keys to tuples, built and dropped), the best of three: the
    same work on the same code takes longer on a slower or busier host, so a sync's time
    can be read against the machine's speed at that moment (taken just before B starts
    and just after it has mapped every copy)."""
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        table = {f"instance-{n}": (n, str(n)) for n in range(PROBE_KEYS)}
        del table
        best = min(best, time.process_time() - began)
    return round(best, 4)


def proc_mem(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory line (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


class Node:
    """One daemon subprocess (``pysyncer daemon`` or the origin helper) on free ports."""

    def __init__(
        self,
        name: str,
        host: str,
        workdir: Path,
        join: str = "",
        helper_count: int = 0,
        secrets: PoolSecrets | None = None,
        extra: Sequence[str] = (),
        lag_file: Path | None = None,
        tripwire: bool = False,
    ) -> None:
        self.name = name
        self.dc = f"dc-{name}"
        self.secrets = secrets
        self.bind = f"{host}:{free_port(host)}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        self.registry = f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"{name}.log"
        flags = [
            "--node",
            name,
            "--dc",
            self.dc,
            "--bind",
            self.bind,
            "--admin-addr",
            self.admin,
            "--rpc-addr",
            self.rpc,
            "--registry-addr",
            self.registry,
            "--data-dir",
            str(workdir / name),
            "--log-level",
            "warning",
        ]
        if secrets is not None:
            flags += secrets.flags(self.dc, name)
        if join:
            flags += ["--join", join]
        # Unlimited import writes: these figures are the syncer's own, not its write budget's
        # (benchmarks/bench_budget.py measures that); ``extra`` may set a budget again.
        flags += ["--import-rate-bootstrap", "0", "--import-rate-steady", "0"]
        flags += list(extra)
        if helper_count:
            helper = [sys.executable, "-m", __spec__.name, "--origin-helper", str(helper_count)]
            command = [*helper, *flags]
        elif lag_file is not None:  # the daemon, with its event loop's stalls sampled
            command = [sys.executable, "-m", __spec__.name, "--lag-helper", str(lag_file)]
            command += [TRIPWIRE_FLAG, *flags] if tripwire else flags
        else:
            command = [sys.executable, "-m", "pysyncer", "daemon", *flags]
        self.log_path.unlink(missing_ok=True)
        self.process = procs.spawn(
            command,
            self.log_path,
            cwd=HERE.parent.parent,
            pipe_stdout=bool(helper_count),
            pipe_stdin=bool(helper_count),  # churn commands (origin_helper)
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        try:
            return dict(self.admin_get("/v1/sync/status"))
        except OSError:
            return {}

    def copies(self) -> int:
        return sum(int(r.get("copies", 0)) for r in self.status().get("remote", {}).values())

    def stop(self) -> None:
        procs.stop_process(self.process, grace=20, kill_wait=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stdin is not None:
            self.process.stdin.close()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def check_running(self, what: str) -> None:
        """RuntimeError saying how the process ended, when it has (a killed daemon left
        no ``VmRSS`` to read, and the report said only that)."""
        code = self.process.poll()
        if code is None:
            return
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise RuntimeError(f"{self.name} ended ({how}) during {what}; its log:\n{self.tail()}")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *nodes: Node) -> float:
    """Poll ``condition`` every 50 ms; the seconds it took, or raise with the logs."""
    return procs.eventually(condition, timeout, what, *nodes, interval=0.05, error=TimeoutError)


def pool_formed(nodes: list[Node], timeout: float) -> None:
    def formed() -> bool:
        for node in nodes:
            try:
                members = node.admin_get("/v1/members")["members"]
            except OSError:
                return False
            if sum(m["status"] == "alive" for m in members) < len(nodes):
                return False
        return True

    wait_until(formed, timeout, "the gossip pool", *nodes)


# -- phase 1: propagation latency -----------------------------------------------------


@dataclass
class Propagation:
    acked: dict[str, float] = field(default_factory=dict)  # origin instance id -> ack time
    deleted: dict[str, float] = field(default_factory=dict)
    arrived: dict[tuple[str, str], float] = field(default_factory=dict)  # (dest, id) -> t
    gone: dict[tuple[str, str], float] = field(default_factory=dict)
    resets: int = 0


async def follow_feed(
    session: aiohttp.ClientSession, node: Node, prop: Propagation, stop: asyncio.Event
) -> None:
    """Timestamp every copy's CREATE and DELETE in ``node``'s registry."""
    url = f"http://{node.registry}/v4/default/registry/changes"
    since = 0
    while not stop.is_set():
        async with session.get(url, params={"since": str(since), "timeout": "1"}) as response:
            body = await response.json()
        now = time.monotonic()
        if body.get("reset"):
            prop.resets += 1
        since = int(body["revision"])
        for change in body["changes"]:
            instance = change.get("instance") or {}
            props = instance.get("properties") or {}
            origin = props.get(ORIGIN_ID_PROPERTY)
            if origin is None or props.get(ORIGIN_DC_PROPERTY) == node.dc:
                continue
            key = (node.name, str(origin))
            if change["action"] == "CREATE":
                prop.arrived.setdefault(key, now)
            elif change["action"] == "DELETE":
                prop.gone.setdefault(key, now)


async def drive(
    session: aiohttp.ClientSession,
    jobs: list[tuple[str, str, str, Any]],
    concurrency: int,
    rate: float,
    on_ok: Callable[[str, float], None],
) -> None:
    """Run (method, url, key, body) requests, ``concurrency`` in flight, at most ``rate``/s."""
    queue: asyncio.Queue[tuple[int, tuple[str, str, str, Any]]] = asyncio.Queue()
    for item in enumerate(jobs):
        queue.put_nowait(item)
    start = time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            index, (method, url, key, body) = queue.get_nowait()
            if rate > 0:
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
            async with session.request(method, url, json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
                await response.read()
            on_ok(key, time.monotonic())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * pick(0.99),
        "max_ms": 1000 * ordered[-1],
    }


async def propagation_run(
    nodes: list[Node], services: int, per_service: int, concurrency: int, rate: float, bound: float
) -> dict[str, Any]:
    prop = Propagation()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        feeds = [asyncio.create_task(follow_feed(session, n, prop, stop)) for n in nodes]
        await asyncio.sleep(1.5)  # every feed is past its first (reset) answer
        # Services first (not timed), spread over the data centers.
        owner: dict[str, tuple[Node, str]] = {}  # instance id -> (origin, service id)
        for s in range(services):
            node = nodes[s % len(nodes)]
            url = f"http://{node.registry}/v4/default/registry/microservices"
            body: dict[str, Any] = {
                "service": {"appId": "bench", "serviceName": f"svc-{s}", "version": "1.0.0"}
            }
            async with session.post(url, json=body) as response:
                sid = str((await response.json())["serviceId"])
            for i in range(per_service):
                owner[f"{node.name}-s{s}-i{i}"] = (node, sid)
        total = len(owner)
        expected = total * (len(nodes) - 1)
        regs: list[tuple[str, str, str, Any]] = []
        for iid, (node, sid) in owner.items():
            url = f"http://{node.registry}/v4/default/registry/microservices/{sid}/instances"
            body = {
                "instance": {
                    "instanceId": iid,
                    "hostName": iid,
                    "endpoints": [f"rest://10.0.0.1:{8000 + len(regs) % 1000}"],
                }
            }
            regs.append(("POST", url, iid, body))
        # Services alternate between the data centers: all origins register in parallel.
        began = time.monotonic()
        await asyncio.wait_for(
            drive(session, regs, concurrency, rate, prop.acked.__setitem__), bound
        )
        reg_done = time.monotonic()
        deadline = began + bound
        while len(prop.arrived) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        all_arrived = time.monotonic()
        arrived_count = len(prop.arrived)
        dels = [
            (
                "DELETE",
                f"http://{node.registry}/v4/default/registry/microservices/{sid}/instances/{iid}",
                iid,
                None,
            )
            for iid, (node, sid) in owner.items()
        ]
        del_began = time.monotonic()
        await asyncio.wait_for(
            drive(session, dels, concurrency, rate, prop.deleted.__setitem__), bound
        )
        deadline = del_began + bound
        while len(prop.gone) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        all_gone = time.monotonic()
        stop.set()
        failures = [r for r in await asyncio.gather(*feeds, return_exceptions=True) if r]
    visible = [t - prop.acked[i] for (_, i), t in prop.arrived.items() if i in prop.acked]
    removed = [t - prop.deleted[i] for (_, i), t in prop.gone.items() if i in prop.deleted]
    return {
        "instances": total,
        "copies_expected": expected,
        "copies_arrived": arrived_count,
        "copies_removed": len(prop.gone),
        "offered_rate_per_s": rate or None,
        "concurrency": concurrency,
        "register_rate_per_s": total / max(1e-9, reg_done - began),
        "copy_rate_per_s": arrived_count / max(1e-9, all_arrived - began),
        "all_visible_after_s": all_arrived - began,
        "all_gone_after_s": all_gone - del_began,
        "visible": percentiles([max(0.0, v) for v in visible]),
        "gone": percentiles([max(0.0, v) for v in removed]),
        "negative_clamped": sum(v < 0 for v in visible) + sum(v < 0 for v in removed),
        "feed_errors": [repr(f) for f in failures],
    }


def phase_propagation(
    args: argparse.Namespace, workdir: Path, secure: bool = False
) -> dict[str, Any]:
    nodes: list[Node] = []
    secrets = PoolSecrets(workdir) if secure else None
    workdir = workdir / ("secure" if secure else "plain")
    workdir.mkdir(exist_ok=True)
    try:
        first = Node("p1", "127.0.0.41", workdir, secrets=secrets)
        nodes = [first]
        nodes += [
            Node(f"p{i}", f"127.0.0.4{i}", workdir, join=first.bind, secrets=secrets)
            for i in (2, 3)
        ]
        pool_formed(nodes, 30)
        # every daemon sees both others' syncers (links up) before the clock starts
        wait_until(
            lambda: all(len(n.status().get("remote", {})) == 2 for n in nodes),
            30,
            "sync links",
            *nodes,
        )
        runs: dict[str, Any] = {}
        for label, rate in (("paced", args.rate), ("unpaced", 0.0)):
            if label == "paced" and rate <= 0:
                continue
            result = asyncio.run(
                propagation_run(
                    nodes, args.services, args.instances, args.concurrency, rate, args.bound
                )
            )
            runs[label] = result
        cpu = {n.name: proc_cpu(n.pid) for n in nodes}
        connect = asyncio.run(time_connections(first, secrets))
        return {"secure": secure, "runs": runs, "daemon_cpu_s": cpu, "connect": connect}
    finally:
        for node in nodes:
            node.stop()


async def time_connections(node: Node, secrets: PoolSecrets | None) -> dict[str, float]:
    """Fresh connections to ``node``'s sync server, each: connect (with the TLS handshake
    when ``secrets``), one Health call, close. Median and p99 in ms."""
    from pysyncer.rpc.client import SyncClient
    from pysyncer.rpc.identity import dns_name
    from pysyncer.rpc.tls import TlsFiles

    tls = None
    if secrets is not None:  # a client of another data center, as a following peer is
        given = secrets.flags("dc-bench", "client")
        flags = dict(zip(given[0::2], given[1::2], strict=True))
        tls = TlsFiles(Path(flags["--tls-ca"]), Path(flags["--tls-cert"]), Path(flags["--tls-key"]))
    name = dns_name(node.dc, node.name) if secrets is not None else None
    times = []
    for _ in range(HANDSHAKES):
        began = time.perf_counter()
        client = SyncClient(node.rpc, tls=tls, dc=node.dc, server_name=name)
        try:
            await client.health()
        finally:
            await client.close()
        times.append(time.perf_counter() - began)
    row = percentiles(times)
    return {"count": row["count"], "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"]}


def secure_overhead(plain: list[dict[str, Any]], secure: list[dict[str, Any]]) -> dict[str, Any]:
    """Secure vs plaintext over the rounds: per propagation run, the median over rounds of
    each mode's p50 and p99 (copies visible), the ratio - 1; and the median connection
    cost of each mode."""

    def median(phases: list[dict[str, Any]], label: str, q: str) -> float | None:
        values = [p["runs"][label]["visible"].get(q) for p in phases if label in p["runs"]]
        found = [v for v in values if v is not None]
        return statistics.median(found) if found else None

    out: dict[str, Any] = {"rounds": min(len(plain), len(secure))}
    for label in secure[0]["runs"]:
        row: dict[str, float] = {}
        for q in ("p50_ms", "p99_ms"):
            base, with_tls = median(plain, label, q), median(secure, label, q)
            if base is None or with_tls is None:
                continue
            row[f"plain_{q}"], row[f"secure_{q}"] = base, with_tls
            row[f"overhead_{q}"] = with_tls / max(1e-9, base) - 1.0
        out[label] = row
    connect = {
        mode: statistics.median(p["connect"]["p50_ms"] for p in phases)
        for mode, phases in (("plain", plain), ("secure", secure))
    }
    out["connect_ms"] = connect
    out["daemon_cpu_s"] = {  # the three daemons' CPU over a phase: less noisy than latency
        mode: statistics.median(sum(p["daemon_cpu_s"].values()) for p in phases)
        for mode, phases in (("plain", plain), ("secure", secure))
    }
    out["connect_extra_ms"] = connect["secure"] - connect["plain"]
    return out


# -- phases 2 and 3: full sync, renewals, memory ----------------------------------------


def phase_full_sync(args: argparse.Namespace, workdir: Path, secure: bool) -> dict[str, Any]:
    count = args.full
    nodes: list[Node] = []
    secrets = PoolSecrets(workdir) if secure else None
    quota = registry_quota(count)
    lag_file = workdir / "fb-lag.json"
    # the machine's own pauses, witnessed from outside B (stopped by pid in the finally)
    witnesses = Witnesses(workdir, args.bound + args.renew_bound + 300)
    try:
        origin = Node("fa", "127.0.0.51", workdir, helper_count=count, secrets=secrets, extra=quota)
        nodes.append(origin)
        # an idle daemon: the RSS baseline
        idle = Node("fidle", "127.0.0.53", workdir, secrets=secrets, extra=quota)
        nodes.append(idle)
        assert origin.process.stdout is not None
        fill_started = time.monotonic()
        line = origin.process.stdout.readline()  # the helper prints one line when filled
        while line and not line.startswith(b"{"):  # the daemon's own log lines come first
            line = origin.process.stdout.readline()
        if not line:
            raise RuntimeError(f"origin helper failed:\n{origin.tail()}")
        fill = json.loads(line)
        wait_until(lambda: bool(idle.status()), 30, "idle daemon", idle)
        time.sleep(1.0)
        idle_rss = proc_mem(idle.pid, "VmRSS")
        idle.stop()
        nodes.remove(idle)

        probe_before = host_probe()
        witnesses.start()
        target = Node(
            "fb",
            "127.0.0.52",
            workdir,
            join=origin.bind,
            secrets=secrets,
            extra=quota,
            lag_file=lag_file,
            tripwire=args.tripwire,
        )
        nodes.append(target)
        spawned = target.started
        up = wait_until(lambda: bool(target.status()), 30, "B's admin API", target) + (0.0)
        first_copy: float | None = None
        samples: list[tuple[float, int]] = []

        def synced() -> bool:
            nonlocal first_copy
            copies = target.copies()
            now = time.monotonic()
            samples.append((now - spawned, copies))
            if copies and first_copy is None:
                first_copy = now - spawned
            return bool(copies >= count)

        try:
            wait_until(synced, args.bound, "B's full sync", target, origin)
        except TimeoutError:
            return {
                "instances": count,
                "timed_out_s": args.bound,
                "copies_reached": samples[-1][1],
                "loop": read_loop(lag_file, witnesses),
                "peak_rss_bytes": proc_mem(target.pid, "VmHWM"),
            }
        took = time.monotonic() - spawned
        target.check_running("the full sync")
        user, system, faults = proc_usage(target.pid)
        probe_after = host_probe()
        peak = proc_mem(target.pid, "VmHWM")
        rss_synced = proc_mem(target.pid, "VmRSS")
        result: dict[str, Any] = {
            "instances": count,
            "secure": secure,
            "fill_s": time.monotonic() - fill_started - took,
            "origin_fill": fill,
            "sync_s": took,
            "admin_up_s": up,
            "first_copy_s": first_copy,
            "copy_rate_per_s": count / max(1e-9, took - (first_copy or 0.0)),
            "peak_rss_bytes": peak,
            "cpu_s": user + system,
            "cpu_user_s": user,
            "cpu_system_s": system,
            "minor_faults": faults,
            "host_probe_s": [probe_before, probe_after],
            "rss_after_sync_bytes": rss_synced,
            "idle_daemon_rss_bytes": idle_rss,
            "loop": read_loop(lag_file, witnesses),
            "progress": thin(samples, 40),
        }
        result["renewal"] = phase_renewal(args, target, count, idle_rss)
        result["loop_with_renewals"] = read_loop(lag_file, witnesses)  # the stalls until here
        return result
    finally:
        for node in reversed(nodes):
            node.stop()
        witnesses.stop()


def registry_quota(count: int) -> list[str]:
    """Flags raising the embedded registry's services quota to fit ``count`` instances
    (10 per service) when the default does not."""
    services = count // 10 + 10
    return ["--registry-max-services", str(services)] if services > 10_000 else []


def thin(samples: list[tuple[float, int]], keep: int) -> list[tuple[float, int]]:
    """At most ``keep`` of the (seconds, copies) samples, evenly spaced, the last kept."""
    step = max(1, len(samples) // keep)
    picked = samples[::step]
    if samples and picked[-1] != samples[-1]:
        picked.append(samples[-1])
    return [(round(t, 2), c) for t, c in picked]


def read_lag(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def read_loop(path: Path, witnesses: Witnesses) -> dict[str, Any]:
    """B's loop figures, its watchdog's stalls split into the machine's pauses (the
    witnesses were not run over them) and B's own (:func:`benchmarks.witness.classify`)."""
    loop = read_lag(path)
    watch = loop.get("watch")
    if not watch:
        return loop
    headers, gaps = witnesses.read()
    spans = watch.get("spans", [])
    watch.update(classify([(start, end, cores) for start, end, cores, *_ in spans], gaps, STALL_MS))
    # B's own stalls in which the loop thread was switched out while runnable and ran for
    # under half the time left: the cores went to other work (other processes on a shared
    # machine, or B's other threads), not to the loop's own code
    preempted = 0
    for start, end, cores, cpu_ms, switched_out in spans:
        left_ms = 1000 * (end - start - paused(start, end, cores, gaps))
        if left_ms > STALL_MS and switched_out and cpu_ms < left_ms / 2:
            preempted += 1
    watch["stalls_process_preempted"] = preempted
    watch["witnesses"] = headers
    watch["witness_gaps"] = len(gaps)
    watch["witness_longest_gap_ms"] = round(max((1000 * (b - a) for a, b, _ in gaps), default=0), 1)
    origin = watch.get("origin_s", 0.0)
    for key in ("stalls", "stalls_by_cpu"):
        for stall in watch.get(key, []):
            start = origin + stall["at_s"]
            end = start + stall["stall_ms"] / 1000
            gone = paused(start, end, stall.get("loop_thread_cores", []), gaps)
            stall["machine_paused_ms"] = round(1000 * gone, 1)
    return loop


def phase_renewal(
    args: argparse.Namespace, node: Node, count: int, idle_rss: int
) -> dict[str, Any]:
    """CPU of one renewal pass over every copy (B's own counters mark the passes)."""

    def renewals() -> int:
        return int(node.status().get("importer", {}).get("renewals", 0))

    deadline = time.monotonic() + args.renew_bound
    samples: list[tuple[float, float, int]] = []  # (t, cpu, renewals)
    passes: list[int] = []
    start_renewals = renewals()
    while time.monotonic() < deadline:
        renewed = renewals()
        samples.append((time.monotonic(), proc_cpu(node.pid), renewed))
        done = (renewed - start_renewals) // count
        if done >= 2:
            break
        node.check_running("the renewal phase")
        time.sleep(0.1)
    node.check_running("the renewal phase")
    rss = proc_mem(node.pid, "VmRSS")
    out: dict[str, Any] = {
        "rss_steady_bytes": rss,
        "bytes_per_copy": (rss - idle_rss) / count,
        "renew_period_s": None,
        "cpu_per_pass_s": None,
    }
    # Pass boundaries: where the renewal counter first reaches k * count.
    marks = []
    for k in (1, 2):
        hit = next((s for s in samples if s[2] - start_renewals >= k * count), None)
        if hit is not None:
            marks.append(hit)
    deltas = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples) if b[0] > a[0]]
    baseline = statistics.median(deltas) if deltas else 0.0
    out["idle_cpu_per_s"] = baseline
    if len(marks) == 2:
        (t1, c1, _), (t2, c2, _) = marks
        period = t2 - t1
        total = c2 - c1
        ttl = 120.0
        out.update(
            renew_period_s=period,
            cpu_per_period_s=total,
            cpu_per_pass_s=max(0.0, total - baseline * period),
            cpu_per_ttl_s=total * ttl / period,
            renewal_cpu_per_ttl_s=max(0.0, total - baseline * period) * ttl / period,
        )
    passes.append(len(marks))
    out["passes_seen"] = passes[0]
    return out


def breakdown(count: int, top: int = 12) -> dict[str, Any]:
    """Map ``count`` copies in-process (importer + embedded registry + SQLite store) under
    tracemalloc; the retained bytes per copy, grouped by source file and by line."""
    import tracemalloc

    from pysyncer.adapters.embedded import EmbeddedAdapter
    from pysyncer.model import Instance, Record, ServiceKey
    from pysyncer.servicecenter.core import EmbeddedRegistry
    from pysyncer.servicecenter.settings import ServiceCenterSettings
    from pysyncer.store import create_store
    from pysyncer.sync.importer import Importer

    async def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            # 10 instances per service: past 100,000 copies that is more services than
            # the registry's default quota allows in one project, so raise it here.
            quota = ServiceCenterSettings(max_services=max(count // 10, 10_000))
            registry = EmbeddedRegistry(settings=quota)
            adapter = EmbeddedAdapter(registry)
            store = create_store("embedded", tmp)
            await store.open()
            importer = Importer("dc-b", adapter, store)
            await importer.start(renew_interval=3600)
            services = [ServiceKey("bench", f"svc-{s}", "1.0.0") for s in range(count // 10)]
            records = [
                Record(
                    "dc-a",
                    services[n // 10],
                    f"a-{n}",
                    n + 1,
                    Instance(
                        services[n // 10],
                        f"a-{n}",
                        f"host-{n}",
                        (f"rest://10.0.{n // 250 % 256}.{n % 250}:8080",),
                    ),
                )
                for n in range(count)
            ]
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            for start in range(0, count, 1000):
                await importer.apply("dc-a", records[start : start + 1000], start + 1000, "e")
            await importer.renew_all()
            del records
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            files = after.compare_to(before, "filename")
            lines = after.compare_to(before, "lineno")
            total = sum(s.size_diff for s in files)
            root = str(HERE.parent.parent) + "/"
            await importer.close()
            # The syncer's own memory, without the registry's storage of the copies: what
            # a second importer retains after loading the same mapping table (its index
            # is the same as the first one's), under tracemalloc.
            own = Importer("dc-b", adapter, store)
            tracemalloc.start(1)
            start_own = tracemalloc.take_snapshot()
            await own.start(renew_interval=3600)
            own_after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            await own.close()
            assert own.copies_by_origin() == {"dc-a": count}
            own_total = sum(s.size_diff for s in own_after.compare_to(start_own, "filename"))
            await store.close()
            return {
                "copies": count,
                "importer_bytes_per_copy": own_total / count,
                "traced_bytes_per_copy": total / count,
                "by_file": [
                    [s.traceback[0].filename.replace(root, ""), s.size_diff / count]
                    for s in files[:top]
                ],
                "by_line": [
                    [
                        f"{s.traceback[0].filename.replace(root, '')}:{s.traceback[0].lineno}",
                        s.size_diff / count,
                    ]
                    for s in lines[:top]
                ],
            }

    return asyncio.run(run())


# -- the origin helper: a daemon filled in-process --------------------------------------


FILL_LAG_MAX = 50_000  # registry revisions the origin's exporter may be behind the fill
HEARTBEAT_S = 30.0  # the origin helper renews every lease this often (a client's default interval)
HEARTBEAT_BATCH = 5000  # instances per batch heartbeat
# The registry holder of an origin helper's instances, with --clients-held.
CLIENTS_HOLDER = "bench clients"
CHURN_SERVICES = 20  # services a churn command's instances are spread over
LAG_NOTE_MS = 20.0  # a churn command's loop stalls noted from this long


async def churn(registry: Any, exporter: Any, node: str, command: dict[str, Any]) -> None:
    """One churn command of the origin helper, in process: from monotonic time
    ``start``, register ``count`` instances (``<node>-<tag>-m<n>``) at ``rate``/s through
    the embedded registry's Python API (the write its REST API lands on), then delete
    them at the same rate; meanwhile follow the registry's change feed until ``expect``
    copies whose origin id starts with one of the prefixes ``follow`` were created and
    deleted, and, when ``own`` is a prefix, ``own_expect`` instances of this data center
    whose id starts with it (written by others, e.g. through REST) too (at most ``bound``
    s). With ``lag`` true, the event loop's stalls meanwhile too (a sleep of ``LAG_TICK``
    waking ``LAG_NOTE_MS`` or more late: ``[start, ms]``). Writes ``{"registered",
    "deleted", "arrived", "gone"}`` (id -> monotonic time, one clock for every process of
    a host), ``"committed"`` and ``"committed_gone"`` (id -> when ``exporter`` committed
    the registration / the deletion of one of those registered or deleted here: the
    commit's wall-clock time, as the exporter keeps it, on the monotonic clock) and
    ``"stalls"`` as JSON to the file ``out``, or ``{"error"}``."""
    tag, count, rate = str(command["tag"]), int(command["count"]), float(command["rate"])
    follow, own = tuple(command["follow"]), str(command.get("own", ""))
    expect = {"arrived": int(command["expect"]), "gone": int(command["expect"])}
    expect["registered"] = expect["deleted"] = int(command["own_expect"]) if own else count
    deadline = time.monotonic() + float(command["bound"])
    times: dict[str, dict[str, float]] = {k: {} for k in expect}

    def note(change: Any, now: float) -> None:
        instance = change.instance or {}
        origin = (instance.get("properties") or {}).get(ORIGIN_ID_PROPERTY)
        if change.action == "UPDATE":
            return
        created = change.action == "CREATE"
        if origin is not None and str(origin).startswith(follow):
            times["arrived" if created else "gone"].setdefault(str(origin), now)
        elif origin is None and own and str(instance.get("instanceId")).startswith(own):
            times["registered" if created else "deleted"].setdefault(instance["instanceId"], now)

    async def watch() -> None:
        since = registry.revision()
        while any(len(times[k]) < n for k, n in expect.items()) and time.monotonic() < deadline:
            batch = await registry.changes(since, timeout=1.0)
            now = time.monotonic()
            since = batch.revision
            for change in batch.changes:
                note(change, now)

    async def write(sids: list[str], began: float, register: bool) -> None:
        stamps = times["registered" if register else "deleted"]
        for n in range(count):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            iid, sid = f"{node}-{tag}-m{n}", sids[n % CHURN_SERVICES]
            if register:
                body = {"instanceId": iid, "hostName": iid, "endpoints": [f"rest://10.2.0.1:{n}"]}
                await registry.register_instance(sid, body)
            else:
                await registry.unregister_instance(sid, iid)
            stamps[iid] = time.monotonic()

    async def sample_lag() -> None:  # the loop's stalls meanwhile: how late a short sleep wakes
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK)
            late = time.monotonic() - before - LAG_TICK
            if 1000 * late >= LAG_NOTE_MS:
                stalls.append((before, 1000 * late))

    async def commits(since: int) -> dict[str, dict[str, float]]:
        """The commit times, once every write of this command is committed (or at the
        deadline): the last deletions may still be on their way through the exporter."""
        wall_to_mono = time.monotonic() - time.time()
        while True:
            out: dict[str, dict[str, float]] = {"committed": {}, "committed_gone": {}}
            limit = 2 * (expect["registered"] + expect["deleted"]) + 1000
            records, _ = await exporter.changes_since(since, limit)
            for record in records:
                when = exporter.commit_time(record.revision)
                if when:
                    table = out["committed_gone" if record.deleted else "committed"]
                    table.setdefault(record.instance_id, when + wall_to_mono)
            complete = (
                times["registered"].keys() <= out["committed"].keys()
                and times["deleted"].keys() <= out["committed_gone"].keys()
            )
            if complete or time.monotonic() > deadline:
                mine = times["registered"].keys() | times["deleted"].keys()
                return {k: {i: t for i, t in v.items() if i in mine} for k, v in out.items()}
            await asyncio.sleep(0.05)

    stalls: list[tuple[float, float]] = []
    exported_from = exporter.revision()
    watching = asyncio.ensure_future(watch() if follow or own else asyncio.sleep(0))
    sampling = asyncio.ensure_future(sample_lag() if command.get("lag") else asyncio.sleep(0))
    try:
        sids = [
            await registry.create_service(
                {"appId": "churn", "serviceName": f"{tag}-{s}", "version": "1.0.0"}
            )
            for s in range(CHURN_SERVICES if count else 0)
        ]
        await write(sids, float(command["start"]), register=True)
        await write(sids, time.monotonic(), register=False)
        await watching
        result: dict[str, Any] = {**times, **await commits(exported_from), "stalls": stalls}
    except Exception as exc:  # the benchmark reads why instead of waiting for a file
        watching.cancel()
        result = {"error": repr(exc)}
    sampling.cancel()
    out = Path(command["out"])
    out.with_suffix(".tmp").write_text(json.dumps(result))
    out.with_suffix(".tmp").replace(out)  # whole, or not there yet


def read_commands(loop: asyncio.AbstractEventLoop, run: Callable[[Any], Any]) -> set[Any]:
    """A thread reading JSON lines from stdin (until its end: at once when stdin is
    /dev/null), each started as a task ``run(command)`` on ``loop``; the tasks, kept."""
    tasks: set[Any] = set()

    def start(command: Any) -> None:
        task = loop.create_task(run(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(start, json.loads(line))

    threading.Thread(target=read, name="commands", daemon=True).start()
    return tasks


def origin_helper(count: int, flags: list[str]) -> int:
    """Run a daemon in this process, register ``count`` instances (10 per service) through
    the embedded registry's Python API, print one JSON line once all are exported, keep
    them alive with batch heartbeats, run the churn commands (:func:`churn`) read from
    stdin, and serve until SIGTERM. ``--config FILE`` among the flags is the daemon's
    config file; ``--clients-held 1`` registers the instances under one registry holder
    (:data:`CLIENTS_HOLDER`) renewed in one call every :data:`HEARTBEAT_S` instead: for a
    data center emulated beside the syncer under test, whose clients' heartbeats would
    reach a registry on another host."""
    from pysyncer.cli import run_event_loop
    from pysyncer.config import load_config
    from pysyncer.daemon import Daemon

    pairs = dict(zip(flags[0::2], flags[1::2], strict=True))
    config_file = pairs.pop("--config", None)
    holder = CLIENTS_HOLDER if pairs.pop("--clients-held", "0") == "1" else None
    config = load_config(
        {k.removeprefix("--"): v for k, v in pairs.items()}, config_file=config_file
    )

    async def main() -> None:
        daemon = Daemon(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await daemon.start()
        try:
            await daemon.wait_synced(120)  # the engine starts in the background
            engine, embedded = daemon.engine, daemon.embedded_registry
            assert engine is not None and embedded is not None
            assert engine.exporter is not None
            registry = embedded.registry
            started = time.monotonic()
            refs: list[tuple[str, str]] = []

            async def keep_alive() -> None:
                # From the first registration on: on a loaded machine the fill (and the
                # export) can outlast the leases' 120 s, and expired instances never export.
                # Each round's batches spread over it, as clients' heartbeats come: a burst
                # of them all held up the exports of every daemon on a shared core.
                while holder is not None:
                    registry.renew_holder(holder)
                    await asyncio.sleep(HEARTBEAT_S)
                while True:
                    began, known = time.monotonic(), len(refs)
                    for start in range(0, known, HEARTBEAT_BATCH):
                        await asyncio.sleep(
                            max(0.0, began + HEARTBEAT_S * start / known - time.monotonic())
                        )
                        await registry.heartbeat_set(refs[start : start + HEARTBEAT_BATCH])
                    await asyncio.sleep(max(0.0, began + HEARTBEAT_S - time.monotonic()))

            heartbeats = loop.create_task(keep_alive())
            for s in range(count // 10):
                sid = await registry.create_service(
                    {"appId": "bench", "serviceName": f"svc-{s}", "version": "1.0.0"}
                )
                for i in range(10):
                    n = s * 10 + i
                    body = {
                        "instanceId": f"a-{n}",
                        "hostName": f"host-{n}",
                        "endpoints": [f"rest://10.0.{n // 250 % 256}.{n % 250}:8080"],
                    }
                    refs.append((sid, await registry.register_instance(sid, body, holder=holder)))
                if s % 200 == 0:
                    await asyncio.sleep(0)
                    # Never more than half the registry's change log ahead of the exporter:
                    # on a loaded machine it fell behind, lost its place, re-listed every
                    # instance again and again and the fill never ended.
                    while (engine.exporter.stats.registry_lag or 0) > FILL_LAG_MAX:
                        await asyncio.sleep(0.05)
            registered = time.monotonic() - started
            while engine.exporter.exported_count() < len(refs) and not stop.is_set():
                await asyncio.sleep(0.05)
            line = {"registered_s": registered, "exported_s": time.monotonic() - started}
            # Long-lived from now on, as a mesh daemon's importer freezes what it holds
            # (Importer._settle): a daemon that imports nothing never freezes them, and its
            # full collections rescan them all (up to ~0.5 s at 100,000, bench_host).
            gc.collect(1)
            gc.freeze()
            print(json.dumps(line), flush=True)
            exporter = engine.exporter
            commands = read_commands(
                loop, lambda command: churn(registry, exporter, config.node, command)
            )
            await stop.wait()
            heartbeats.cancel()
            for task in commands:
                task.cancel()
        finally:
            await daemon.stop()

    run_event_loop(main())  # the loop `pysyncer daemon` runs on (uvloop when installed)
    return 0


LAG_TICK = 0.01  # the loop-lag sampler's sleep; a stall is how late it wakes beyond it
STALL_MS = 100.0  # stalls longer than this are counted
WATCH_MS = 50.0  # stalls longer than this get the loop thread's stacks sampled (stallwatch)


TRIPWIRE_FLAG = "--tripwire"  # the lag helper's, before the daemon's flags


def lag_helper(lag_file: Path, flags: list[str]) -> int:
    """Run ``pysyncer daemon`` (the CLI's own loop: uvloop when installed) in this process
    with a sampler task that sleeps :data:`LAG_TICK` over and over and writes, every half
    second, the longest stall of the event loop (the oversleep) to ``lag_file`` as JSON,
    with the evidence of :class:`~benchmarks.stallwatch.StallWatch` (key ``watch``): the
    loop thread's stacks during each stall over :data:`WATCH_MS`, and the collections.
    :data:`TRIPWIRE_FLAG` first in ``flags`` arms the watch's tripwire (off otherwise: its
    dump is not safe while other threads run, see docs/benchmarks.md)."""
    from benchmarks.stallwatch import StallWatch
    from pysyncer.cli import run_event_loop
    from pysyncer.config import load_config
    from pysyncer.daemon import run_daemon

    tripwire = flags[:1] == [TRIPWIRE_FLAG]
    flags = flags[1:] if tripwire else flags
    pairs = dict(zip(flags[0::2], flags[1::2], strict=True))
    config = load_config({k.removeprefix("--"): v for k, v in pairs.items()})

    pauses: list[float] = [0, 0.0, 0.0]  # the garbage collector's full ones: count, max, ms
    began: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        elif info.get("generation") == 2:
            took = 1000 * (time.perf_counter() - began[0])
            pauses[0] += 1
            pauses[1] = max(pauses[1], took)
            pauses[2] += took

    gc.callbacks.append(on_gc)
    watch = StallWatch(WATCH_MS, LAG_TICK, STALL_MS, trip=tripwire)

    figures: dict[str, Any] = {}  # the sampler's, written out by the writer thread

    async def sample() -> None:
        worst = 0.0
        over = 0
        ticks = 0
        stalls: list[float] = []  # the 10 longest over STALL_MS, a min-heap
        worst_cpu = 0.0
        worst_at = 0.0  # when the longest stall began, in s since the first tick began
        watch.start()
        origin = time.monotonic()
        while True:
            before = time.monotonic()
            cpu_before = time.thread_time()
            await asyncio.sleep(LAG_TICK)
            watch.tick()
            now = time.monotonic()
            stall = 1000 * (now - before - LAG_TICK)
            # the loop thread's own CPU between two ticks: the stall on an idle core (the
            # wall-clock stall also counts the time a loaded machine did not run it)
            worst_cpu = max(worst_cpu, 1000 * (time.thread_time() - cpu_before))
            ticks += 1
            if stall > worst:
                worst, worst_at = stall, before - origin
            if stall > STALL_MS:
                over += 1
                if len(stalls) < 10:
                    heapq.heappush(stalls, round(stall, 1))
                else:
                    heapq.heappushpop(stalls, round(stall, 1))
            figures.update(
                max_stall_ms=round(worst, 1),
                max_stall_at_s=round(worst_at, 2),
                max_stall_cpu_ms=round(worst_cpu, 1),
                stalls_over_100ms=over,
                worst_stalls_ms=sorted(stalls),
                ticks=ticks,
            )

    def write() -> None:
        """Every half second, off the loop (a slow disk must not stall what it measures)."""
        partial = lag_file.with_suffix(".partial")
        while not done.wait(0.5):
            report = {
                **figures.copy(),
                "gc_full_collections": int(pauses[0]),
                "gc_full_max_ms": round(pauses[1], 1),
                "gc_full_total_ms": round(pauses[2], 1),
                "watch": watch.report(),
            }
            partial.write_text(json.dumps(report))
            partial.replace(lag_file)  # a reader never sees half a file

    done = threading.Event()
    writer = threading.Thread(target=write, name="lag-writer", daemon=True)

    async def main() -> None:
        sampler = asyncio.get_running_loop().create_task(sample())
        writer.start()
        try:
            await run_daemon(config)
        finally:
            sampler.cancel()
            done.set()
            watch.stop()

    run_event_loop(main())
    return 0


# -- report ---------------------------------------------------------------------------------


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "meets" if value <= target else "MISSES"


def print_report(report: dict[str, Any]) -> None:
    for key in ("propagation", "propagation_secure"):
        if key in report:
            print_propagation(report[key])
    overhead = report.get("secure_overhead")
    if overhead:
        print(
            f"mutual TLS + gossip encryption vs plaintext, medians of {overhead['rounds']} rounds"
        )
        for label in report["propagation_secure"]["runs"]:
            row = overhead.get(label, {})
            if "overhead_p50_ms" not in row:
                continue
            p50 = row["overhead_p50_ms"]
            print(
                f"  {label:<8} p50 {row['plain_p50_ms']:.1f} -> {row['secure_p50_ms']:.1f} ms "
                f"{p50:+.1%} ({verdict(p50, TARGET_SECURE_P50_OVERHEAD)} <= "
                f"+{TARGET_SECURE_P50_OVERHEAD:.0%}); p99 {row['plain_p99_ms']:.1f} -> "
                f"{row['secure_p99_ms']:.1f} ms {row['overhead_p99_ms']:+.1%}"
            )
        cpu = overhead["daemon_cpu_s"]
        print(
            f"  daemons' CPU over the phase: {cpu['plain']:.1f} s plain, {cpu['secure']:.1f} s "
            f"secure ({cpu['secure'] / max(1e-9, cpu['plain']) - 1:+.1%})"
        )
        connect = overhead["connect_ms"]
        print(
            f"  fresh connection + Health: {connect['plain']:.1f} ms plain, "
            f"{connect['secure']:.1f} ms mutual TLS ({overhead['connect_extra_ms']:+.1f} ms "
            "for the handshake)"
        )
    print_full_sync(report)


def print_propagation(prop: dict[str, Any]) -> None:
    mode = "mutual TLS + gossip encryption" if prop.get("secure") else "plaintext"
    for label, run in prop["runs"].items():
        vis, gone = run["visible"], run["gone"]
        rate = (
            f"{run['offered_rate_per_s']:.0f}/s offered" if run["offered_rate_per_s"] else "unpaced"
        )
        print(
            f"propagation ({mode}, {label}, {rate}, {run['instances']} instances, 3 dcs, "
            f"{run['copies_arrived']}/{run['copies_expected']} copies arrived, "
            f"{run['copies_removed']} removed)"
        )
        for name, row in (("register->visible", vis), ("delete->gone", gone)):
            if not row.get("count"):
                print(f"  {name:<18} no samples")
                continue
            print(
                f"  {name:<18} p50 {row['p50_ms']:8.1f} ms "
                f"({verdict(row['p50_ms'], TARGET_P50_MS)}"
                f" <= {TARGET_P50_MS:.0f})  p99 {row['p99_ms']:8.1f} ms "
                f"({verdict(row['p99_ms'], TARGET_P99_MS)} <= {TARGET_P99_MS:.0f})  "
                f"max {row['max_ms']:.0f} ms"
            )
        print(
            f"  throughput: registrations {run['register_rate_per_s']:.0f}/s, "
            f"copies {run['copy_rate_per_s']:.0f}/s; all visible after "
            f"{run['all_visible_after_s']:.1f} s, "
            f"all gone after {run['all_gone_after_s']:.1f} s"
        )
    connect = prop["connect"]
    print(
        f"  fresh connection + Health ({connect['count']}): p50 {connect['p50_ms']:.1f} ms, "
        f"p99 {connect['p99_ms']:.1f} ms"
    )


def print_loop(full: dict[str, Any]) -> None:
    loop = full.get("loop") or {}
    if loop:
        print(
            f"  B's event loop: longest stall {loop['max_stall_ms']:.0f} ms "
            f"({verdict(loop['max_stall_ms'], STALL_MS)} <= {STALL_MS:.0f} ms; from "
            f"{loop.get('max_stall_at_s', 0):.2f} s after B's loop began), "
            f"{loop['stalls_over_100ms']} stall(s) over {STALL_MS:.0f} ms (wall clock); "
            f"longest CPU run of the loop thread between two ticks "
            f"{loop.get('max_stall_cpu_ms', 0):.0f} ms; "
            f"{loop.get('gc_full_collections', 0)} full GC(s), longest "
            f"{loop.get('gc_full_max_ms', 0):.0f} ms"
        )
    watch = loop.get("watch") or {}
    if "stalls_machine" in watch:
        given = ", ".join(sorted({w.get("priority", "?") for w in watch.get("witnesses", [])}))
        print(
            f"    of the stalls over {STALL_MS:.0f} ms: {watch['stalls_machine']} the machine's "
            f"(a witness at {given or 'no witness'} was not run over them), longest "
            f"{watch['worst_machine_ms']:.0f} ms; {watch['stalls_process']} B's own, longest "
            f"{watch['worst_process_ms']:.0f} ms ({watch.get('stalls_process_preempted', 0)} "
            "of them with the loop thread switched out while runnable and running under half "
            f"of it); a stall less the machine's pauses in it at most "
            f"{watch['worst_process_share_ms']:.0f} ms "
            f"({verdict(watch['worst_process_share_ms'], STALL_MS)} <= {STALL_MS:.0f} ms)"
        )
    for label, key in (("longest", "stalls"), ("most CPU", "stalls_by_cpu")):
        for stall in watch.get(key, [])[:3]:
            top = stall["stacks"][0]["frames"][:3] if stall["stacks"] else []
            threads = stall.get("threads_cpu_ms", {})
            busiest = ", ".join(f"{name} {ms:.0f}" for name, ms in list(threads.items())[:3])
            print(
                f"    {label}: {stall['stall_ms']:.0f} ms at {stall['at_s']:.1f} s, loop thread "
                f"CPU {stall['loop_thread_cpu_ms']:.0f} ms, queued for a core "
                f"{stall.get('loop_thread_queued_ms', 0):.0f} ms, GC {stall['gc_ms']:.0f} ms, "
                f"machine paused {stall.get('machine_paused_ms', 0):.0f} ms, "
                f"preempted {stall.get('loop_thread_preempted', 0)}x, "
                f"{stall['samples']} sample(s); threads' CPU ms: {busiest or 'none noted'}; "
                f"{' < '.join(top) or 'no stack sampled'}"
            )
    if watch.get("trips"):
        print(f"    tripwire: {watch['trips']} tick(s) over {watch['threshold_ms']:.0f} ms late")
    for stack in watch.get("trip_stacks", [])[:3]:
        frames = " < ".join(stack["frames"][:4]) or "no Python frame of the loop thread"
        print(f"      {stack['count']}x {frames}")


def print_full_sync(report: dict[str, Any]) -> None:
    full = report.get("full_sync")
    if full and "timed_out_s" in full:
        print(
            f"initial full sync of {full['instances']} instances: NOT done within "
            f"{full['timed_out_s']:.0f} s ({full['copies_reached']} copies mapped)"
        )
        print_loop(full)
    elif full:
        mib = 1 << 20
        target = max(TARGET_FULL_SYNC_S, TARGET_FULL_SYNC_PER_MILLION_S * full["instances"] / 1e6)
        print(
            f"initial full sync of {full['instances']} instances"
            f"{' over mutual TLS' if full['secure'] else ''} (origin filled and exported "
            f"in {full['origin_fill']['exported_s']:.1f} s)"
        )
        print(
            f"  B spawn -> all copies mapped {full['sync_s']:6.1f} s "
            f"({verdict(full['sync_s'], target)} <= {target:.0f} s); "
            f"admin up {full['admin_up_s']:.1f} s, first copy {full['first_copy_s'] or 0:.1f} s, "
            f"{full['copy_rate_per_s']:.0f} copies/s; B's CPU {full['cpu_s']:.1f} s "
            f"({1e6 * full['cpu_s'] / full['instances']:.0f} us per copy: user "
            f"{full['cpu_user_s']:.1f} s, system {full['cpu_system_s']:.1f} s, "
            f"{full['minor_faults']:,} minor page faults); the host probe "
            f"{full['host_probe_s'][0]:.3f} s before, {full['host_probe_s'][1]:.3f} s after"
        )
        print(
            f"  B peak RSS (VmHWM) {full['peak_rss_bytes'] / mib:.0f} MiB; RSS after sync "
            f"{full['rss_after_sync_bytes'] / mib:.0f} MiB; idle daemon "
            f"{full['idle_daemon_rss_bytes'] / mib:.0f} MiB"
        )
        print_loop(full)
        ren = full["renewal"]
        print(
            f"  memory per mapped copy incl. the embedded registry holding the copies "
            f"((steady RSS - idle daemon) / copies): {ren['bytes_per_copy']:.0f} B "
            f"(the target is about the syncer's own memory: see the breakdown phase)"
        )
        if ren.get("cpu_per_pass_s") is not None:
            print(
                f"  renewals: one pass of {full['instances']} copies every "
                f"{ren['renew_period_s']:.1f} s costs {ren['cpu_per_pass_s']:.2f} CPU s above "
                f"an idle {ren['idle_cpu_per_s']:.3f} CPU s/s; per 120 s TTL: "
                f"{ren['renewal_cpu_per_ttl_s']:.2f} CPU s renewals, "
                f"{ren['cpu_per_ttl_s']:.2f} CPU s in all"
            )
        else:
            print(f"  renewals: only {ren['passes_seen']} pass(es) seen within the bound")
    brk = report.get("breakdown")
    if brk:
        print(
            f"memory per mapped copy, the syncer's own (importer index, tracemalloc, "
            f"{brk['copies']} copies, registry storage not counted): "
            f"{brk['importer_bytes_per_copy']:.0f} B "
            f"({verdict(brk['importer_bytes_per_copy'], TARGET_BYTES_PER_COPY)}"
            f" <= {TARGET_BYTES_PER_COPY:.0f} B)"
        )
        print(
            f"tracemalloc, {brk['copies']} copies mapped in-process (importer + registry + "
            f"store): {brk['traced_bytes_per_copy']:.0f} B/copy"
        )
        for name, size in brk["by_file"]:
            print(f"  {size:8.0f} B/copy  {name}")
        print("  top lines:")
        for name, size in brk["by_line"]:
            print(f"  {size:8.0f} B/copy  {name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--origin-helper":
        return origin_helper(int(argv[1]), argv[2:])
    if argv and argv[0] == "--lag-helper":
        return lag_helper(Path(argv[1]), argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000, help="services (1000)")
    parser.add_argument("--instances", type=int, default=10, help="instances per service (10)")
    parser.add_argument("--small", action="store_true", help="100 x 10, 10,000 for full sync")
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="paced run: registrations/s in all (500; 0 = only unpaced)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--full", type=int, default=100_000, help="full-sync instances")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=20_000,
        help="copies for the tracemalloc breakdown (0 = skip)",
    )
    parser.add_argument("--phases", default="propagation,full,breakdown")
    parser.add_argument("--bound", type=float, default=120.0, help="seconds per phase step (120)")
    parser.add_argument(
        "--renew-bound",
        type=float,
        default=100.0,
        help="seconds to watch for two renewal passes (100)",
    )
    parser.add_argument(
        "--secure",
        choices=("off", "on", "both"),
        default="off",
        help="gossip encryption and mutual TLS: off, on, or both (propagation compared)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="propagation rounds per mode, alternating (--secure both compares medians)",
    )
    parser.add_argument(
        "--tripwire",
        action="store_true",
        help="full sync: dump the daemon's stacks in a stall that keeps the GIL (it can crash "
        "the daemon: docs/benchmarks.md)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.small:
        args.services, args.full, args.breakdown = 100, 10_000, min(args.breakdown, 10_000)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    report: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        if "propagation" in phases:
            modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.secure]
            done: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for n in range(args.rounds):  # the modes alternate: load drifts hit both
                for secure in modes:
                    where = workdir / f"round{n}"
                    where.mkdir(exist_ok=True)
                    done[secure].append(phase_propagation(args, where, secure=secure))
            if done[False]:
                report["propagation"] = done[False][0]
            if done[True]:
                report["propagation_secure"] = done[True][0]
            if args.secure == "both":
                report["propagation_rounds"] = {"plain": done[False], "secure": done[True]}
                report["secure_overhead"] = secure_overhead(done[False], done[True])
        if "full" in phases and args.full > 0:
            report["full_sync"] = phase_full_sync(args, workdir, secure=args.secure != "off")
    if "breakdown" in phases and args.breakdown > 0:
        report["breakdown"] = breakdown(args.breakdown)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
