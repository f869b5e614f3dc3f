"""The composition root of ``pysyncer daemon``: builds the pieces, runs them, shuts down.

A daemon is a member of the gossip pool (memberlist + Serf compatible), runs the sync
engine (registry adapter, store, exporter, importer, gRPC server and peers) and serves
the admin API. Shutdown on SIGTERM/SIGINT is graceful: leave the pool (so peers see
``left``, not ``failed``), stop the node, close the admin server.

Gossip encryption keys live in ``<data-dir>/keyring.json`` (Serf's keyring-file format:
a JSON list of base64 keys, primary first), which key rotation over the pool
(``pysyncer keys``, Serf's ``_serf_*-key`` queries) keeps up to date. See
:func:`load_keyring` for how it combines with ``--encrypt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer import __version__, _core
from pysyncer.admin.app import build_app
from pysyncer.admin.metrics import GossipCollector, SyncCollector
from pysyncer.config import DaemonConfig, HostPort, parse_host_port
from pysyncer.gossip.agent import GossipAgent
from pysyncer.gossip.clock import LoopClock
from pysyncer.gossip.keymanager import KeyManager, KeyQueryResponder, KeyResponse
from pysyncer.gossip.keyring import Keyring
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.node import GossipNode
from pysyncer.gossip.serf import MemberStatus, Serf
from pysyncer.gossip.snapshot import SerfSnapshot, Snapshotter
from pysyncer.gossip.timing import LAN
from pysyncer.sync.engine import SyncEngine

__all__ = [
    "KEYRING_FILE",
    "SYNC_PROTOCOL_VERSION",
    "Daemon",
    "ensure_data_dir",
    "load_keyring",
    "node_tags",
    "run_daemon",
]

log = logging.getLogger("pysyncer.daemon")

SYNC_PROTOCOL_VERSION = 1
DEFAULT_GOSSIP_PORT = 30190
JOIN_RETRY_INTERVAL = 30.0
_WILDCARDS = {"0.0.0.0", "::"}
KEYRING_FILE = "keyring.json"
SNAPSHOT_FILE = "serf.snapshot"


def node_tags(config: DaemonConfig) -> dict[str, str]:
    """The Serf tags a syncer advertises: its data center, gRPC address, protocol."""
    return {
        "role": "pysyncer",
        "dc": config.dc,
        "rpc_addr": str(config.rpc_addr),
        "sync_proto": str(SYNC_PROTOCOL_VERSION),
    }


def ensure_data_dir(path: Path) -> None:
    """Create the data directory (and parents) with mode 0700; warn if it is wider."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; make it exact
        log.info("created data directory %s (mode 0700)", path)
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "data directory %s has mode %04o: it holds the gossip keyring, use 0700", path, mode
        )


def load_keyring(data_dir: Path, key: bytes | None) -> tuple[Keyring | None, Path | None]:
    """The gossip keyring and its file, from ``<data-dir>/keyring.json`` and ``--encrypt``.

    * the file exists: its keys, primary first. ``--encrypt`` is then ignored, with a
      warning when its key is not in the file: rotations keep the file current, and a
      key rotated away from (perhaps because it leaked) must not come back on restart;
    * no file, ``--encrypt`` given: a keyring of that key, written to a new file;
    * neither: ``(None, None)``, encryption off.
    """
    path = data_dir / KEYRING_FILE
    if path.exists():
        keyring = Keyring.load(path)
        log.info("loaded %d gossip key(s) from %s", len(keyring), path)
        if key is not None and key not in keyring:
            log.warning(
                "ignoring --encrypt: its key is not in %s, which decides after a rotation "
                "(remove --encrypt, or install the key with 'pysyncer keys --install')",
                path,
            )
        return keyring, path
    if key is None:
        return None, None
    ensure_data_dir(data_dir)
    keyring = Keyring(key)
    keyring.save(path)
    log.info("created keyring file %s from --encrypt", path)
    return keyring, path


def _advertise_address(bind: HostPort, advertise: HostPort | None) -> tuple[str, int] | None:
    if advertise is not None:
        return advertise.host, advertise.port
    if bind.host not in _WILDCARDS:
        return None  # the bound address itself
    try:
        host = socket.gethostbyname(socket.gethostname())
    except OSError:
        host = "127.0.0.1"
    log.warning(
        "bound to %s: advertising %s to the pool; set --advertise if peers cannot reach it",
        bind.host,
        host,
    )
    return host, bind.port


