"""``pysyncer demo``: several data centers on loopback, instances syncing between them.

Starts one ``pysyncer daemon`` subprocess per data center (``dc-east``, ``dc-west``,
``dc-north``...), each with its embedded registry, on free ports of its own loopback
address (``127.0.0.x``), all joining the first one's gossip address. The demo then plays
the *application*: it registers sample services in every registry through the REST API
and keeps them alive with heartbeats, while it polls every registry's governance listing
(~20 ms) to measure how long a registration takes to appear everywhere. It then deletes
one instance, restarts one syncer with the same data directory, checks that the copies
stayed and that nothing got duplicated, and prints a summary (exit status 1 when a count
is not what it must be).

Owns only its own processes: each is stopped by pid on exit, on an error and on Ctrl-C
(and, on Linux, also when the demo itself dies). Every wait is bounded; the whole run
ends by itself in well under two minutes. Logs and data go to ``workdir`` (a temporary
directory unless given, removed at the end unless the demo failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY

__all__ = ["DC_NAMES", "SERVICE_NAMES", "run_demo"]

DC_NAMES = ("dc-east", "dc-west", "dc-north", "dc-south", "dc-central", "dc-edge")
SERVICE_NAMES = (
    ("shop", "cart"),
    ("shop", "payment"),
    ("shop", "orders"),
    ("shop", "catalog"),
    ("shop", "inventory"),
    ("shop", "shipping"),
    ("users", "accounts"),
    ("users", "auth"),
    ("search", "query"),
    ("search", "indexer"),
)
PROJECT = "/v4/default"
POLL_INTERVAL = 0.02  # governance listing poll, per registry
HEARTBEAT_INTERVAL = 3.0  # the application's lease renewals, well inside the TTL
HEALTH_CHECK = {"mode": "push", "interval": 30, "times": 3}  # Service-Center's default: 120 s
RETRY_INTERVAL = 0.25  # heartbeats while a registry is down or forgot our instances
TOTAL_BUDGET = 100.0  # seconds: the whole demo, whatever happens
START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
CATCH_UP_TIMEOUT = 45.0
DOWN_PAUSE = 2.0  # how long one syncer stays stopped while we watch the others
REFRESH = 0.25  # live table redraw interval (TTY only)
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


class DemoError(Exception):
    """A step of the demo failed; the message says which and where the logs are."""


# -- processes -----------------------------------------------------------------------------


def _free_port(host: str) -> int:
    """A port free for both TCP and UDP on ``host`` (gossip needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise DemoError(f"no free TCP+UDP port on {host}")


def _loopback_host(index: int) -> str:
    """``127.0.0.<101+index>`` where the system routes all of 127/8 (Linux), else 127.0.0.1."""
    host = f"127.0.0.{101 + index}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return "127.0.0.1"
    return host


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook so a child gets SIGTERM if the demo dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return hook


_PRE_EXEC = _parent_death_signal()


@dataclass
class DataCenter:
    """One data center: one syncer daemon with its embedded registry."""

    name: str
    host: str
    workdir: Path
    gossip_port: int = 0
    rpc_port: int = 0
    admin_port: int = 0
    registry_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    _log: Any = None

    def __post_init__(self) -> None:
        self.pick_ports()

    def pick_ports(self) -> None:
        self.gossip_port = _free_port(self.host)
        self.rpc_port = _free_port(self.host)
        self.admin_port = _free_port(self.host)
        self.registry_port = _free_port(self.host)

    @property
    def node(self) -> str:
        return f"{self.name}-syncer"

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.gossip_port}"

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def registry(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data" / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / f"{self.name}.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, join: str | None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pysyncer", "daemon",
            "--node", self.node, "--dc", self.name,
            "--bind", self.bind, "--rpc-addr", f"{self.host}:{self.rpc_port}",
            "--admin-addr", f"{self.host}:{self.admin_port}",
            "--registry-addr", f"{self.host}:{self.registry_port}",
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if join:
            command += ["--join", join]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSYNCER_")}
        self._log = self.log_path.open("ab")
        self._log.write(f"--- demo: starting {' '.join(command)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_PRE_EXEC,  # one prctl call, looked up in advance
        )
        self.pids.append(self.process.pid)

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def reap(self, timeout: float) -> int | None:
        """Wait for the process to exit (SIGKILL after ``timeout``); its exit status."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"    {line}" for line in text[-lines:])


def stop_all(dcs: Sequence[DataCenter], timeout: float = 10.0) -> None:
    """SIGTERM every running daemon, wait (SIGKILL after ``timeout``), by pid only."""
    for dc in dcs:
        dc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for dc in dcs:
        dc.reap(deadline - time.monotonic())


# -- the registries, as an application and as an observer -----------------------------------


@dataclass
class Original:
    """One instance the demo registered (and keeps alive) in its own data center."""

    app: str
    service: str
    host_name: str
    endpoint: str
    service_id: str = ""
    instance_id: str = ""
    registered_at: float = 0.0  # monotonic time the first register call returned


@dataclass
class Snapshot:
    """What one registry held at one poll."""

    at: float = 0.0
    up: bool = False
    originals: set[str] = field(default_factory=set)
    copies: dict[str, set[str]] = field(default_factory=dict)  # origin dc -> origin ids
    duplicates: int = 0  # copies whose origin id appears more than once

    def holds(self, origin_id: str) -> bool:
        return origin_id in self.originals or any(origin_id in ids for ids in self.copies.values())


class Observer:
    """Polls every registry's governance listing and remembers when ids come and go."""

    def __init__(self, session: aiohttp.ClientSession, dcs: Sequence[DataCenter]) -> None:
        self.session = session
        self.dcs = dcs
        self.latest: dict[str, Snapshot] = {dc.name: Snapshot() for dc in dcs}
        self.first_seen: dict[tuple[str, str], float] = {}  # (registry dc, origin id)
        self.gone_at: dict[tuple[str, str], float] = {}
        self.polls = 0
        # Once converged: how many copies each registry ever lacked, per origin dc.
        self.expected: Callable[[str], int] | None = None
        self.untracked: set[str] = set()  # registries not held to it (being restarted)
        self.phase = "steady"
        self.deficit: dict[tuple[str, str, str], int] = {}  # (phase, registry, origin) -> most

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(dc) for dc in self.dcs))

    async def _follow(self, dc: DataCenter) -> None:
        while True:
            started = time.monotonic()
            snapshot = await self._poll(dc)
            self._record(dc.name, snapshot)
            self.polls += 1
            await asyncio.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - started)))

    async def _poll(self, dc: DataCenter) -> Snapshot:
        url = f"{dc.registry}{PROJECT}/govern/microservices?options=instances"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    return Snapshot(at=time.monotonic())
                body = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return Snapshot(at=time.monotonic())
        snapshot = Snapshot(at=time.monotonic(), up=True)
        seen: set[str] = set()
        for detail in body.get("allServicesDetail") or ():
            for instance in detail.get("instances") or ():
                props = instance.get("properties") or {}
                origin_dc = props.get(ORIGIN_DC_PROPERTY)
                if origin_dc:
                    origin_id = str(props.get(ORIGIN_ID_PROPERTY, ""))
                    if origin_id in seen:
                        snapshot.duplicates += 1
                    seen.add(origin_id)
                    snapshot.copies.setdefault(str(origin_dc), set()).add(origin_id)
                else:
                    snapshot.originals.add(str(instance.get("instanceId", "")))
        return snapshot

    def _record(self, name: str, snapshot: Snapshot) -> None:
        previous = self.latest[name]
        self.latest[name] = snapshot
        if not snapshot.up:
            return  # a registry that does not answer says nothing about what it holds
        if self.expected is not None and name not in self.untracked:
            for dc in self.dcs:
                if dc.name != name:
                    lacking = self.expected(dc.name) - len(snapshot.copies.get(dc.name, ()))
                    key = (self.phase, name, dc.name)
                    self.deficit[key] = max(self.deficit.get(key, 0), lacking)
        now_ids = snapshot.originals.union(*snapshot.copies.values())
        for origin_id in now_ids:
            self.first_seen.setdefault((name, origin_id), snapshot.at)
        if previous.up:
            before = previous.originals.union(*previous.copies.values())
            for origin_id in before - now_ids:
                self.gone_at.setdefault((name, origin_id), snapshot.at)

    def counts(self, name: str) -> tuple[int, dict[str, int]]:
        snapshot = self.latest[name]
        return len(snapshot.originals), {dc: len(ids) for dc, ids in snapshot.copies.items()}


