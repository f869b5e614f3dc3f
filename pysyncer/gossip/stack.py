"""One syncer's gossip side assembled: keyring, agent (sockets + node), Serf, keys, snapshot.

Owns building these pieces in order from :class:`~pysyncer.gossip.settings.GossipSettings`,
the keyring and snapshot files in the data directory, joining the pool (configured members
and the snapshot's, retried with backoff), and a graceful leave. Its public API is what
the daemon and the admin API use; nothing outside gossip reaches into the agent or node.
Must not import the configuration, the daemon, the sync layer or the admin API.

Gossip encryption keys live in ``<data-dir>/keyring.json`` (Serf's keyring-file format:
a JSON list of base64 keys, primary first), which key rotation over the pool
(``pysyncer keys``, Serf's ``_serf_*-key`` queries) keeps up to date. See
:func:`load_keyring` for how it combines with ``--encrypt``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from pysyncer.gossip.agent import GossipAgent
from pysyncer.gossip.clock import LoopClock
from pysyncer.gossip.keymanager import KeyManager, KeyQueryResponder
from pysyncer.gossip.keyring import Keyring
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.node import Address, GossipNode
from pysyncer.gossip.serf import Member, Serf
from pysyncer.gossip.settings import GossipSettings
from pysyncer.gossip.snapshot import SerfSnapshot, Snapshotter
from pysyncer.gossip.timing import GossipProfile, profile_named
from pysyncer.gossip.vivaldi import Coordinate
from pysyncer.hostport import LOOPBACK, HostPort, format_host_port
from pysyncer.supervisor import Supervised, spawn, tolerate

__all__ = ["KEYRING_FILE", "SNAPSHOT_FILE", "GossipStack", "ensure_data_dir", "load_keyring"]

log = logging.getLogger(__name__)

KEYRING_FILE = "keyring.json"
SNAPSHOT_FILE = "serf.snapshot"
JOIN_RETRY_MAX = 30.0  # seconds: the join backoff doubles from 1 s up to this
_WILDCARDS = frozenset({"0.0.0.0", "::"})


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


def _advertise_address(bind: HostPort, advertise: HostPort | None) -> Address | None:
    if advertise is not None:
        return advertise.host, advertise.port
    if bind.host not in _WILDCARDS:
        return None  # the bound address itself
    try:
        host = socket.gethostbyname(socket.gethostname())
    except OSError:
        host = LOOPBACK
    log.warning(
        "bound to %s: advertising %s to the pool; set --advertise if peers cannot reach it",
        bind.host,
        host,
    )
    return host, bind.port


async def _resolve(addresses: Sequence[Address]) -> list[Address]:
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


class GossipStack:
    """The pool membership of one syncer, advertising ``tags``.

    Built stopped: :meth:`start` binds and restores the snapshot, :meth:`join` starts
    joining the pool; :meth:`leave` leaves it gracefully (peers see ``left``) and
    :meth:`stop` closes the rest. ``serf`` and ``key_manager`` exist once started.
    """

    def __init__(
        self,
        settings: GossipSettings,
        tags: Mapping[str, str],
        profile: GossipProfile | None = None,
    ) -> None:
        self.settings = settings
        self.profile = profile or profile_named(settings.profile)
        self._tags = dict(tags)
        self.keyring, self.keyring_file = load_keyring(settings.data_dir, settings.encryption_key)
        self._serf: Serf | None = None
        self._key_manager: KeyManager | None = None
        self._snapshot: SerfSnapshot | None = None
        self._join_task: Supervised | None = None
        self._rejoin: list[Address] = []
        self._left = False
        self._agent = GossipAgent(
            settings.node,
            self._make_serf,
            profile=self.profile,
            keyring=self.keyring,
            label=settings.label,
            protocol_version=settings.protocol_version,
        )

    def _make_serf(self, clock: LoopClock[Hashable]) -> Serf:
        serf = Serf(self.settings.node, self._tags, self.profile, clock)
        KeyQueryResponder(serf, self._live_keyring, self.keyring_file).register()
        self._key_manager = KeyManager(serf, self._live_keyring)
        self._serf = serf
        return serf

    def _live_keyring(self) -> Keyring | None:
        """The keyring the packet pipeline uses (one object, mutated in place)."""
        return self.keyring

    # -- public API ----------------------------------------------------------------------

    @property
    def serf(self) -> Serf:
        """The Serf layer: members, tags, user events, queries."""
        if self._serf is None:
            raise RuntimeError("the gossip stack is not started")
        return self._serf

    @property
    def key_manager(self) -> KeyManager:
        """Key rotation over the pool (install, use, remove, list)."""
        if self._key_manager is None:
            raise RuntimeError("the gossip stack is not started")
        return self._key_manager

    @property
    def started(self) -> bool:
        return self._agent.running_node is not None

    @property
    def address(self) -> Address:
        """Where the sockets are bound (the real port when bound to port 0)."""
        return self._agent.address

    def current_node(self) -> GossipNode | None:
        """The memberlist node while running (metrics read its counters), else None."""
        return self._agent.running_node

    def members(self) -> list[Member]:
        return self.serf.members() if self._serf is not None else []

    def coordinates(self) -> dict[str, Coordinate]:
        """Our Vivaldi coordinate and the last one of each member we probed, by name."""
        if self._serf is None:
            return {}
        coordinates = self._serf.coordinates
        known = {m.name for m in self._serf.members()} | {self.settings.node}
        return {name: c for name in known if (c := coordinates.cached(name)) is not None}

    def health_score(self) -> int:
        """memberlist's awareness score: 0 is healthy, higher means this node lags."""
        node = self._agent.running_node
        return node.health_score() if node is not None else 0

    def suspects(self) -> set[str]:
        """Names of the members memberlist currently suspects (Serf still says alive)."""
        node = self._agent.running_node
        if node is None:
            return set()
        return {
            name
            for name, state in node.membership.node_map.items()
            if state.status == NodeStatus.SUSPECT
        }

    def encryption_summary(self) -> str:
        if self.keyring is None:
            return "off"
        return f"on ({len(self.keyring)} key(s), keyring file {self.keyring_file})"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, start probing and resume from the snapshot; :meth:`join` joins the pool."""
        settings = self.settings
        advertise = _advertise_address(settings.bind, settings.advertise)
        await self._agent.start((settings.bind.host, settings.bind.port), advertise)
        serf = self.serf
        serf.attach(self._agent.node)
        self._rejoin = self._open_snapshot(serf)
        serf.start()
        host, port = self.address
        log.info(
            "gossip on %s (UDP+TCP), encryption %s",
            format_host_port(host, port),
            self.encryption_summary(),
        )

    def join(self) -> None:
        """Join the configured members and the snapshot's in the background, with backoff.

        Called once what the tags advertise is ready (the sync engine's gRPC server):
        the members that learn of this one may use it at once.
        """
        if (self.settings.join or self._rejoin) and self._join_task is None:
            rejoin = self._rejoin
            self._join_task = spawn("gossip-join", lambda: self._join_loop(rejoin), critical=False)

    def _open_snapshot(self, serf: Serf) -> list[Address]:
        """Resume clocks from the snapshot file; the members to rejoin."""
        ensure_data_dir(self.settings.data_dir)
        path = self.settings.data_dir / SNAPSHOT_FILE
        self._snapshot = SerfSnapshot(
            Snapshotter(
                path, lambda: (serf.member_clock.time, serf.event_clock.time, serf.query_clock.time)
            ),
            serf,
        )
        rejoin = self._snapshot.restore()
        state = self._snapshot.snapshotter.state
        log.info(
            "snapshot %s: clocks %d/%d/%d, %d member(s) to rejoin%s",
            path,
            state.clock,
            state.event_clock,
            state.query_clock,
            len(rejoin),
            " (last run left the pool: not rejoining)" if state.left else "",
        )
        self._snapshot.start()
        return rejoin

    async def _join_loop(self, rejoin: Sequence[Address] = ()) -> None:
        """Join the configured members and the snapshot's; retry with backoff (1 s to 30 s).

        The first failure is logged, not every retry: one line when joining fails, one when
        it succeeds.
        """
        addresses: list[Address] = [(a.host, a.port) for a in self.settings.join]
        addresses += [a for a in rejoin if a not in addresses]
        shown = ", ".join(format_host_port(host, port) for host, port in addresses)
        delay = 1.0
        attempts = 0
        while True:
            attempts += 1
            joined = await self.serf.join(await _resolve(addresses))
            if joined:
                log.info(
                    "joined the pool through %d of %d addresses (attempt %d)",
                    joined,
                    len(addresses),
                    attempts,
                )
                return
            if attempts == 1:
                log.warning(
                    "could not join any of %s; retrying with backoff up to %.0f s",
                    shown,
                    JOIN_RETRY_MAX,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, JOIN_RETRY_MAX)

    async def leave(self) -> None:
        """Stop joining, leave the pool gracefully and stop Serf (a no-op when not started)."""
        await self._stop_joining()
        if self._serf is None or not self.started or self._left:
            return
        self._left = True
        try:
            await self._serf.leave()
        except Exception as exc:  # a failed leave must not block the shutdown
            tolerate("gossip-leave", exc)
        if self._snapshot is not None:
            self._snapshot.leave()
        await self._serf.stop()

    def force_leave(self, node: str, prune: bool = False) -> None:
        """Serf's force-leave: mark a (failed) member ``left`` pool-wide, ``prune`` erases
        it at once. ValueError when ``node`` is this member or not one the pool knows."""
        if node == self.settings.node:
            raise ValueError(f"{node!r} is this member: use leave")
        if self.serf.member(node) is None:
            raise ValueError(f"no member named {node!r}")
        self.serf.force_leave(node, prune)
        log.info("force-leave of %s%s", node, " (pruned)" if prune else "")

    async def _stop_joining(self) -> None:
        if self._join_task is not None:
            await self._join_task.stop()
            self._join_task = None

    async def stop(self) -> None:
        """Close the snapshot file and the sockets (after :meth:`leave`)."""
        await self._stop_joining()
        if self._snapshot is not None:
            self._snapshot.close()
        await self._agent.stop()
