"""The lab's network: one namespace per data center behind a router namespace, and faults.

Owns the namespaces, veth pairs, addresses, routes and iptables rules the lab creates, and
the processes it starts inside them (each stopped by its pid). Layout, for data centers
numbered 1..N and a per-run base ``10.B``:

    root ns  10.B.250.1 --veth-- 10.B.250.2  router ns  10.B.i.1 --veth-- 10.B.i.0/24  dc i ns

The router forwards between data centers; its FORWARD chain holds the faults: partitions
(``LAB-PART``, one rule per blocked direction), loss (``LAB-LOSS``, iptables ``statistic``)
and, last, one NFQUEUE per directed link whose packets :mod:`lab.netem` delays. Traffic
from the root namespace (the runner reading registries and status pages) is not shaped.
Everything is removed by :meth:`Network.close`, which is safe to call twice.

Must not know what runs in the namespaces (that is :mod:`lab.cluster`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LabError", "LabProcess", "Network", "lab_unavailable"]

IPTABLES = "iptables-legacy"  # NFQUEUE needs the xtables target; this kernel lacks nft queue
PARTITION_CHAIN = "LAB-PART"
LOSS_CHAIN = "LAB-LOSS"
MANAGEMENT = 250
REPO = Path(__file__).resolve().parents[1]  # ``python -m lab.netem`` runs from here


class LabError(RuntimeError):
    """A lab set-up step failed (namespace, link, rule or process)."""


def committed_tree(root: Path) -> Path:
    """``pysyncer/`` and ``lab/`` of the commit at HEAD, under ``root`` (made once per
    commit), with the working tree's compiled ``_core`` modules: the lab's processes run
    what is committed, not files other people are editing."""
    sha = run("git", "-C", str(REPO), "rev-parse", "HEAD").strip()
    tree = root / f"pysyncer-src-{sha[:12]}"
    if not (tree / "pysyncer").is_dir():
        staging = root / f".{tree.name}.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "pysyncer", "lab"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive.stdout, check=True,
                       timeout=60)  # fmt: skip
        for built in (REPO / "pysyncer" / "_core").glob("*.so"):
            shutil.copy2(built, staging / "pysyncer" / "_core" / built.name)
        staging.rename(tree)
    return tree


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, iptables)"
    for program in ("ip", IPTABLES):
        if shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{program} is not installed (apt-get install iproute2 iptables)"
    return None


def run(*command: str, check: bool = True) -> str:
    """Run a short command; its stdout. LabError (with stderr) when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return str(done.stdout)