class Application:
    """The demo's stand-in for the applications of one data center.

    Registers its instances, renews their leases every few seconds (batch heartbeat), and
    registers them again, with the same instance ids, when its registry forgot them (it
    restarted: the embedded registry keeps its data in memory).
    """

    def __init__(self, session: aiohttp.ClientSession, dc: DataCenter) -> None:
        self.session = session
        self.dc = dc
        self.instances: list[Original] = []
        self.deleted: list[Original] = []
        self.reregistered = 0
        self.down_since: float | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.dc.registry}{PROJECT}{path}"
        async with self.session.request(method, url, json=body) as response:
            text = await response.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            return response.status, data

    async def _register(self, original: Original) -> None:
        status, data = await self._call(
            "POST",
            "/registry/microservices",
            {"service": {"appId": original.app, "serviceName": original.service,
                         "version": "1.0.0"}},
        )  # fmt: skip
        if status != 200:
            raise DemoError(f"{self.dc.name}: create service {original.service}: {data}")
        original.service_id = str(data["serviceId"])
        instance: dict[str, Any] = {
            "hostName": original.host_name,
            "endpoints": [original.endpoint],
            "status": "UP",
            "healthCheck": HEALTH_CHECK,
            "properties": {"demo": "pysyncer"},
        }
        if original.instance_id:
            instance["instanceId"] = original.instance_id
        status, data = await self._call(
            "POST",
            f"/registry/microservices/{original.service_id}/instances",
            {"instance": instance},
        )
        if status != 200:
            raise DemoError(f"{self.dc.name}: register {original.host_name}: {data}")
        original.instance_id = str(data["instanceId"])
        if not original.registered_at:
            original.registered_at = time.monotonic()

    async def register_all(self, dc_index: int, services: int, instances: int) -> None:
        for s in range(services):
            app, service = _service_name(s)
            for k in range(instances):
                original = Original(
                    app,
                    service,
                    host_name=f"{service}-{self.dc.name.removeprefix('dc-')}-{k + 1}",
                    endpoint=f"rest://10.{dc_index}.{s}.{k + 1}:8080",
                )
                await self._register(original)
                self.instances.append(original)

    async def unregister(self, original: Original) -> None:
        self.instances.remove(original)  # stop renewing it first
        self.deleted.append(original)
        path = f"/registry/microservices/{original.service_id}/instances/{original.instance_id}"
        status, data = await self._call("DELETE", path)
        if status != 200:
            raise DemoError(f"{self.dc.name}: unregister {original.host_name}: {data}")

    async def keep_alive(self) -> None:
        """Heartbeats forever: every few seconds, every quarter second while in trouble."""
        while True:
            healthy = await self._heartbeat()
            await asyncio.sleep(HEARTBEAT_INTERVAL if healthy else RETRY_INTERVAL)

    async def _heartbeat(self) -> bool:
        if not self.instances:
            return True
        pairs = [{"serviceId": o.service_id, "instanceId": o.instance_id} for o in self.instances]
        try:
            status, data = await self._call("PUT", "/registry/heartbeats", {"Instances": pairs})
            if status == 200:
                self.down_since = None
                return True
            failed = {
                str(item.get("instanceId"))
                for item in (data.get("instances") or () if isinstance(data, dict) else ())
            }
            for original in list(self.instances):
                if original.instance_id in failed or not failed:
                    await self._register(original)
                    self.reregistered += 1
            self.down_since = None
            return True
        except (aiohttp.ClientError, asyncio.TimeoutError, DemoError):
            if self.down_since is None:
                self.down_since = time.monotonic()
            return False


