"""pysyncer gossip against real Serf agents, side by side on loopback sockets.

For each pool size it starts N real ``serf agent`` processes (Serf's ``lan`` profile)
and N pysyncer members (the default ``pysyncer`` profile; ``--py-profile lan`` for
Serf's timings), one pool after the other so they do not share the CPU, and measures
the same things on both, from the same event streams (Serf's RPC ``stream`` command;
the pysyncer runner's JSON lines, both stamped with the wall clock on arrival):

* join convergence: from the moment every member is told to join (not from the exec)
  until every member has seen every other one join;
* bytes sent per member per second over an idle window (Serf: memberlist's
  ``memberlist.udp.sent`` and ``memberlist.tcp.sent`` counters through statsd;
  pysyncer: the same two counts from its node);
* user-event dissemination: the delay until each member receives an event sent by one;
* kill -9 detection: a member is killed; the delay until each observer sees it failed;
* return after a failure: a member is stopped (SIGSTOP) until the observers see it
  failed, then resumed (SIGCONT); the delay until every member sees it alive again;
* false failures: every ``member-failed`` about a member that was not killed or stopped.

pysyncer members run one to a process by default, as syncers do
(``python -m pysyncer.gossip.poolrunner``; ``--per-process K`` packs K in one process,
which halves start-up on a small machine but lets one starved process take K members
down at once); members that are killed or stopped always run alone.
``--mixed`` also runs a pool of half Serf agents, half pysyncer members and counts the
failures any member declares about a Serf agent that was never stopped (flaps).

    python -m benchmarks.bench_gossip_vs_serf [--sizes 10,50] [--trials 3] [--mixed]
        [--event-size 100] [--json] [--plot docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

HOST = "127.0.0.1"
MEMBER_KINDS = "member-join,member-failed,member-leave,user"


def free_port() -> int:
    """A loopback port free for both TCP and UDP (gossip binds both)."""
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise OSError("no loopback port free for both TCP and UDP")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Seen:
    """Every event any member reported: (wall time, observer, kind, subject)."""

    events: list[tuple[float, str, str, str]] = field(default_factory=list)

    def add(self, t: float, observer: str, kind: str, subject: str) -> None:
        self.events.append((t, observer, kind, subject))

    def first(self, kind: str, subject: str, since: float) -> dict[str, float]:
        """Per observer, the first time it reported ``kind`` about ``subject`` after ``since``."""
        out: dict[str, float] = {}
        for t, observer, k, s in self.events:
            if k == kind and s == subject and t >= since and observer not in out:
                out[observer] = t
        return out


# -- Serf agents over their RPC protocol ------------------------------------------------


class SerfRPC:
    """A Serf agent's msgpack RPC: handshake, an event stream, join and user events."""

    def __init__(self, name: str, seen: Seen) -> None:
        self.name = name
        self.seen = seen
        self._seq = 0
        self._pending: dict[int, tuple[bool, asyncio.Future[Any]]] = {}  # seq -> (body?, fut)
        self._stream_seq = -1
        self._stream_acked = False
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        reader, self._writer = await asyncio.open_connection(host, int(port))
        self._task = asyncio.get_running_loop().create_task(self._read(reader))
        await self.call("handshake", {"Version": 1})
        seq = self._next()
        self._stream_seq = seq
        self._send("stream", seq, {"Type": MEMBER_KINDS})

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, command: str, seq: int, body: dict[str, Any] | None) -> None:
        assert self._writer is not None
        data = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        self._writer.write(data)

    async def call(self, command: str, body: dict[str, Any] | None, body_back: bool = False) -> Any:
        """One request; its reply body when ``body_back`` (else None once acknowledged)."""
        seq = self._next()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[seq] = (body_back, future)
        self._send(command, seq, body)
        return await asyncio.wait_for(future, 30)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        expect_body_for: int | None = None
        while data := await reader.read(65536):
            unpacker.feed(data)
            for obj in unpacker:
                if expect_body_for is not None:
                    seq, expect_body_for = expect_body_for, None
                    self._body(seq, obj)
                    continue
                seq = obj.get("Seq")
                if obj.get("Error"):
                    pending = self._pending.pop(seq, None)
                    if pending:
                        pending[1].set_exception(RuntimeError(obj["Error"]))
                    continue
                if seq == self._stream_seq:
                    if not self._stream_acked:
                        self._stream_acked = True
                    else:
                        expect_body_for = seq
                    continue
                pending = self._pending.get(seq)
                if pending is None:
                    continue
                if pending[0]:
                    expect_body_for = seq
                else:
                    self._pending.pop(seq)[1].set_result(None)

    def _body(self, seq: int, body: Any) -> None:
        if seq == self._stream_seq:
            now = time.time()
            event = body.get("Event")
            if event == "user":
                self.seen.add(now, self.name, "user", body.get("Name", ""))
            else:
                for member in body.get("Members", []):
                    self.seen.add(now, self.name, event, member["Name"])
            return
        pending = self._pending.pop(seq, None)
        if pending is not None:
            pending[1].set_result(body)

    async def join(self, addresses: list[str]) -> None:
        await self.call("join", {"Existing": addresses, "Replay": False}, body_back=True)

    async def event(self, name: str, payload: bytes) -> None:
        await self.call("event", {"Name": name, "Payload": payload, "Coalesce": False})

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class StatsdCounter(asyncio.DatagramProtocol):
    """Sums memberlist's udp.sent and tcp.sent counters that Serf agents send to statsd."""

    def __init__(self) -> None:
        self.sent = 0.0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        for line in data.decode(errors="replace").splitlines():
            name, _, rest = line.partition(":")
            if name.endswith(("memberlist.udp.sent", "memberlist.tcp.sent")):
                with contextlib.suppress(ValueError):
                    self.sent += float(rest.split("|")[0])


