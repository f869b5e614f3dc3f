"""The sync engine of one daemon: registry adapter, store, exporter, importer, RPC, peers.

Owns building these pieces in order, wiring them to the gossip layer (remote syncers
from Serf member tags, "new revision" user events), reporting their status, and
stopping them in reverse order. With no ``--sc-addr`` it also runs the embedded service
center on 127.0.0.1:30100, followed in-process through its native change feed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pysyncer.adapters import load_adapter
from pysyncer.adapters.base import Adapter
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.config import DaemonConfig, parse_host_port
from pysyncer.errors import PysyncerError
from pysyncer.gossip.lamport import UserEvent
from pysyncer.gossip.serf import EventType, MemberEvent, MemberStatus, Serf, SerfEvent
from pysyncer.model import is_copy
from pysyncer.servicecenter.app import RegistryServer
from pysyncer.rpc.client import SyncClient
from pysyncer.rpc.server import SyncServer
from pysyncer.store import create_store
from pysyncer.store.base import Coordinator, Store
from pysyncer.sync.exporter import Exporter
from pysyncer.sync.importer import Importer
from pysyncer.sync.ownership import SlotOwnership
from pysyncer.sync.peers import LAG_BUCKETS, Peers, RemoteSyncer

__all__ = ["REVISION_EVENT", "SyncEngine"]

log = logging.getLogger(__name__)

REVISION_EVENT = "pysyncer-rev"  # gossip user event: payload = the data center that moved
_MEMBERSHIP_SIGNALS = frozenset(
    {EventType.MEMBER_JOIN, EventType.MEMBER_FAILED, EventType.MEMBER_LEAVE}
)
ANNOUNCE_INTERVAL = 1.0  # at most one revision event per second per syncer
# The cyclic GC's youngest-generation threshold while the engine runs. The default (700)
# re-scans the young objects of every registry write; with 100,000 copies that was a
# third of a full sync's CPU (measured: 5.0 s -> 3.4 s in-process). Raised, never lowered.
GC_THRESHOLD0 = 10_000


class SyncEngine:
    """Everything that moves instances for one daemon."""

    def __init__(
        self,
        config: DaemonConfig,
        serf: Serf,
        *,
        anti_entropy_interval: float = 60.0,
        origin_grace: float = 3600.0,
        origin_policy: str = "expire",
    ) -> None:
        self.config = config
        self.serf = serf
        self.registry_server: RegistryServer | None = None
        self._anti_entropy_interval = anti_entropy_interval
        self._origin_grace = origin_grace
        self._origin_policy = origin_policy
        self.adapter: Adapter | None = None
        self.store: Store | None = None
        self.exporter: Exporter | None = None
        self.importer: Importer | None = None
        self.rpc: SyncServer | None = None
        self.peers: Peers | None = None
        self.ownership: SlotOwnership | None = None
        self._last_announce = 0.0
        self._unsubscribe: Callable[[], None] | None = None
        self.unused_rules: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        threshold0, *older = gc.get_threshold()
        gc.set_threshold(max(threshold0, GC_THRESHOLD0), *older)
        self.adapter = await self._start_adapter()
        self.store = create_store(config.store, config.data_dir, dc=config.dc, node=config.node)
        await self.store.open()
        filters = config.filters
        coordinator = self.store if isinstance(self.store, Coordinator) else None
        self.ownership = SlotOwnership(
            config.node,
            coordinator,
            info={"rpc_addr": str(config.rpc_addr)},
            member_ttl=config.member_ttl,
            playback=self._playback,
            release=self._release,
            on_leader=self._on_leader,
        )
        filtering = filters.has_rules or not filters.receives
        self.importer = Importer(
            config.dc,
            self.adapter,
            self.store,
            imports=filters.imports if filtering else None,
            imports_service=filters.imports_service if filtering else None,
            ownership=self.ownership if coordinator is not None else None,
        )
        await self.importer.start()
        self.exporter = self._new_exporter()
        if coordinator is None:
            await self.exporter.start()
        else:  # only the leader exports (started when it leads); peers skip the others
            self._advertise_exporter(False)
        self.rpc = SyncServer(self.exporter, config.rpc_addr.host, config.rpc_addr.port)
        await self.rpc.start()
        self.peers = Peers(
            config.dc,
            self.remote_syncers,
            self.importer,
            self.store,
            lambda target: SyncClient(target),
            anti_entropy_interval=self._anti_entropy_interval,
            origin_grace=self._origin_grace,
            origin_policy=self._origin_policy,
        )
        self.peers.start()
        await self.ownership.start()
        await self._report_unused_rules()
        self._unsubscribe = self.serf.subscribe(self._on_serf_event)
        log.info(
            "sync engine up: dc %s, registry %s (%s), store %s, RPC on %s",
            config.dc,
            ", ".join(config.sc_addr) or self._registry_url(),
            config.plugin if config.sc_addr else "embedded",
            config.store,
            self.rpc.address,
        )

    def _new_exporter(self) -> Exporter:
        config, filters = self.config, self.config.filters
        assert self.adapter is not None and self.store is not None and self.importer
        return Exporter(
            config.dc,
            config.node,
            self.adapter,
            self.store,
            copy_ids=self.importer.copy_ids,
            on_revision=self._announce,
            change_log_size=config.change_log_size,
            exports=filters.exports if filters.has_rules or not filters.sends else None,
        )

    # -- slot ownership (several syncers sharing an etcd store) ---------------------------

    async def _playback(self, slots: frozenset[int]) -> None:
        """Gained slots: adopt the previous owner's copies, renew them, repair from origins."""
        assert self.importer is not None
        adopted = await self.importer.adopt(slots)
        if self.peers is not None:
            self.peers.request_full_sync()  # digest repair of every origin, owned slots only
        log.info("playback of %d slot(s): %d copies adopted", len(slots), adopted)

    async def _release(self, slots: frozenset[int]) -> None:
        assert self.importer is not None
        released = await self.importer.release(slots)
        log.info("released %d slot(s) (%d copies) to other syncers", len(slots), released)

    async def _on_leader(self, leading: bool) -> None:
        """The leader exports this data center; the others serve no export."""
        if self.ownership is None or not self.ownership.coordinated:
            return
        old = self.exporter
        if old is not None:
            await old.close()
        exporter = self._new_exporter()
        if leading:
            await exporter.start()
        self.exporter = exporter
        if self.rpc is not None:
            self.rpc.source = exporter
            if not leading:  # end the streams remote peers follow here: they move on
                config = self.config
                await self.rpc.stop()
                self.rpc = SyncServer(exporter, config.rpc_addr.host, config.rpc_addr.port)
                await self.rpc.start()
        self._advertise_exporter(leading)
        log.info("%s exporting data center %s", "now" if leading else "no longer", self.config.dc)

    def _advertise_exporter(self, exporting: bool) -> None:
        tags = self.serf.tags
        tags["export"] = "1" if exporting else "0"
        with contextlib.suppress(Exception):
            self.serf.set_tags(tags)

    async def _start_adapter(self) -> Adapter:
        config = self.config
        if config.embedded_registry:
            listen = config.registry_addr
            self.registry_server = RegistryServer(host=listen.host, port=listen.port)
            await self.registry_server.start()
            adapter: Adapter = EmbeddedAdapter(self.registry_server.registry)
        else:
            adapter = load_adapter(config.plugin, list(config.sc_addr), config.adapter_settings)
        await adapter.start()
        return adapter

    async def _report_unused_rules(self) -> None:
        """Warn once at start about filter rules that match none of the local instances."""
        filters = self.config.filters
        if not filters.has_rules or self.adapter is None:
            return
        try:
            listing = await self.adapter.list_instances()
        except PysyncerError as exc:
            log.warning("filters: cannot list the registry to check the rules: %s", exc)
            return
        self.unused_rules = filters.unused_rules([i for i in listing if not is_copy(i)])
        for line in self.unused_rules:
            log.warning("filters: %s", line)

    def _registry_url(self) -> str:
        return self.registry_server.url if self.registry_server is not None else ""

    async def stop(self) -> None:
        """Stop in reverse order; the store is flushed and closed last."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for step in (
            self.ownership.close if self.ownership else None,
            self.peers.close if self.peers else None,
            self.rpc.stop if self.rpc else None,
            self.exporter.close if self.exporter else None,
            self.importer.close if self.importer else None,
            self.adapter.close if self.adapter else None,
            self.store.close if self.store else None,
            self.registry_server.close if self.registry_server else None,
        ):
            if step is None:
                continue
            try:
                await step()
            except Exception:
                log.exception("error while stopping the sync engine")

    # -- gossip wiring -------------------------------------------------------------------

    def remote_syncers(self) -> list[RemoteSyncer]:
        """Live syncers of other data centers, from Serf tags."""
        found = []
        for member in self.serf.members():
            tags = member.tags
            if member.status != MemberStatus.ALIVE or tags.get("role") != "pysyncer":
                continue
            dc = tags.get("dc", "")
            if not dc or dc == self.config.dc or "rpc_addr" not in tags:
                continue
            if tags.get("export") == "0":  # a follower of a scaled-out data center
                continue
            try:
                rpc = parse_host_port(tags["rpc_addr"])
            except ValueError:
                continue
            host = rpc.host
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host).is_unspecified:
                    host = member.addr  # bound to a wildcard: reach it where it gossips
            target = f"[{host}]:{rpc.port}" if ":" in host else f"{host}:{rpc.port}"
            found.append(RemoteSyncer(member.name, dc, target))
        return found

    def _announce(self, revision: int) -> None:
        now = time.monotonic()
        if now - self._last_announce < ANNOUNCE_INTERVAL:
            return
        self._last_announce = now
        with contextlib.suppress(Exception):
            self.serf.user_event(REVISION_EVENT, self.config.dc.encode(), coalesce=True)

    def _on_serf_event(self, event: SerfEvent) -> None:
        if isinstance(event, UserEvent) and event.name == REVISION_EVENT and self.peers:
            self.peers.wake(event.payload.decode(errors="replace"))
        elif (
            isinstance(event, MemberEvent)
            and event.type in _MEMBERSHIP_SIGNALS
            and event.member.tags.get("dc") == self.config.dc
            and self.ownership is not None
            and self.ownership.coordinated
        ):
            # Gossip is the fast signal that a syncer of this data center came or went;
            # the store's leases decide: re-read them now rather than at the next tick.
            self.ownership.nudge()

    # -- status ------------------------------------------------------------------------

    def _store_health(self) -> dict[str, Any]:
        """The shared store's health (etcd: ``degraded`` while writes queue); else ok."""
        health = getattr(self.store, "health", None)
        return dataclasses.asdict(health()) if health is not None else {"status": "ok"}

    def full_sync(self) -> list[str]:
        return self.peers.request_full_sync() if self.peers else []

    def status(self) -> Mapping[str, Any]:
        exporter, importer, peers = self.exporter, self.importer, self.peers
        copies = importer.copies_by_origin() if importer else {}
        remote: dict[str, Any] = {}
        for dc, link in sorted((peers.links if peers else {}).items()):
            st = link.status
            remote[dc] = {
                "state": st.state,
                "syncer": st.syncer,
                "applied_revision": st.applied_revision,
                "remote_revision": st.remote_revision,
                "lag": st.lag,
                "copies": copies.get(dc, 0),
                "repairs": st.repairs,
                "slots_pulled": st.slots_pulled,
                "errors": dict(st.errors),
                "last_applied_at": st.last_applied_at,
                "propagation": {
                    "buckets": dict(zip(map(str, LAG_BUCKETS), st.lag_buckets, strict=True)),
                    "sum": st.lag_sum,
                    "count": st.lag_count,
                },
            }
        for dc, count in copies.items():
            remote.setdefault(dc, {"state": "gone", "copies": count})
        return {
            "dc": self.config.dc,
            "node": self.config.node,
            "revision": exporter.revision() if exporter else 0,
            "epoch": exporter.epoch if exporter else "",
            "exported": exporter.exported_count() if exporter else 0,
            "registry": ", ".join(self.config.sc_addr) or self._registry_url(),
            "remote": remote,
            "exporter": vars(exporter.stats) if exporter else {},
            "importer": vars(importer.stats) if importer else {},
            "ownership": vars(self.ownership.stats) if self.ownership else {},
            "store": self._store_health(),
            "filters": {
                **self.config.filters.to_dict(),
                "unused_rules": list(self.unused_rules),
            },
        }
