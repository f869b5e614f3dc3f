"""Processes pysyncer starts on this machine: ports, subprocesses, a REST client, a poller.

Owns starting and stopping child processes: free loopback ports (TCP and UDP), a
loopback address per node, ``pysyncer daemon`` and ``pysyncer registry`` and a real
etcd started as subprocesses (each child gets SIGTERM from the kernel if its parent
dies, on Linux) and stopped by their pid only (SIGTERM, then SIGKILL; every wait
bounded) or paused (SIGSTOP, until every thread has stopped), a tiny Service-Center v4
REST client (project ``default``, the documented API of docs/registry.md, with urllib:
what a client sees) and an ``eventually`` poller.
Shared by ``pysyncer demo``, pysyncer's tests and its benchmarks. Standard library,
:mod:`pysyncer.model` and the slot count of :mod:`pysyncer._core` only: it must not import
the tests, pytest or the daemon's packages, and nothing here runs in a daemon.

Imports: _core, errors, model.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pysyncer._core import slots as core_slots
from pysyncer.errors import PysyncerError
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY

__all__ = [
    "DaemonProcess",
    "EtcdServer",
    "Logged",
    "NoFreePortError",
    "RegistryClient",
    "RegistryProcess",
    "eventually",
    "find_etcd",
    "free_port",
    "kill_process",
    "listens",
    "log_tail",
    "loopback_host",
    "ownership",
    "pause",
    "reap",
    "resume",
    "spawn",
    "split_evenly",
    "stop_all",
    "stop_process",
    "terminate",
]

SLOTS = core_slots.SLOT_COUNT


class NoFreePortError(PysyncerError, OSError):
    """No port free for both TCP and UDP was found on a host."""


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PICKED_PORT = 10_000  # free_port picks from here up to the kernel's ephemeral range
_picked: set[tuple[str, int]] = set()  # (host, port) handed out by free_port in this process


def _pickable_ports() -> range:
    """Ports below the kernel's ephemeral range (``ip_local_port_range``): an outgoing
    connection's source port and ``bind(0)`` come from that range, so neither takes one
    of these between :func:`free_port` picking it and a daemon binding it. Empty when the
    range is unknown or leaves too few below it."""
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(LOWEST_PICKED_PORT, low) if low - LOWEST_PICKED_PORT >= 1_000 else range(0)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        try:
            tcp.bind((host, port))
        except OSError:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` (gossip needs both), never handed out
    before by this process, picked at random below the kernel's ephemeral range where
    there is one (:func:`_pickable_ports`), else one the kernel picks."""
    pickable = _pickable_ports()
    for _ in range(200):
        if pickable:
            port = random.choice(pickable)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, 0))
                port = int(probe.getsockname()[1])
        if (host, port) not in _picked and _bindable(host, port):
            _picked.add((host, port))
            return port
    raise NoFreePortError(f"no free TCP+UDP port on {host}")


def loopback_host(index: int) -> str:
    """``127.0.0.<101+index>`` where the system routes all of 127/8 (Linux), else 127.0.0.1."""
    host = f"127.0.0.{101 + index}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return "127.0.0.1"
    return host


class Logged(Protocol):
    """A process whose log tail is shown when a wait times out."""

    @property
    def name(self) -> str: ...

    def tail(self) -> str: ...


def eventually(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *procs: Logged,
    interval: float = 0.2,
    error: type[Exception] = AssertionError,
) -> float:
    """Poll ``condition`` every ``interval`` s (errors count as false) until true; the
    seconds it took. ``error`` (with the procs' log tails) after ``timeout`` s."""
    start = time.monotonic()
    last_error: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last_error = exc
        time.sleep(interval)
    details = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    raise error(f"timed out after {timeout} s waiting for {what} ({last_error!r})\n{details}")


def _parent_death_prefix() -> list[str]:
    """On Linux, a command prefix so a child gets SIGTERM when its parent dies (even by
    SIGKILL): util-linux's ``setpriv --pdeathsig``, which sets it and execs the command
    (same pid). A prefix rather than a ``preexec_fn``: with one, CPython forks instead of
    vforking, and the fork handlers of a gRPC client in this process can hang the child
    before it execs. Empty where ``setpriv`` is missing."""
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


_DIE_WITH_PARENT = _parent_death_prefix()


def spawn(
    command: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pipe_stdout: bool = False,
    pipe_stdin: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with stdin closed, stdout and stderr appended to ``log_path``
    (``pipe_stdout``: stdout readable by the caller as ``process.stdout`` instead;
    ``pipe_stdin``: stdin writable by the caller as ``process.stdin``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*_DIE_WITH_PARENT, *command],
            stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
        )


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, by pid, if it still runs."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)