def _service_name(index: int) -> tuple[str, str]:
    if index < len(SERVICE_NAMES):
        return SERVICE_NAMES[index]
    return "shop", f"service-{index + 1}"


def _dc_names(count: int) -> list[str]:
    return [DC_NAMES[i] if i < len(DC_NAMES) else f"dc-{i + 1}" for i in range(count)]


# -- output ----------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


class Display:
    """A table redrawn in place on a terminal, printed as snapshots otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0

    def say(self, text: str = "") -> None:
        self._drawn = 0
        print(text, file=self.out, flush=True)

    def draw(self, lines: Sequence[str], final: bool) -> None:
        """Redraw over the previous table on a TTY; print only ``final`` ones otherwise."""
        if self.tty:
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(up + "\n".join(lines) + "\n")
            self.out.flush()
            self._drawn = 0 if final else len(lines)
        elif final:
            self.say("\n".join(lines))

    @contextlib.contextmanager
    def live(self, render: Callable[[], list[str]]) -> Iterator[None]:
        """Keep redrawing ``render()`` until the block ends, then draw it one last time."""

        async def loop() -> None:
            while True:
                self.draw(render(), final=False)
                await asyncio.sleep(REFRESH)

        task = asyncio.get_running_loop().create_task(loop()) if self.tty else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            self.draw(render(), final=True)


# -- the demo ----------------------------------------------------------------------------------


class Demo:
    def __init__(
        self, dcs: list[DataCenter], services: int, instances: int, display: Display
    ) -> None:
        self.dcs = dcs
        self.services = services
        self.instances = instances
        self.display = display
        self.deleted: dict[str, str] = {}  # origin id -> origin dc
        self.stopped: set[str] = set()
        self.propagation: dict[tuple[str, str], list[float]] = {}
        self.figures: dict[str, float] = {}

    # expected state

    def expected_from(self, origin: str) -> int:
        gone = sum(1 for dc in self.deleted.values() if dc == origin)
        return self.services * self.instances - gone

    def expected_total(self) -> int:
        return sum(self.expected_from(dc.name) for dc in self.dcs)

    def mismatches(self, observer: Observer) -> list[str]:
        problems = []
        for dc in self.dcs:
            snap = observer.latest[dc.name]
            if not snap.up:
                problems.append(f"{dc.name}: registry not answering")
                continue
            if len(snap.originals) != self.expected_from(dc.name):
                problems.append(
                    f"{dc.name}: {len(snap.originals)} originals, "
                    f"expected {self.expected_from(dc.name)}"
                )
            for other in self.dcs:
                if other is dc:
                    continue
                held = snap.copies.get(other.name, set())
                if len(held) != self.expected_from(other.name):
                    problems.append(
                        f"{dc.name}: {len(held)} copies from {other.name}, "
                        f"expected {self.expected_from(other.name)}"
                    )
                stale = held & self.deleted.keys()
                if stale:
                    problems.append(f"{dc.name}: still holds deleted {sorted(stale)}")
            strays = set(snap.copies) - {d.name for d in self.dcs if d is not dc}
            if strays:
                problems.append(f"{dc.name}: copies from unknown origin(s) {sorted(strays)}")
            if snap.duplicates:
                problems.append(f"{dc.name}: {snap.duplicates} duplicate copies")
        return problems

    # tables

    def registry_table(self, observer: Observer, links: dict[str, dict[str, str]]) -> list[str]:
        names = [dc.name for dc in self.dcs]
        width = max(10, *(len(n) for n in names))
        head = f"  {'registry':<{width}} {'address':<22} {'originals':>9}"
        head += "".join(f" {'<- ' + n:>{width + 3}}" for n in names)
        head += f" {'total':>6} {'expected':>8}  sync links"
        lines = [head]
        for dc in self.dcs:
            snap = observer.latest[dc.name]
            row = f"  {dc.name:<{width}} {dc.registry.removeprefix('http://'):<22}"
            if not snap.up:
                state = "syncer+registry stopped" if dc.name in self.stopped else "not answering"
                lines.append(f"{row} {'-':>9}  ({state})")
                continue
            row += f" {len(snap.originals):>9}"
            total = len(snap.originals)
            for other in names:
                if other == dc.name:
                    row += f" {'.':>{width + 3}}"
                else:
                    count = len(snap.copies.get(other, ()))
                    total += count
                    row += f" {count:>{width + 3}}"
            states = links.get(dc.name, {})
            link_text = ", ".join(f"{k.removeprefix('dc-')}:{v}" for k, v in sorted(states.items()))
            dup = f" DUPLICATES {snap.duplicates}" if snap.duplicates else ""
            lines.append(f"{row} {total:>6} {self.expected_total():>8}  {link_text}{dup}")
        return lines

    def propagation_table(self, observer: Observer, apps: dict[str, Application]) -> list[str]:
        """p50 / max from the register call returning at the origin to the copy appearing."""
        self.propagation = {}
        for origin, app in apps.items():
            for original in app.instances + app.deleted:
                if not original.registered_at:
                    continue
                for dc in self.dcs:
                    if dc.name == origin:
                        continue
                    seen = observer.first_seen.get((dc.name, original.instance_id))
                    if seen is not None:
                        delay = max(0.0, seen - original.registered_at)
                        self.propagation.setdefault((origin, dc.name), []).append(delay)
        names = [dc.name for dc in self.dcs]
        width = max(24, *(len(n) + 5 for n in names))
        lines = [
            "  propagation p50 / max (register at origin -> copy listed; polled every 20 ms)",
            f"  {'origin':<12}" + "".join(f" {'-> ' + n:>{width - 1}}" for n in names),
        ]
        for origin in names:
            row = f"  {origin:<12}"
            for target in names:
                values = self.propagation.get((origin, target))
                if origin == target:
                    cell = "."
                elif not values:
                    cell = "-"
                else:
                    cell = f"{_ms(statistics.median(values))} / {_ms(max(values))}"
                    cell += f" ({len(values)})"
                row += f" {cell:>{width - 1}}"
            lines.append(row)
        return lines

    def all_delays(self) -> list[float]:
        return [d for values in self.propagation.values() for d in values]


class Cluster:
    """Admin API look-ups over all daemons."""

    def __init__(self, session: aiohttp.ClientSession, dcs: Sequence[DataCenter]) -> None:
        self.session = session
        self.dcs = dcs
        self.links: dict[str, dict[str, str]] = {}

    async def _get(self, dc: DataCenter, path: str) -> Any:
        try:
            async with self.session.get(dc.admin + path) as response:
                if response.status != 200:
                    return None
                return await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def readiness(self, dc: DataCenter) -> tuple[bool, int, int]:
        """(healthy, members alive, links streaming) of one daemon."""
        health = await self._get(dc, "/v1/health")
        if not isinstance(health, dict):
            return False, 0, 0
        members = await self._get(dc, "/v1/members") or {}
        wanted = {d.node for d in self.dcs}
        alive = sum(
            1
            for m in members.get("members", ())
            if m.get("name") in wanted and m.get("status") == "alive"
        )
        status = await self._get(dc, "/v1/sync/status") or {}
        remote = status.get("remote") or {}
        self.links[dc.name] = {k: str(v.get("state")) for k, v in remote.items()}
        others = [d.name for d in self.dcs if d is not dc]
        streaming = sum(1 for name in others if remote.get(name, {}).get("state") == "streaming")
        return True, alive, streaming

    async def refresh_links(self) -> None:
        for dc in self.dcs:
            if dc.running():
                await self.readiness(dc)
            else:
                self.links[dc.name] = {}


async def _wait(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
    display: Display | None = None,
    dcs: Sequence[DataCenter] = (),
    interval: float = POLL_INTERVAL,
) -> float:
    """Await ``condition()`` (sync or async) until true; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    last_text, last_print = "", 0.0
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        for dc in dcs:
            if dc.process is not None and dc.process.poll() is not None:
                raise DemoError(
                    f"the {dc.name} syncer exited with status {dc.process.returncode} while "
                    f"waiting for {what}; its log ({dc.log_path}) ends with:\n{dc.log_tail()}"
                )
        now = time.monotonic()
        if now > deadline:
            extra = f" ({progress()})" if progress else ""
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        if progress and display:
            text = progress()
            if text != last_text or now - last_print > 2.0:
                display.say(f"   ... {text}")
                last_text, last_print = text, now
        await asyncio.sleep(interval)


