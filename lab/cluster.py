"""What runs in the lab: per data center a registry, its syncers, maybe etcd and a proxy.

Owns the data-center layout (addresses, ports, flags) and the start, restart, kill,
pause and read-out of those processes, on top of :mod:`lab.net`'s namespaces. Data center
``i`` (1-based) lives in namespace ``dc<i>`` of subnet ``10.B.i.0/24``: its registry
(``pysyncer registry``) on ``.5``, an optional fault proxy on ``.6`` (its syncers then
reach the registry through it), syncers on ``.10``, ``.11``, ... and, for a data center
with several syncers, a 3-member etcd cluster on ``.21-.23``. Applications (the churn
driver) talk to the registry directly. Must not decide faults or check invariants.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from lab.net import LabError, LabProcess, Network
from lab.rest import RegistryClient

__all__ = ["DataCenter", "DcSpec", "Lab", "Syncer", "Timing"]

REGISTRY_HOST = 5
PROXY_HOST = 6
SYNCER_HOST = 10
ETCD_HOST = 21
REGISTRY_PORT = 30100
GOSSIP_PORT = 7946
RPC_PORT = 30191
ADMIN_PORT = 30300
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


@dataclass(frozen=True)
class Timing:
    """Intervals of one run; the soak mode shortens them all."""

    instance_interval: int = 5  # the applications' heartbeat interval (s)
    instance_times: int = 2  # TTL = interval x (times + 1)
    member_ttl: int = 3
    anti_entropy: int = 20
    origin_grace: int = 60
    origin_policy: str = "expire"

    @property
    def instance_ttl(self) -> int:
        return self.instance_interval * (self.instance_times + 1)


@dataclass(frozen=True)
class DcSpec:
    """One data center: how many syncers, an etcd cluster, a proxy, filter config."""

    name: str
    syncers: int = 1
    etcd: bool = False
    proxy: bool = False
    config: str = ""  # TOML (filters, direction)


@dataclass
class Syncer:
    name: str
    address: str
    process: LabProcess
    token: str = ""  # the admin API token (a non-loopback admin address needs one)

    @property
    def admin(self) -> str:
        return f"http://{self.address}:{ADMIN_PORT}"

    @property
    def gossip(self) -> str:
        return f"{self.address}:{GOSSIP_PORT}"

    def get(self, path: str, timeout: float = 3.0) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(f"{self.admin}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get("/v1/sync/status")
        return status

    def ready(self) -> bool:
        try:
            self.status()
        except (OSError, ValueError):
            return False
        return self.process.alive()


@dataclass
class DataCenter:
    index: int
    spec: DcSpec
    registry_address: str
    registry: LabProcess
    client: RegistryClient
    syncers: list[Syncer] = field(default_factory=list)
    etcd: list[LabProcess] = field(default_factory=list)
    etcd_addresses: list[str] = field(default_factory=list)
    proxy: LabProcess | None = None
    proxy_address: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def registry_ready(self) -> bool:
        try:
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return True

    def set_proxy_fault(self, delay: float, error_rate: float) -> None:
        body = json.dumps({"delay": delay, "error_rate": error_rate}).encode()
        request = urllib.request.Request(
            f"http://{self.proxy_address}/_lab/fault", data=body, method="PUT"
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()

    def etcd_leader(self) -> int | None:
        """Index in :attr:`etcd` of the current leader, or None."""
        for n, address in enumerate(self.etcd_addresses):
            if not self.etcd[n].alive() or self.etcd[n].paused:
                continue
            request = urllib.request.Request(
                f"http://{address}:{ETCD_CLIENT_PORT}/v3/maintenance/status", data=b"{}",
                method="POST",
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    status = json.loads(answer.read())
            except (OSError, ValueError):
                continue
            if status.get("leader") and status["leader"] == status["header"].get("member_id"):
                return n
        return None


def wait(condition: Any, timeout: float, what: str, *procs: LabProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


class Lab:
    """The data centers of one run on one :class:`~lab.net.Network`."""

    def __init__(
        self, network: Network, specs: list[DcSpec], timing: Timing, python: str = sys.executable
    ) -> None:
        self.network = network
        self.specs = specs
        self.timing = timing
        self.python = python
        self.dcs: list[DataCenter] = []
        self.workdir = network.workdir
        self.token = secrets.token_hex(16)
        self.token_file = self.workdir / "admin-token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)

    # -- start-up -------------------------------------------------------------------

    def start(self) -> None:
        for index, spec in enumerate(self.specs, start=1):
            self.dcs.append(self._start_dc(index, spec))
        for dc in self.dcs:
            wait(dc.registry_ready, 30, f"registry of {dc.name}", dc.registry)
            if dc.etcd:
                wait(lambda dc=dc: dc.etcd_leader() is not None, 30, f"etcd of {dc.name}",
                     *dc.etcd)  # fmt: skip
        for dc in self.dcs:
            for syncer in dc.syncers:
                self._start_syncer(dc, syncer)
            first = dc.syncers[0]
            wait(first.ready, 60, f"{first.name} up", first.process)
        for dc in self.dcs:
            for syncer in dc.syncers:
                wait(syncer.ready, 60, f"{syncer.name} up", syncer.process)

    def _start_dc(self, index: int, spec: DcSpec) -> DataCenter:
        net = self.network
        ns = net.namespace(index)
        registry_address = net.add_address(index, REGISTRY_HOST)
        listen = f"{registry_address}:{REGISTRY_PORT}"
        command = [self.python, "-m", "pysyncer", "registry", "--listen", listen]
        registry = net.spawn(f"{spec.name}-registry", ns, command)
        dc = DataCenter(index, spec, listen, registry, RegistryClient(listen))
        if spec.proxy:
            proxy_address = net.add_address(index, PROXY_HOST)
            dc.proxy_address = f"{proxy_address}:{REGISTRY_PORT}"
            dc.proxy = net.spawn(f"{spec.name}-proxy", ns, [
                self.python, "-m", "lab.proxy", "--listen", dc.proxy_address,
                "--upstream", f"http://{listen}", "--seed", str(index),
            ])  # fmt: skip
        if spec.etcd:
            self._start_etcd(dc)
        for k in range(spec.syncers):
            address = net.add_address(index, SYNCER_HOST + k)
            process = LabProcess(f"{spec.name}-s{k + 1}", ns, [],
                                 self.workdir / f"{spec.name}-s{k + 1}.log",
                                 cwd=net.source)  # fmt: skip
            dc.syncers.append(Syncer(process.name, address, process, self.token))
        return dc

    def _start_etcd(self, dc: DataCenter) -> None:
        net = self.network
        names = [f"{dc.name}-e{n + 1}" for n in range(3)]
        dc.etcd_addresses = [net.add_address(dc.index, ETCD_HOST + n) for n in range(3)]
        cluster = ",".join(
            f"{name}=http://{address}:{ETCD_PEER_PORT}"
            for name, address in zip(names, dc.etcd_addresses, strict=True)
        )
        for name, address in zip(names, dc.etcd_addresses, strict=True):
            client = f"http://{address}:{ETCD_CLIENT_PORT}"
            peer = f"http://{address}:{ETCD_PEER_PORT}"
            process = LabProcess(name, net.namespace(dc.index), [
                "etcd", "--name", name, "--data-dir", str(self.workdir / name),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"{net.tag}-{dc.name}",
                "--log-level", "warn",
            ], self.workdir / f"{name}.log")  # fmt: skip
            process.start()
            net.processes.append(process)
            dc.etcd.append(process)

    def _syncer_command(self, dc: DataCenter, syncer: Syncer) -> list[str]:
        timing = self.timing
        registry = dc.proxy_address or dc.registry_address
        others = [s.gossip for d in self.dcs for s in d.syncers if s is not syncer]
        command = [
            self.python, "-m", "pysyncer", "daemon", "--node", syncer.name, "--dc", dc.name,
            "--bind", syncer.gossip, "--rpc-addr", f"{syncer.address}:{RPC_PORT}",
            "--admin-addr", f"{syncer.address}:{ADMIN_PORT}",
            "--admin-token-file", str(self.token_file),
            "--insecure",  # plain gossip and RPC: the lab's network is its own
            "--sc-addr", f"http://{registry}", "--data-dir", str(self.workdir / syncer.name),
            "--origin-grace", str(timing.origin_grace),
            "--origin-policy", timing.origin_policy,
            "--anti-entropy-interval", str(timing.anti_entropy),
            "--join", ",".join(others),
        ]  # fmt: skip
        if dc.etcd:
            endpoints = ",".join(f"{a}:{ETCD_CLIENT_PORT}" for a in dc.etcd_addresses)
            command += ["--store", f"etcd://{endpoints}", "--member-ttl", str(timing.member_ttl)]
        if dc.spec.config:
            path = self.workdir / f"{dc.name}.toml"
            path.write_text(dc.spec.config)
            command += ["--config", str(path)]
        return command

    def _start_syncer(self, dc: DataCenter, syncer: Syncer) -> None:
        syncer.process.command = self._syncer_command(dc, syncer)
        syncer.process.start()
        if syncer.process not in self.network.processes:
            self.network.processes.append(syncer.process)

    # -- faults on processes ----------------------------------------------------------

    def restart_syncer(self, dc: DataCenter, syncer: Syncer) -> None:
        syncer.process.kill()
        self._start_syncer(dc, syncer)

    def restart_registry_empty(self, dc: DataCenter) -> None:
        """kill -9 the registry and start it again on the same address, with no state."""
        dc.registry.kill()
        dc.registry.start()
        wait(dc.registry_ready, 30, f"registry of {dc.name} back", dc.registry)

    def restart_etcd(self, dc: DataCenter, member: int) -> None:
        process = dc.etcd[member]
        process.kill()
        process.start()  # its data dir is kept: it rejoins as the same member

    def syncer_by_name(self, name: str) -> tuple[DataCenter, Syncer]:
        for dc in self.dcs:
            for syncer in dc.syncers:
                if syncer.name == name:
                    return dc, syncer
        raise KeyError(name)

    def live_syncers(self, dc: DataCenter) -> list[Syncer]:
        return [s for s in dc.syncers if s.process.alive() and not s.process.paused]