class Daemon:
    """One running syncer process."""

    def __init__(self, config: DaemonConfig, *, with_sync: bool = True) -> None:
        self.config = config
        self.keyring, self.keyring_file = load_keyring(config.data_dir, config.encryption_key())
        self.serf: Serf | None = None
        self.key_manager: KeyManager | None = None
        self.agent = GossipAgent(
            config.node,
            self._make_serf,
            profile=LAN,
            keyring=self.keyring,
            label=config.gossip_label,
            protocol_version=config.gossip_protocol,
        )
        self.registry = CollectorRegistry()
        self.registry.register(GossipCollector(self._current_node))
        self.registry.register(SyncCollector(self._sync_status))
        self._runner: web.AppRunner | None = None
        self._join_task: asyncio.Task[None] | None = None
        self.snapshot: SerfSnapshot | None = None
        self.engine: SyncEngine | None = None
        self.with_sync = with_sync

    def _make_serf(self, clock: LoopClock[Hashable]) -> Serf:
        self.serf = Serf(self.config.node, node_tags(self.config), LAN, clock)
        KeyQueryResponder(self.serf, self._live_keyring, self.keyring_file).register()
        self.key_manager = KeyManager(self.serf, self._live_keyring)
        return self.serf

    def _live_keyring(self) -> Keyring | None:
        """The keyring the packet pipeline uses (one object, mutated in place)."""
        return self.keyring

    def _sync_status(self) -> Mapping[str, Any] | None:
        return self.engine.status() if self.engine is not None else None

    def _current_node(self) -> GossipNode | None:
        return self.agent._node

    @property
    def admin_address(self) -> tuple[str, int]:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    async def start(self) -> None:
        config = self.config
        log.info(
            "pysyncer %s starting: node %s, dc %s, core %s",
            __version__,
            config.node,
            config.dc,
            _core.IMPLEMENTATION,
        )
        if _core.EXTENSION_LOAD_ERROR is not None:
            log.warning(
                "compiled core not loaded, running the slower pure-Python twins: %s",
                _core.EXTENSION_LOAD_ERROR,
            )
        elif _core.NO_EXTENSIONS_REASON is not None:
            log.info("core: pure-Python twins (%s)", _core.NO_EXTENSIONS_REASON)
        advertise = _advertise_address(config.bind, config.advertise)
        await self.agent.start((config.bind.host, config.bind.port), advertise)
        assert self.serf is not None
        self.serf.attach(self.agent.node)
        rejoin = self._open_snapshot(self.serf)
        self.serf.start()
        host, port = self.agent.address
        log.info("gossip on %s:%d (UDP+TCP), encryption %s", host, port, self._encryption())
        if self.with_sync:
            self.engine = SyncEngine(
                config,
                self.serf,
                anti_entropy_interval=config.anti_entropy_interval,
                origin_grace=config.origin_grace,
                origin_policy=config.origin_policy,
            )
            await self.engine.start()
        await self._start_admin()
        if config.join or rejoin:
            self._join_task = asyncio.get_running_loop().create_task(self._join_loop(rejoin))

    def _open_snapshot(self, serf: Serf) -> list[tuple[str, int]]:
        """Resume clocks from the snapshot file; the members to rejoin."""
        ensure_data_dir(self.config.data_dir)
        path = self.config.data_dir / SNAPSHOT_FILE
        self.snapshot = SerfSnapshot(
            Snapshotter(
                path, lambda: (serf.member_clock.time, serf.event_clock.time, serf.query_clock.time)
            ),
            serf,
        )
        rejoin = self.snapshot.restore()
        state = self.snapshot.snapshotter.state
        log.info(
            "snapshot %s: clocks %d/%d/%d, %d member(s) to rejoin%s",
            path,
            state.clock,
            state.event_clock,
            state.query_clock,
            len(rejoin),
            " (last run left the pool: not rejoining)" if state.left else "",
        )
        self.snapshot.start()
        return rejoin

    def _encryption(self) -> str:
        if self.keyring is None:
            return "off"
        return f"on ({len(self.keyring)} key(s), keyring file {self.keyring_file})"

    async def _start_admin(self) -> None:
        backend = _Backend(self)
        app = build_app(backend, self.registry, keys=backend, sync=backend)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        address = self.config.admin_addr
        site = web.TCPSite(self._runner, address.host, address.port)
        await site.start()
        log.info("admin API on http://%s:%d", *self.admin_address)

    async def _join_loop(self, rejoin: Sequence[tuple[str, int]] = ()) -> None:
        """Join the configured members and the snapshot's; retry with backoff (1 s to 30 s)."""
        assert self.serf is not None
        addresses = [
            (a.host, a.port)
            for a in (parse_host_port(text, DEFAULT_GOSSIP_PORT) for text in self.config.join)
        ]
        addresses += [a for a in rejoin if a not in addresses]
        shown = ", ".join(f"{host}:{port}" for host, port in addresses)
        delay = 1.0
        while True:
            joined = await self.serf.join(await _resolve(addresses))
            if joined:
                log.info("joined the pool through %d of %d addresses", joined, len(addresses))
                return
            log.warning("could not join any of %s; retrying in %.0f s", shown, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, JOIN_RETRY_INTERVAL)

    async def stop(self) -> None:
        """Leave the pool gracefully, then stop everything."""
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._join_task
        if self.serf is not None and self.agent._node is not None:
            try:
                await self.serf.leave()
            except Exception as exc:  # a failed leave must not block the shutdown
                log.warning("leave did not complete: %s", exc)
            if self.snapshot is not None:
                self.snapshot.leave()
            await self.serf.stop()
        if self.engine is not None:
            await self.engine.stop()  # after the leave: peers have stopped streaming from us
        if self.snapshot is not None:
            self.snapshot.close()
        await self.agent.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("stopped")