def kill_process(process: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """kill -9, by pid; waits at most ``wait`` s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


def reap(process: subprocess.Popen[bytes], grace: float, kill_wait: float = 5.0) -> int | None:
    """Wait up to ``grace`` s for it to exit, then SIGKILL; its exit status (None if even
    SIGKILL did not end it within ``kill_wait`` s)."""
    try:
        process.wait(timeout=max(grace, 0.0))
    except subprocess.TimeoutExpired:
        kill_process(process, kill_wait)
    return process.returncode


def stop_process(
    process: subprocess.Popen[bytes], grace: float = 10.0, kill_wait: float = 10.0
) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; by pid. Its exit status."""
    terminate(process)
    return reap(process, grace, kill_wait)


def pause(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped (Linux's /proc; where
    that cannot be read, the signal alone). The kernel wakes one thread to stop the others,
    so on a busy machine the rest run on for a while after :func:`os.kill` returns: an
    etcd "frozen" that way once answered a request sent after the signal."""
    os.kill(pid, signal.SIGSTOP)
    eventually(
        lambda: _all_threads_stopped(pid),
        timeout,
        f"every thread of process {pid} to stop after SIGSTOP",
        interval=0.001,
        error=TimeoutError,
    )


def _all_threads_stopped(pid: int) -> bool:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # no /proc to look at (or the process is gone)
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            return False
    return True


def resume(pid: int) -> None:
    """SIGCONT ``pid`` (after :func:`pause`)."""
    os.kill(pid, signal.SIGCONT)


def stop_all(processes: Iterable[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM every one at once, then reap them all within one ``grace`` (SIGKILL after)."""
    running = list(processes)
    for process in running:
        terminate(process)
    deadline = time.monotonic() + grace
    for process in running:
        reap(process, deadline - time.monotonic())


def listens(pid: int, host: str, port: int) -> bool | None:
    """Whether process ``pid`` holds the TCP socket listening on ``host:port`` (IPv4), read
    from Linux's /proc; None where /proc cannot tell. A health check answered on a port
    says nothing about who answered: this does."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    local = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    listening = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in table)
        if fields[1] == local and fields[3] == "0A"  # 0A: LISTEN
    }
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in listening:
                return True
    return False


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)``."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _is_copy(instance: dict[str, Any]) -> bool:
    return ORIGIN_DC_PROPERTY in (instance.get("properties") or {})


class RegistryClient:
    """A tiny Service-Center v4 REST client (project ``default``)."""

    def __init__(self, address: str) -> None:
        self.base = address if address.startswith("http") else f"http://{address}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}/v4/default{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_service(self, app: str, name: str, version: str = "1.0.0") -> str:
        service = {"appId": app, "serviceName": name, "version": version}
        answer = self.call("POST", "/registry/microservices", {"service": service})
        return str(answer["serviceId"])

    def register(
        self,
        sid: str,
        host: str,
        endpoints: list[str],
        *,
        instance_id: str | None = None,
        properties: dict[str, str] | None = None,
        interval: int = 30,
        times: int = 3,
    ) -> str:
        instance: dict[str, Any] = {
            "hostName": host,
            "endpoints": endpoints,
            "properties": properties or {},
            "healthCheck": {"mode": "push", "interval": interval, "times": times},
        }
        if instance_id is not None:
            instance["instanceId"] = instance_id
        path = f"/registry/microservices/{sid}/instances"
        return str(self.call("POST", path, {"instance": instance})["instanceId"])

    def set_status(self, sid: str, iid: str, status: str) -> None:
        path = f"/registry/microservices/{sid}/instances/{iid}/status?value={status}"
        self.call("PUT", path)

    def set_properties(self, sid: str, iid: str, properties: dict[str, str]) -> None:
        path = f"/registry/microservices/{sid}/instances/{iid}/properties"
        self.call("PUT", path, {"properties": properties})

    def unregister(self, sid: str, iid: str) -> None:
        self.call("DELETE", f"/registry/microservices/{sid}/instances/{iid}")

    def heartbeat(self, sid: str, iid: str) -> None:
        self.call("PUT", f"/registry/microservices/{sid}/instances/{iid}/heartbeat")

    def heartbeat_set(self, targets: list[dict[str, str]], timeout: float = 10) -> None:
        """One heartbeat for each ``{"serviceId": .., "instanceId": ..}``."""
        self.call("PUT", "/registry/heartbeats", {"Instances": targets}, timeout=timeout)

    def instances(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Every instance, each with ``_service`` = "app/name/version" and ``_sid``."""
        answer = self.call("GET", "/govern/microservices?options=instances", timeout=timeout)
        found = []
        for detail in answer.get("allServicesDetail") or []:
            service = detail["microService"]
            key = f"{service['appId']}/{service['serviceName']}/{service['version']}"
            for instance in detail.get("instances") or []:
                found.append({**instance, "_service": key, "_sid": service["serviceId"]})
        return found

    def originals(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if not _is_copy(i)]

    def copies(self, timeout: float = 10) -> list[dict[str, Any]]:
        return [i for i in self.instances(timeout) if _is_copy(i)]

    def copy_origins(self, timeout: float = 10) -> list[str]:
        """``origin dc/origin id`` of every copy (one entry per copy: duplicates repeat)."""
        return [
            f"{i['properties'][ORIGIN_DC_PROPERTY]}/{i['properties'][ORIGIN_ID_PROPERTY]}"
            for i in self.copies(timeout)
        ]


class RegistryProcess:
    """``python -m pysyncer registry --listen 127.0.0.1:P`` as a subprocess."""

    def __init__(
        self,
        workdir: Path,
        name: str = "registry",
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = workdir / f"{name}.log"
        self.client = RegistryClient(self.address)
        command = [sys.executable, "-m", "pysyncer", "registry", "--listen", self.address]
        self.process = spawn(command, self.log_path, cwd=cwd)

    def ready(self) -> bool:
        try:
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self, grace: float = 10.0, kill_wait: float = 10.0) -> None:
        stop_process(self.process, grace, kill_wait)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return self.log()[-4000:]


class DaemonProcess:
    """``pysyncer daemon`` on free loopback ports (gossip on ``host``).

    ``start`` again after a stop or kill restarts it: same node, ports, data dir, flags.
    """

    def __init__(
        self,
        name: str,
        host: str,
        workdir: Path,
        dc: str,
        *args: str,
        like: DaemonProcess | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.dc = dc
        self.args = args
        self.workdir = workdir
        self.cwd = cwd
        self.port: int = like.port if like else free_port(host)
        self.bind = f"{host}:{self.port}"
        self.admin: str = like.admin if like else f"127.0.0.1:{free_port()}"
        self.rpc: str = like.rpc if like else f"127.0.0.1:{free_port()}"
        self.registry: str = like.registry if like else f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "pysyncer", "daemon", "--node", self.name, "--dc", self.dc,
            "--bind", self.bind, "--admin-addr", self.admin, "--rpc-addr", self.rpc,
            "--registry-addr", self.registry, "--data-dir", str(self.workdir / self.name),
            *self.args,
        ]  # fmt: skip
        self.process = spawn(command, self.log_path, cwd=self.cwd)
        return self.process

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/v1/sync/status")
        return answer

    def ready(self) -> bool:
        """The admin API answers; RuntimeError (with the log tail) if the process exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.tail()}")
        self.status()
        return True

    def kill(self) -> None:
        """kill -9, by pid."""
        kill_process(self.process)

    def stop(self, grace: float = 20.0, kill_wait: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``grace`` s), by pid."""
        stop_process(self.process, grace, kill_wait)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        """Bytes in the log so far (an offset for :meth:`log_since`)."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """The log written after ``offset``."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def tail(self) -> str:
        return self.log()[-4000:]


class _HasStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


def ownership(daemon: _HasStatus) -> dict[str, Any]:
    """The ``ownership`` section of a daemon's sync status."""
    return dict(daemon.status()["ownership"])


def split_evenly(members: Sequence[_HasStatus], slots: int = SLOTS) -> bool:
    """Every slot owned, evenly, under one epoch, nothing pending, by ``members``."""
    views = [ownership(d) for d in members]
    owned = [v["slots_owned"] for v in views]
    return (
        len({v["epoch"] for v in views}) == 1
        and sum(owned) == slots
        and max(owned) - min(owned) <= 1
        and not any(v["slots_pending"] for v in views)
    )


def find_etcd() -> str | None:
    """Path of the etcd binary (Debian ``etcd-server``), or None."""
    return shutil.which("etcd") or shutil.which("etcd", path="/usr/bin:/usr/sbin:/bin:/sbin")


class EtcdServer:
    """One single-member etcd cluster on loopback, with free client and peer ports.

    Its data dir is a temporary directory (removed by :meth:`close`) unless given. It can
    be stopped and started again on the same ports and data (an outage).
    """

    name = "etcd"
    START_TIMEOUT = 15.0
    STOP_TIMEOUT = 5.0

    def __init__(self, binary: str, data_dir: Path | None = None) -> None:
        self.binary = binary
        self._own_dir = data_dir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="pysyncer-etcd-")) if data_dir is None else data_dir
        )
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart on the same ports and data) and wait until healthy."""
        if self.process is not None:
            raise RuntimeError("etcd is already running")
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            self.binary, "--name=pysyncer", f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=pysyncer={peer}", "--initial-cluster-state=new",
            "--heartbeat-interval=50", "--election-timeout=500", "--log-level=warn",
            "--logger=zap",
        ]  # fmt: skip
        self.process = spawn(command, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"etcd exited at start: {self.log_tail()}")
            if self.healthy():
                if listens(self.process.pid, "127.0.0.1", self.client_port) is not False:
                    return
                # Another process's etcd answers on this port: ours cannot bind it.
                self.stop()
                raise RuntimeError(
                    f"etcd: 127.0.0.1:{self.client_port} is another process's: {self.log_tail()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy within {timeout} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the process this object started (by its pid), bounded in time."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, self.STOP_TIMEOUT, self.STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def tail(self) -> str:
        return self.log_tail()

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