# -- the two kinds of members ------------------------------------------------------------


class Member:
    name: str
    address: str  # host:port of its gossip socket
    pid: int


@dataclass
class SerfMember(Member):
    name: str
    address: str
    pid: int
    process: asyncio.subprocess.Process
    rpc: SerfRPC


@dataclass
class PyMember(Member):
    name: str
    address: str
    pid: int
    runner: PyRunner


class PyRunner:
    """One poolrunner process hosting some pysyncer members."""

    def __init__(self, names: list[str], workdir: Path, profile: str, seen: Seen) -> None:
        self.names = names
        self.workdir = workdir
        self.profile = profile
        self.seen = seen
        self.process: asyncio.subprocess.Process | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self._ready = asyncio.Event()
        self._stats: asyncio.Queue[dict[str, dict[str, int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pysyncer.gossip.poolrunner", "--names", ",".join(self.names),
            "--data-dir", str(self.workdir), "--profile", self.profile,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, limit=1 << 20,
        )  # fmt: skip
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def ready(self) -> None:
        await asyncio.wait_for(self._ready.wait(), 120)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            now = time.time()
            item = json.loads(line)
            if "ready" in item:
                self.addresses = {k: (v[0], v[1]) for k, v in item["ready"].items()}
                self._ready.set()
            elif "stats" in item:
                await self._stats.put(item["stats"])
            else:
                subject = item.get("member") or item.get("name", "")
                self.seen.add(now, item["node"], item["kind"], subject)

    def send(self, command: dict[str, Any]) -> None:
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def stats(self) -> dict[str, dict[str, int]]:
        self.send({"cmd": "stats"})
        return await asyncio.wait_for(self._stats.get(), 30)

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.send({"cmd": "quit"})
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGCONT)
                    self.process.kill()
                await self.process.wait()
        if self._task is not None:
            self._task.cancel()


class Pool:
    """A pool of members of either kind (or both): start, join, and the faults."""

    def __init__(self, workdir: Path, seen: Seen) -> None:
        self.workdir = workdir
        self.seen = seen
        self.members: dict[str, Member] = {}
        self.runners: list[PyRunner] = []
        self.statsd = StatsdCounter()
        self._statsd_port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start_statsd(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.statsd, local_addr=(HOST, 0)
        )
        self._transport = transport
        self._statsd_port = transport.get_extra_info("sockname")[1]

    async def _spawn_serf(self, serf: str, name: str) -> tuple[int, int, Any]:
        port, rpc = free_port(), free_port()
        config = self.workdir / f"{name}.json"
        config.write_text(json.dumps({"statsd_addr": f"{HOST}:{self._statsd_port}"}))
        process = await asyncio.create_subprocess_exec(
            serf, "agent", f"-node={name}", f"-bind={HOST}:{port}",
            f"-rpc-addr={HOST}:{rpc}", "-profile=lan", "-log-level=err",
            f"-config-file={config}", "-tag", "role=bench",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return port, rpc, process

    async def add_serf(self, serf: str, names: Iterable[str]) -> None:
        """Start the agents; one that exits at start (a port taken meanwhile) is retried."""
        started = [(name, *await self._spawn_serf(serf, name)) for name in names]
        for name, port, rpc, process in started:
            client = SerfRPC(name, self.seen)
            deadline, attempts = time.monotonic() + 60, 1
            while True:
                try:
                    await client.connect(f"{HOST}:{rpc}")
                    break
                except OSError:
                    if process.returncode is not None and attempts < 3:
                        attempts += 1
                        port, rpc, process = await self._spawn_serf(serf, name)
                    elif time.monotonic() > deadline or process.returncode is not None:
                        raise RuntimeError(f"serf agent {name} did not start") from None
                    await asyncio.sleep(0.1)
            self.members[name] = SerfMember(name, f"{HOST}:{port}", process.pid, process, client)

    async def add_py(
        self, names: list[str], profile: str, per_process: int, alone: Iterable[str] = ()
    ) -> None:
        alone = set(alone)
        groups = [[n] for n in names if n in alone]
        rest = [n for n in names if n not in alone]
        groups += [rest[i : i + per_process] for i in range(0, len(rest), per_process)]
        runners = [PyRunner(g, self.workdir / "py", profile, self.seen) for g in groups]
        for runner in runners:
            await runner.start()
        for runner in runners:
            await runner.ready()
            assert runner.process is not None
            for name, (host, port) in runner.addresses.items():
                self.members[name] = PyMember(name, f"{host}:{port}", runner.process.pid, runner)
        self.runners += runners

    async def join_all(self) -> float:
        """Tell every member to join the first one; the wall time the join was sent."""
        names = list(self.members)
        seed = self.members[names[0]].address
        host, port = seed.rsplit(":", 1)
        t0 = time.time()
        joins = []
        for runner in self.runners:
            runner.send({"cmd": "join", "addrs": [[host, int(port)]]})
        for name in names[1:]:
            member = self.members[name]
            if isinstance(member, SerfMember):
                joins.append(member.rpc.join([seed]))
        await asyncio.gather(*joins, return_exceptions=True)
        return t0

    async def wait(self, condition: Callable[[], bool], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if condition():
                return True
            await asyncio.sleep(0.05)
        return condition()

    def converged(self, since: float) -> float | None:
        """Seconds from ``since`` until every member saw every other join, or None."""
        names = set(self.members)
        last: dict[str, dict[str, float]] = {n: {} for n in names}
        for t, observer, kind, subject in self.seen.events:
            if kind == "member-join" and observer in last and subject != observer:
                last[observer].setdefault(subject, t)
        if any(len(seen) < len(names) - 1 for seen in last.values()):
            return None
        return max(max(seen.values()) for seen in last.values() if seen) - since

    async def bytes_per_member_second(self, window: float) -> float:
        py = [m for m in self.members.values() if isinstance(m, PyMember)]
        serf = [m for m in self.members.values() if isinstance(m, SerfMember)]
        before_py = await self._py_bytes()
        before_serf = self.statsd.sent
        start = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - start
        await asyncio.sleep(0.3)  # statsd flushes every 100 ms
        sent = (await self._py_bytes() - before_py) if py else 0.0
        sent += (self.statsd.sent - before_serf) if serf else 0.0
        return sent / len(self.members) / elapsed

    async def _py_bytes(self) -> float:
        total = 0.0
        for runner in self.runners:
            if runner.process is not None and runner.process.returncode is None:
                stats = await runner.stats()
                total += sum(s["bytes_out"] for s in stats.values())
        return total

    async def send_event(self, origin: str, name: str) -> float:
        member = self.members[origin]
        t0 = time.time()
        if isinstance(member, SerfMember):
            await member.rpc.event(name, b"bench")
        else:
            assert isinstance(member, PyMember)
            member.runner.send({"cmd": "event", "node": origin, "name": name, "payload": "x"})
        return t0

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.members[name].pid, sig)

    async def stop(self) -> None:
        for member in self.members.values():
            if isinstance(member, SerfMember):
                await member.rpc.close()
                if member.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(member.pid, signal.SIGCONT)
                        member.process.kill()
                    await member.process.wait()
        for runner in self.runners:
            await runner.stop()
        if self._transport is not None:
            self._transport.close()


# -- one measured run ------------------------------------------------------------------------


async def run_pool(
    kind: str, size: int, args: argparse.Namespace, serf: str, *, faults: bool = True
) -> dict[str, Any]:
    """One pool of ``kind`` (serf, pysyncer or mixed): every figure of the module doc."""
    seen = Seen()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    pool = Pool(workdir, seen)
    names = [f"{kind[:2]}{i:03d}" for i in range(size)]
    victims = names[1 : 1 + args.kills] if faults else []
    stopped = names[1 + args.kills] if faults else None
    alone = [*victims, *([stopped] if stopped else [])]
    result: dict[str, Any] = {"kind": kind, "size": size}
    try:
        await pool.start_statsd()
        if kind == "serf":
            await pool.add_serf(serf, names)
        elif kind == "pysyncer":
            await pool.add_py(names, args.py_profile, args.per_process, alone)
        else:  # mixed: even indexes Serf, odd pysyncer; victims one of each
            await pool.add_serf(serf, names[0::2])
            await pool.add_py(names[1::2], args.py_profile, args.per_process, alone)
        t0 = await pool.join_all()
        if not await pool.wait(lambda: pool.converged(t0) is not None, 120):
            raise RuntimeError(f"{kind} N={size}: the pool did not converge in 120 s")
        result["join_convergence_s"] = pool.converged(t0)
        phases = {"converged": time.time() - t0}
        await asyncio.sleep(2.0)
        result["bytes_per_member_s"] = await pool.bytes_per_member_second(args.idle)
        delays: list[float] = []
        for i in range(args.events):
            origin = names[(i * 7) % size]
            event = f"ev-{kind}-{i}"
            sent = await pool.send_event(origin, event)

            def delivered(e: str = event, o: str = origin) -> dict[str, float]:
                return {k: t for k, t in seen.first("user", e, 0).items() if k != o}

            await pool.wait(lambda: len(delivered()) >= size - 1, 15)
            delays += [t - sent for t in delivered().values()]
            await asyncio.sleep(0.3)
        phases["events_done"] = time.time() - t0
        result["event_p50_s"] = pct(delays, 0.5)
        result["event_p99_s"] = pct(delays, 0.99)
        result["event_deliveries"] = len(delays)
        result["event_delays_s"] = delays
        if faults:
            result.update(await _faults(pool, names, victims, stopped, args))
        gone = set(victims) | ({stopped} if stopped else set())
        flaps = [(o, s) for _, o, k, s in seen.events if k == "member-failed" and s not in gone]
        result["phases_s"] = phases
        result["false_failure_events"] = [
            (round(t - t0, 2), o, s)
            for t, o, k, s in seen.events
            if k == "member-failed" and s not in gone
        ][:40]
        result["false_failures"] = len(flaps)
        result["false_failures_about_serf"] = sum(
            1 for _, s in flaps if isinstance(pool.members.get(s), SerfMember)
        )
    finally:
        await pool.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


async def _faults(
    pool: Pool, names: list[str], victims: list[str], stopped: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    seen = pool.seen
    gone = set(victims) | ({stopped} if stopped else set())
    healthy = [n for n in names if n not in gone]
    observers = healthy[:: max(1, len(healthy) // args.observers)][: args.observers]
    detection: list[float] = []

    def all_saw(kind: str, subject: str, since: float, who: list[str]) -> Callable[[], bool]:
        return lambda: set(who) <= set(seen.first(kind, subject, since))

    for victim in victims:
        killed = time.time()
        pool.signal(victim, signal.SIGKILL)
        await pool.wait(all_saw("member-failed", victim, killed, observers), 90)
        found = seen.first("member-failed", victim, killed)
        detection += [found[o] - killed for o in observers if o in found]
        await asyncio.sleep(1.0)
    out: dict[str, Any] = {
        "kill_detect_s": detection,
        "kill_detect_p50_s": pct(detection, 0.5),
        "kill_detect_max_s": max(detection) if detection else None,
        "kill_observations": len(detection),
        "kill_missed": len(victims) * len(observers) - len(detection),
    }
    if stopped is not None:
        paused = time.time()
        pool.signal(stopped, signal.SIGSTOP)
        await pool.wait(all_saw("member-failed", stopped, paused, observers), 90)
        await asyncio.sleep(1.0)
        resumed = time.time()
        pool.signal(stopped, signal.SIGCONT)
        await pool.wait(all_saw("member-join", stopped, resumed, healthy), args.return_wait)
        back = seen.first("member-join", stopped, resumed)
        returns = [back[o] - resumed for o in healthy if o in back]
        out["return_s"] = returns
        out["return_p99_s"] = pct(returns, 0.99) if len(returns) == len(healthy) else None
        out["return_all_s"] = max(returns) if len(returns) == len(healthy) else None
        out["return_seen_by"] = f"{len(returns)}/{len(healthy)}"
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        "join_convergence_s", "bytes_per_member_s", "event_p50_s", "event_p99_s",
        "kill_detect_p50_s", "kill_detect_max_s", "return_p99_s", "return_all_s",
    ]  # fmt: skip
    out: dict[str, Any] = {k: median_of(runs, k) for k in keys}
    out["false_failures"] = sum(r.get("false_failures", 0) for r in runs)
    out["false_failures_about_serf"] = sum(r.get("false_failures_about_serf", 0) for r in runs)
    out["trials"] = len(runs)
    return out


RATIO_KEYS = (
    "join_convergence_s", "kill_detect_p50_s", "event_p99_s", "bytes_per_member_s",
    "return_p99_s",
)  # fmt: skip


def report_from_runs(paths: list[Path]) -> dict[str, Any]:
    """The report of saved ``--runs-file`` lines (runs of several invocations merged)."""
    report: dict[str, Any] = {"sizes": {}, "events": {}}
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            run = json.loads(line)
            section = "sizes" if "kill_detect_s" in run else "events"
            grouped.setdefault((section, run["kind"], run["size"]), []).append(run)
    for (section, kind, size), runs in sorted(grouped.items()):
        row = report[section].setdefault(str(size), {})
        row[kind] = {"summary": summarize(runs), "runs": runs}
    for row in report["sizes"].values():
        if "serf" in row and "pysyncer" in row:
            s, p = row["serf"]["summary"], row["pysyncer"]["summary"]
            row["ratios"] = {k: p[k] / s[k] if p.get(k) and s.get(k) else None for k in RATIO_KEYS}
    return report


async def measure(args: argparse.Namespace, serf: str) -> dict[str, Any]:
    report: dict[str, Any] = {"py_profile": args.py_profile, "sizes": {}}
    for size in args.sizes:
        row: dict[str, Any] = {}
        for kind in (*args.kinds, *(("mixed",) if args.mixed else ())):
            runs = []
            for trial in range(args.trials):
                started = time.monotonic()
                runs.append(await run_pool(kind, size, args, serf))
                if args.runs_file:
                    with args.runs_file.open("a") as out:
                        out.write(json.dumps(runs[-1]) + "\n")
                print(
                    f"  {kind} N={size} trial {trial + 1}: "
                    + ", ".join(f"{k} {v:.3g}" for k, v in runs[-1].items()
                                if isinstance(v, float)) + f" ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                )  # fmt: skip
            row[kind] = {"summary": summarize(runs), "runs": runs}
        if "serf" not in row or "pysyncer" not in row:
            report["sizes"][str(size)] = row
            continue
        s, p = row["serf"]["summary"], row["pysyncer"]["summary"]
        row["ratios"] = {k: p[k] / s[k] if p.get(k) and s.get(k) else None for k in RATIO_KEYS}
        report["sizes"][str(size)] = row
    if args.event_size:
        row = {}
        for kind in args.kinds:
            runs = [await run_pool(kind, args.event_size, args, serf, faults=False)]
            if args.runs_file:
                with args.runs_file.open("a") as out:
                    out.write(json.dumps(runs[-1]) + "\n")
            row[kind] = {"summary": summarize(runs), "runs": runs}
            print(f"  events N={args.event_size} {kind}: {row[kind]['summary']}", file=sys.stderr)
        report["events"] = {str(args.event_size): row}
    return report


def plot(report: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, title, filename in (
        ("kill_detect_s", "kill -9 detection by observers", "gossip_vs_serf_detection.png"),
        ("event_delays_s", "user event delivery to each member", "gossip_vs_serf_events.png"),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        rows = list(report["sizes"].items()) + list(report.get("events", {}).items())
        for size, row in rows:
            for kind, style in (("serf", "--"), ("pysyncer", "-"), ("mixed", ":")):
                if kind not in row:
                    continue
                values = sorted(v for run in row[kind]["runs"] for v in run.get(metric, []))
                if not values:
                    continue
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, style, where="post", label=f"{kind} N={size}")
        if metric == "event_delays_s":
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xlabel("seconds (log scale)")
        else:
            ax.set_xlabel("seconds")
        ax.set_ylabel("fraction")
        ax.set_title(f"{title}: pysyncer vs Serf agents, loopback")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10,50", help="pool sizes, comma separated")
    parser.add_argument("--trials", type=int, default=3, help="runs per pool (3)")
    parser.add_argument("--kills", type=int, default=2, help="members killed per run (2)")
    parser.add_argument("--observers", type=int, default=3, help="observers per kill (3)")
    parser.add_argument("--events", type=int, default=5, help="user events per run (5)")
    parser.add_argument("--idle", type=float, default=10.0, help="bytes window, s (10)")
    parser.add_argument("--return-wait", type=float, default=60.0, help="limit, s (60)")
    parser.add_argument("--per-process", type=int, default=1, help="pysyncer members a process")
    parser.add_argument("--kinds", default="serf,pysyncer", help="pools to run (serf,pysyncer)")
    parser.add_argument("--mixed", action="store_true", help="also half Serf, half pysyncer")
    parser.add_argument("--event-size", type=int, default=0, help="events-only pool size")
    parser.add_argument("--py-profile", default="pysyncer", help="pysyncer's gossip profile")
    parser.add_argument("--plot", type=Path, help="directory for the PNG CDFs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs-file", type=Path, help="append each run's JSON line here")
    parser.add_argument(
        "--from-runs", type=Path, nargs="+", help="report (and plot) saved --runs-file lines"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.kinds = [k for k in args.kinds.split(",") if k in ("serf", "pysyncer")]
    serf = shutil.which("serf")
    if serf is None:
        parser.error("the serf binary is not installed (apt-get install serf)")
    report = (
        report_from_runs(args.from_runs) if args.from_runs else asyncio.run(measure(args, serf))
    )
    if args.plot:
        for path in plot(report, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for size, row in report["sizes"].items():
        print(f"N={size}")
        for kind in ("serf", "pysyncer", "mixed"):
            if kind in row:
                summary = row[kind]["summary"]
                print(f"  {kind:>8}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        ratios = [f"{k} {v:.2f}" for k, v in row.get("ratios", {}).items() if v]
        print("  pysyncer / serf: " + ", ".join(ratios))
    for size, row in report.get("events", {}).items():
        for kind in row:
            print(f"events N={size} {kind}: {row[kind]['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