async def _resolve(addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Host names to IP addresses (the wire carries raw IPs); unresolvable ones dropped."""
    loop = asyncio.get_running_loop()
    resolved = []
    for host, port in addresses:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            continue
        resolved.append((str(infos[0][4][0]), port))
    return resolved


class _Backend:
    """The admin API's view of the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def sync_status(self) -> Mapping[str, Any]:
        engine = self.daemon.engine
        if engine is None:
            return {"dc": self.daemon.config.dc, "state": "disabled", "remote": {}}
        return engine.status()

    def full_sync(self) -> Sequence[str]:
        engine = self.daemon.engine
        return engine.full_sync() if engine is not None else []

    @property
    def serf(self) -> Serf:
        assert self.daemon.serf is not None
        return self.daemon.serf

    def health(self) -> Mapping[str, Any]:
        node = self.daemon.agent._node
        score = node.health_score() if node is not None else 0
        return {
            "status": "ok" if score == 0 else "degraded",
            "node": self.daemon.config.node,
            "dc": self.daemon.config.dc,
            "version": __version__,
            "implementation": _core.IMPLEMENTATION,
            "health_score": score,
        }

    def members(self) -> Sequence[Mapping[str, Any]]:
        node = self.daemon.agent._node
        suspects = {
            name
            for name, state in (node.membership.node_map.items() if node else ())
            if state.status == NodeStatus.SUSPECT
        }
        return [
            {
                "name": m.name,
                "addr": m.addr,
                "port": m.port,
                "status": "suspect"
                if m.name in suspects
                else _STATUS_NAMES.get(m.status, m.status.value),
                "tags": dict(m.tags),
            }
            for m in sorted(self.serf.members(), key=lambda m: m.name)
        ]

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.serf.user_event(name, payload, coalesce)

    def recent_events(self) -> Sequence[Mapping[str, Any]]:
        return [
            {"name": e.name, "payload": e.payload.decode(errors="replace"), "ltime": e.ltime}
            for e in self.serf.recent_events()
        ]

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> Mapping[str, Any]:
        timeout = None if timeout_ms is None else timeout_ms / 1000
        result = await self.serf.query(name, payload, timeout=timeout, request_ack=True)
        return {
            "acks": sorted(result.acks),
            "responses": {
                node: value.decode(errors="replace")
                for node, value in sorted(result.responses.items())
            },
            "completed_early": result.completed_early,
        }

    async def key_operation(self, op: str, key: str | None) -> Mapping[str, Any]:
        manager = self.daemon.key_manager
        assert manager is not None
        response: KeyResponse
        if op == "list":
            response = await manager.list_keys()
        elif key is None:
            raise ValueError(f"'{op}' needs a key")
        elif op == "install":
            response = await manager.install_key(key)
        elif op == "use":
            response = await manager.use_key(key)
        elif op == "remove":
            response = await manager.remove_key(key)
        else:
            raise ValueError(f"unknown key operation '{op}'")
        return response.to_dict()


# The admin contract's statuses: alive, suspect, failed, left ("leaving" reads as alive).
_STATUS_NAMES = {
    MemberStatus.ALIVE: "alive",
    MemberStatus.LEAVING: "alive",
    MemberStatus.LEFT: "left",
    MemberStatus.FAILED: "failed",
}


async def run_daemon(config: DaemonConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await daemon.start()
        await stop.wait()
        log.info("signal received: leaving the pool")
    finally:
        await daemon.stop()