async def _main(dcs: list[DataCenter], services: int, instances: int, display: Display) -> int:
    demo = Demo(dcs, services, instances, display)
    say = display.say
    timeout = aiohttp.ClientTimeout(total=3)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        cluster = Cluster(session, dcs)
        observer = Observer(session, dcs)
        apps = {dc.name: Application(session, dc) for dc in dcs}
        background: list[asyncio.Task[Any]] = []
        try:
            return await _scenario(demo, cluster, observer, apps, background)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            say()


async def _scenario(
    demo: Demo,
    cluster: Cluster,
    observer: Observer,
    apps: dict[str, Application],
    background: list[asyncio.Task[Any]],
) -> int:
    dcs, display, say = demo.dcs, demo.display, demo.display.say
    loop = asyncio.get_running_loop()
    n = len(dcs)
    began = time.monotonic()

    # 1. start the syncers ---------------------------------------------------------------------
    say(f"1. Starting {n} data centers: one syncer daemon each, with its embedded registry")
    first = dcs[0]
    first.start(join=None)
    for dc in dcs[1:]:
        dc.start(join=first.bind)
    for dc in dcs:
        say(
            f"   {dc.name:<10} pid {dc.process.pid if dc.process else 0:<7} gossip {dc.bind:<21} "
            f"registry {dc.registry:<28} admin {dc.admin}"
        )
    state: dict[str, tuple[bool, int, int]] = {}

    async def all_ready() -> bool:
        for dc in dcs:
            state[dc.name] = await cluster.readiness(dc)
        return all(s == (True, n, n - 1) for s in state.values())

    def start_progress() -> str:
        return "; ".join(
            f"{name.removeprefix('dc-')}: "
            + ("up" if s[0] else "starting")
            + (f", sees {s[1]}/{n}, {s[2]}/{n - 1} streaming" if s[0] else "")
            for name, s in state.items()
        )

    took = await _wait(
        all_ready, START_TIMEOUT, "every syncer healthy, in the pool and streaming",
        start_progress, display, dcs, interval=0.2,
    )  # fmt: skip
    demo.figures["startup"] = took
    say(f"   all {n} syncers healthy, each sees {n} members, every link streaming ({took:.1f} s)")
    background.append(loop.create_task(observer.run()))

    # 2. register --------------------------------------------------------------------------------
    per_dc = demo.services * demo.instances
    say()
    say(
        f"2. Registering {demo.services} services x {demo.instances} instances in each "
        f"registry ({per_dc} originals per data center, {per_dc * n} in all), kept alive by "
        f"heartbeats every {HEARTBEAT_INTERVAL:.0f} s"
    )
    await _wait(lambda: all(s.up for s in observer.latest.values()), 5, "first listings")

    def table() -> list[str]:
        return demo.registry_table(observer, cluster.links)

    with display.live(table):
        await asyncio.gather(
            *(apps[dc.name].register_all(i + 1, demo.services, demo.instances)
              for i, dc in enumerate(dcs))
        )  # fmt: skip
        for app in apps.values():
            background.append(loop.create_task(app.keep_alive()))
        await _wait(
            lambda: not demo.mismatches(observer), CONVERGE_TIMEOUT,
            "every registry to hold every instance", lambda: "; ".join(demo.mismatches(observer)),
        )  # fmt: skip
        await cluster.refresh_links()
    observer.expected = demo.expected_from  # from now on, no registry may lack a copy
    say()
    for line in demo.propagation_table(observer, apps):
        say(line)

    # 3. delete ----------------------------------------------------------------------------------
    origin_app = apps[dcs[0].name]
    victim = origin_app.instances[0]
    say()
    say(
        f"3. Unregistering {victim.app}/{victim.service} instance {victim.host_name} "
        f"({victim.instance_id[:12]}) at its origin {dcs[0].name}"
    )
    demo.deleted[victim.instance_id] = dcs[0].name  # expected counts drop first
    await origin_app.unregister(victim)
    deleted_at = time.monotonic()

    def gone_everywhere() -> bool:
        return all(
            observer.latest[dc.name].at > deleted_at
            and not observer.latest[dc.name].holds(victim.instance_id)
            for dc in dcs
        )

    await _wait(gone_everywhere, CONVERGE_TIMEOUT, f"{victim.host_name} to disappear everywhere")
    delays = {
        dc.name: observer.gone_at.get((dc.name, victim.instance_id), deleted_at) - deleted_at
        for dc in dcs
        if dc is not dcs[0]
    }
    demo.figures["delete"] = max(delays.values())
    say(
        "   gone from "
        + ", ".join(f"{name} after {_ms(max(0.0, d))}" for name, d in delays.items())
    )
    await _wait(lambda: not demo.mismatches(observer), CONVERGE_TIMEOUT, "counts after delete")

    # 4. restart one syncer ----------------------------------------------------------------------
    target = dcs[1]
    others = [dc for dc in dcs if dc is not target]
    say()
    say(
        f"4. Stopping the {target.name} syncer (SIGTERM, pid "
        f"{target.process.pid if target.process else 0}); its embedded registry stops with it"
    )
    stop_began = time.monotonic()
    observer.untracked.add(target.name)
    observer.phase = f"while {target.name} was down"
    target.signal(signal.SIGTERM)
    status = await loop.run_in_executor(None, target.reap, STOP_TIMEOUT)
    demo.stopped.add(target.name)
    say(f"   exited with status {status} after {time.monotonic() - stop_began:.1f} s")
    kept_min = demo.expected_from(target.name)

    def watch_kept() -> bool:
        nonlocal kept_min
        for dc in others:
            kept_min = min(kept_min, len(observer.latest[dc.name].copies.get(target.name, ())))
        return False

    with contextlib.suppress(DemoError):
        await _wait(watch_kept, DOWN_PAUSE, "")
    await cluster.refresh_links()
    with display.live(table):
        pass
    expected_kept = demo.expected_from(target.name)
    say(
        f"   while it was down for {DOWN_PAUSE:.0f} s the other registries kept serving its "
        f"{expected_kept} copies (fewest seen: {kept_min}); they expire only by TTL"
    )
    demo.figures["kept_min"] = kept_min

    say(f"   starting {target.name} again with the same data dir ({target.data_dir})")
    target.start(join=first.bind)
    observer.phase = f"after {target.name} restarted with an empty registry"
    demo.stopped.discard(target.name)

    async def caught_up() -> bool:
        if demo.mismatches(observer):
            return False
        ready = [await cluster.readiness(dc) for dc in dcs]
        return all(r == (True, n, n - 1) for r in ready)

    def catch_up_progress() -> str:
        problems = demo.mismatches(observer)
        return "; ".join(problems[:3]) or "counts right, waiting for links to stream"

    with display.live(table):
        took = await _wait(
            caught_up, CATCH_UP_TIMEOUT, f"{target.name} to catch up", catch_up_progress,
            None if display.tty else display, dcs, interval=0.05,
        )  # fmt: skip
    demo.figures["catch_up"] = took
    observer.untracked.discard(target.name)
    say(
        f"   caught up {took:.2f} s after the restart: its registry holds all "
        f"{demo.expected_total() - demo.expected_from(target.name)} copies again, the "
        f"application re-registered its {demo.expected_from(target.name)} originals "
        f"({apps[target.name].reregistered} re-registrations), no duplicates"
    )

    # 5. summary -------------------------------------------------------------------------------
    await asyncio.sleep(0.1)
    problems = demo.mismatches(observer)
    delays_all = demo.all_delays()
    total = demo.expected_total()
    say()
    say("Summary")
    say(f"  data centers        {n} ({', '.join(dc.name for dc in dcs)})")
    say(f"  instances           {total} originals ({per_dc} registered per dc, 1 deleted)")
    for dc in dcs:
        snap = observer.latest[dc.name]
        copies = sum(len(ids) for ids in snap.copies.values())
        expected = total - demo.expected_from(dc.name)
        verdict = "ok" if copies == expected and not snap.duplicates else "WRONG"
        say(
            f"  {dc.name:<19} {len(snap.originals)} originals, {copies} copies "
            f"(expected {expected}), {snap.duplicates} duplicates: {verdict}"
        )
    if delays_all:
        say(
            f"  propagation         p50 {_ms(statistics.median(delays_all))}, "
            f"p99 {_ms(_percentile(delays_all, 0.99))}, max {_ms(max(delays_all))} "
            f"over {len(delays_all)} copies"
        )
    say(f"  delete              gone everywhere after {_ms(demo.figures['delete'])}")
    say(
        f"  restart             {target.name} caught up {demo.figures['catch_up']:.2f} s after "
        f"restart; others kept {int(demo.figures['kept_min'])}/{expected_kept} of its copies"
    )
    dips = {key: lacking for key, lacking in observer.deficit.items() if lacking > 0}
    say(
        "  copies kept         "
        + (
            "no registry ever lacked a copy once converged (restarted one aside)"
            if not dips
            else "WARNING: copies went missing for a while: "
            + "; ".join(f"{p}, {r} lacked {k} of {o}'s" for (p, r, o), k in sorted(dips.items()))
        )
    )
    say(f"  demo ran            {time.monotonic() - began:.1f} s")
    if problems or not delays_all:
        say("FAILED: " + "; ".join(problems or ["no propagation measured"]))
        return EXIT_FAILED
    say(
        f"OK: {n} data centers, {total} instances, every registry holds all {total} "
        "(its originals + copies of the others'), no duplicates"
    )
    return EXIT_OK