@dataclass
class LabProcess:
    """A process started inside a namespace; stopped, paused or killed by its pid."""

    name: str
    namespace: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    cwd: Path = REPO  # where ``python -m pysyncer`` / ``-m lab.x`` import from

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *self.command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
            )
        self.paused = False

    @property
    def pid(self) -> int:
        if self.process is None:
            raise LabError(f"{self.name} was never started")
        return int(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """kill -9 and reap (a paused process dies too)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(timeout=10)
        self.paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        """SIGCONT + SIGTERM, SIGKILL after ``grace`` s."""
        if not self.alive():
            return
        assert self.process is not None
        self.resume()
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


@dataclass
class Network:
    """The namespaces and links of one lab run (see the module docstring)."""

    workdir: Path
    dcs: int
    tag: str = field(default_factory=lambda: f"psl{os.getpid() % 100000}")
    base: int = 0
    namespaces: list[str] = field(default_factory=list)
    processes: list[LabProcess] = field(default_factory=list)
    source: Path = REPO  # the tree the lab's processes import pysyncer and lab from
    blocked: set[tuple[int, int]] = field(default_factory=set)
    loss: dict[tuple[int, int], float] = field(default_factory=dict)
    _root_link: str = ""

    # -- names and addresses ---------------------------------------------------------

    @property
    def router(self) -> str:
        return f"{self.tag}-router"

    def namespace(self, dc: int) -> str:
        return f"{self.tag}-dc{dc}"

    def subnet(self, dc: int) -> str:
        return f"10.{self.base}.{dc}.0/24"

    def address(self, dc: int, host: int) -> str:
        return f"10.{self.base}.{dc}.{host}"

    def queue(self, src: int, dst: int) -> int:
        return src * 100 + dst

    # -- set-up and tear-down --------------------------------------------------------

    def _pick_base(self) -> int:
        routes = run("ip", "-4", "route", "show") + run("ip", "-4", "addr", "show")
        start = 100 + os.getpid() % 100
        for base in [*range(start, 200), *range(100, start)]:
            if f"10.{base}." not in routes:
                return int(base)
        raise LabError("no free 10.x.0.0/16 range for the lab")

    def open(self) -> None:
        self.base = self._pick_base()
        self._add_namespace(self.router)
        self._sysctl(self.router, "net.ipv4.ip_forward", "1")
        for dc in range(1, self.dcs + 1):
            ns = self.namespace(dc)
            self._add_namespace(ns)
            self._veth(f"{self.tag}d{dc}", ns, "eth0", self.router, f"dc{dc}")
            run(
                "ip",
                "-n",
                self.router,
                "addr",
                "add",
                f"{self.address(dc, 1)}/24",
                "dev",
                f"dc{dc}",
            )
            run("ip", "-n", ns, "addr", "add", f"{self.address(dc, 2)}/24", "dev", "eth0")
            run("ip", "-n", ns, "route", "add", "default", "via", self.address(dc, 1))
        # the runner's way in (root namespace), never shaped or partitioned
        self._root_link = f"{self.tag}m"
        run("ip", "link", "add", self._root_link, "type", "veth", "peer", "name", f"{self.tag}r")
        run("ip", "link", "set", f"{self.tag}r", "netns", self.router)
        run("ip", "-n", self.router, "link", "set", f"{self.tag}r", "name", "mgmt")
        run("ip", "addr", "add", f"{self.address(MANAGEMENT, 1)}/24", "dev", self._root_link)
        run("ip", "link", "set", self._root_link, "up")
        run(
            "ip",
            "-n",
            self.router,
            "addr",
            "add",
            f"{self.address(MANAGEMENT, 2)}/24",
            "dev",
            "mgmt",
        )
        run("ip", "-n", self.router, "link", "set", "mgmt", "up")
        run("ip", "route", "add", f"10.{self.base}.0.0/16", "via", self.address(MANAGEMENT, 2))
        for chain in (PARTITION_CHAIN, LOSS_CHAIN):
            self.iptables("-N", chain)
            self.iptables("-A", "FORWARD", "-j", chain)

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")

    def _veth(self, name: str, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        run("ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
        for end, ns, final in ((f"{name}a", ns_a, name_a), (f"{name}b", ns_b, name_b)):
            run("ip", "link", "set", end, "netns", ns)
            run("ip", "-n", ns, "link", "set", end, "name", final)
            run("ip", "-n", ns, "link", "set", final, "up")

    def add_address(self, dc: int, host: int) -> str:
        """One more host address in data center ``dc``."""
        address = self.address(dc, host)
        run("ip", "-n", self.namespace(dc), "addr", "add", f"{address}/24", "dev", "eth0")
        return address

    def close(self) -> None:
        """Stop every process (by pid), then remove the routes and namespaces."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop(grace=3.0)
        if self._root_link:
            run("ip", "route", "del", f"10.{self.base}.0.0/16", check=False)
            run("ip", "link", "del", self._root_link, check=False)
            self._root_link = ""
        for name in reversed(self.namespaces):
            for pid in run("ip", "netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)  # only processes inside our namespace
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()

    # -- processes ---------------------------------------------------------------------

    def spawn(self, name: str, ns: str, command: Sequence[str]) -> LabProcess:
        process = LabProcess(name, ns, list(command), self.workdir / f"{name}.log",
                             cwd=self.source)  # fmt: skip
        process.start()
        self.processes.append(process)
        return process

    def start_delays(self, links: dict[tuple[int, int], tuple[float, float]], seed: int) -> None:
        """NFQUEUE rules for every directed link and the delayer serving them."""
        specs = []
        for (src, dst), (delay, jitter) in sorted(links.items()):
            queue = self.queue(src, dst)
            self.iptables(
                "-A", "FORWARD", "-s", self.subnet(src), "-d", self.subnet(dst),
                "-j", "NFQUEUE", "--queue-num", str(queue),
            )  # fmt: skip
            specs += ["--queue", f"{queue}:{delay:.1f}:{jitter:.1f}"]
        delayer = self.spawn("netem", self.router, [sys.executable, "-m", "lab.netem", *specs,
                                                    "--seed", str(seed)])  # fmt: skip
        deadline = time.monotonic() + 15
        while "delaying queues" not in delayer.tail():
            if not delayer.alive() or time.monotonic() > deadline:
                raise LabError(f"the delayer did not start: {delayer.tail()}")
            time.sleep(0.1)

    # -- faults ------------------------------------------------------------------------

    def iptables(self, *args: str) -> None:
        run("ip", "netns", "exec", self.router, IPTABLES, "-w", *args)

    def partition(self, src: int, dst: int) -> None:
        """Drop everything from data center ``src`` to ``dst`` (one way)."""
        if (src, dst) in self.blocked:
            return
        self.iptables("-A", PARTITION_CHAIN, "-s", self.subnet(src), "-d", self.subnet(dst),
                      "-j", "DROP")  # fmt: skip
        self.blocked.add((src, dst))

    def heal(self, src: int, dst: int) -> None:
        if (src, dst) not in self.blocked:
            return
        self.iptables("-D", PARTITION_CHAIN, "-s", self.subnet(src), "-d", self.subnet(dst),
                      "-j", "DROP")  # fmt: skip
        self.blocked.discard((src, dst))

    def heal_all(self) -> None:
        for src, dst in sorted(self.blocked):
            self.heal(src, dst)

    def set_loss(self, src: int, dst: int, fraction: float) -> None:
        """Drop ``fraction`` (0..1) of the packets from ``src`` to ``dst`` at random."""
        old = self.loss.pop((src, dst), 0.0)
        rule = ["-s", self.subnet(src), "-d", self.subnet(dst), "-m", "statistic",
                "--mode", "random", "--probability"]  # fmt: skip
        if old > 0:
            self.iptables("-D", LOSS_CHAIN, *rule, f"{old:.4f}", "-j", "DROP")
        if fraction > 0:
            self.iptables("-A", LOSS_CHAIN, *rule, f"{fraction:.4f}", "-j", "DROP")
            self.loss[(src, dst)] = fraction