def run_demo(
    dcs: int = 3, services: int = 5, instances: int = 2, workdir: str | Path | None = None
) -> int:
    """Run the demo; the exit status (0 all counts right, 1 failure, 130 interrupted)."""
    out = sys.stdout
    if not 2 <= dcs <= 16 or not 1 <= services <= 50 or not 1 <= instances <= 20:
        print(
            "pysyncer demo: needs 2-16 data centers, 1-50 services and 1-20 instances",
            file=sys.stderr,
        )
        return EXIT_FAILED
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="pysyncer-demo-")) if workdir is None else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    display = Display(out)
    centers = [DataCenter(name, _loopback_host(i), root) for i, name in enumerate(_dc_names(dcs))]
    display.say(f"pysyncer demo: logs in {root / 'logs'}, data in {root / 'data'}")
    status = EXIT_FAILED
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: no handler
        signal.signal(signal.SIGTERM, on_term)
    try:
        status = asyncio.run(
            asyncio.wait_for(_main(centers, services, instances, display), TOTAL_BUDGET)
        )
    except KeyboardInterrupt:
        display.say("interrupted: stopping every syncer")
        status = EXIT_INTERRUPTED
    except asyncio.TimeoutError:
        display.say(f"FAILED: the demo did not finish within {TOTAL_BUDGET:.0f} s")
    except (DemoError, OSError, aiohttp.ClientError) as exc:
        display.say(f"FAILED: {exc}")
    finally:
        stop_all(centers)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous_term)
        pids = ", ".join(str(p) for dc in centers for p in dc.pids)
        display.say(f"stopped every syncer (pids {pids})")
    if status == EXIT_OK and temporary:
        shutil.rmtree(root, ignore_errors=True)
    elif status != EXIT_OK:
        display.say(f"logs kept in {root / 'logs'}")
    return status
