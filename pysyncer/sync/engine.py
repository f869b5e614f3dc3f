"""The sync engine of one daemon: registry adapter, store, exporter, importer, RPC, peers.

Owns building these pieces in order from :class:`~pysyncer.sync.settings.SyncSettings`,
wiring them to the pool through the small :class:`~pysyncer.sync.membership.Membership`
protocol (remote syncers found by :mod:`pysyncer.sync.discovery`, "new revision" user
events, the ``export`` tag), reporting their
status, and stopping them in reverse order. With no registry URL it follows the
registry the daemon runs in process (a :class:`LocalRegistry`: the embedded service
center, which the daemon starts and stops). Must not import the configuration, the
daemon, the Serf class or the service center.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from pysyncer.adapters import load_adapter
from pysyncer.adapters.base import Adapter
from pysyncer.admin.payloads import DiffAnswer, DryRunAnswer, SyncStatus
from pysyncer.errors import ConfigError, PysyncerError
from pysyncer.gossip.lamport import UserEvent
from pysyncer.gossip.serf import EventType, MemberEvent, SerfEvent
from pysyncer.model import Instance, Record, is_copy
from pysyncer.redact import redact
from pysyncer.rpc.listing import Listing, listed_limit
from pysyncer.rpc.server import SyncServer
from pysyncer.rpc.tls import TlsFiles
from pysyncer.store import create_store
from pysyncer.store.base import Coordinator, Store, StoreHealth
from pysyncer.supervisor import tolerate
from pysyncer.sync import diff as sync_diff
from pysyncer.sync import tags as sync_tags
from pysyncer.sync.discovery import SyncerDiscovery
from pysyncer.sync.dryrun import dry_run
from pysyncer.sync.exporter import Exporter, ExporterStats
from pysyncer.sync.importer import Importer, ImporterStats
from pysyncer.sync.membership import Membership
from pysyncer.sync.ownership import OwnershipStats, SlotOwnership
from pysyncer.sync.peers import RemoteSyncer
from pysyncer.sync.peerset import Peers
from pysyncer.sync.settings import SyncSettings
from pysyncer.sync.status import (
    exporter_status,
    filters_status,
    importer_status,
    ownership_status,
    remote_links,
    store_status,
)
from pysyncer.sync.writebudget import WriteBudget, catching_up

__all__ = ["REVISION_EVENT", "LocalRegistry", "SyncEngine"]

log = logging.getLogger(__name__)

REVISION_EVENT = "pysyncer-rev"  # gossip user event: payload = the data center that moved
_MEMBERSHIP_SIGNALS = frozenset(
    {EventType.MEMBER_JOIN, EventType.MEMBER_FAILED, EventType.MEMBER_LEAVE}
)
_REMOTE_SIGNALS = frozenset({EventType.MEMBER_JOIN, EventType.MEMBER_UPDATE})
ANNOUNCE_INTERVAL = 1.0  # at most one revision event per second per syncer
# The cyclic GC's youngest-generation threshold while the engine runs. The default (700)
# re-scans the young objects of every registry write; with 100,000 copies that was a
# third of a full sync's CPU (measured: 5.0 s -> 3.4 s in-process). 40,000 rather than
# 10,000: the importer collects the young objects itself before each freeze (every 2,000
# copies), so fewer automatic collections scan them once more before it (1.7 % fewer
# instructions per copy of bench_import under cachegrind). Raised, never lowered.
GC_THRESHOLD0 = 40_000


class LocalRegistry(Protocol):
    """A registry running in this process (the daemon's embedded service center)."""

    @property
    def url(self) -> str:
        """Where it serves, for the status and the logs."""
        ...

    def adapter(self) -> Adapter:
        """A new adapter over it, started and closed by the engine."""
        ...


class SyncEngine:
    """Everything that moves instances for one daemon."""

    def __init__(
        self,
        settings: SyncSettings,
        membership: Membership,
        *,
        tls: TlsFiles | None = None,
        local_registry: LocalRegistry | None = None,
    ) -> None:
        if settings.registry.embedded and local_registry is None:
            raise ConfigError("sync engine: no registry URL and no registry in process")
        if not settings.registry.embedded and local_registry is not None:
            raise ConfigError("sync engine: both a registry URL and a registry in process")
        self.settings = settings
        self.tls = tls  # mutual TLS of the sync RPC, both ways (None: plaintext)
        self.membership = membership
        self.discovery = SyncerDiscovery(settings.dc, membership, tls)  # whom to follow
        self.local_registry = local_registry  # started and closed by the daemon
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
        self.started = False  # start() completed: registry adapter and store are up
        self._background: set[asyncio.Task[None]] = set()  # full syncs under way

    # -- lifecycle ---------------------------------------------------------------------

    async def listen(self) -> None:
        """Bind the sync RPC listener.

        It comes up before anything the engine depends on answers: until :meth:`start`
        has built the exporter, every sync call fails (:class:`_NotExporting`) and the
        ``export`` tag tells remote syncers not to follow this one yet.
        """
        config = self.settings
        if self.rpc is None:
            starting = _NotExporting(config.dc, config.node)
            self.rpc = SyncServer(
                starting, config.rpc_addr.host, config.rpc_addr.port, tls=self.tls
            )
            self.rpc.inspector = self
            await self.rpc.start()

    async def start(self) -> None:
        """Connect to the registry and the store and start syncing (binding first when
        :meth:`listen` was not called). On failure, what this attempt started is closed
        again, the listeners excepted, and the error is raised: call it again to retry."""
        await self.listen()
        try:
            await self._start_parts()
        except BaseException:
            await self._close_parts()
            raise
        self.started = True

    async def _start_parts(self) -> None:
        config = self.settings
        assert self.rpc is not None
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
            info={sync_tags.RPC_ADDR: str(config.rpc_addr)},
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
            budget=WriteBudget(
                config.import_rate_bootstrap,
                config.import_rate_steady,
                catching_up=self._catching_up,
            ),
        )
        await self.importer.start()
        self.exporter = self._new_exporter()
        if coordinator is None:
            await self.exporter.start()
            self._advertise_exporter(True)
        else:  # only the leader exports (started when it leads); peers skip the others
            self._advertise_exporter(False)
        self.rpc.source = self.exporter
        self.peers = Peers(
            config.dc,
            self.discovery.remote_syncers,
            self.importer,
            self.store,
            self.discovery.client,
            anti_entropy_interval=config.anti_entropy_interval,
            origin_grace=config.origin_grace,
            origin_policy=config.origin_policy,
            follows=filters.imports_dc if filtering else None,
        )
        self.peers.start()
        await self.ownership.start()
        await self._report_unused_rules()
        self._unsubscribe = self.membership.subscribe(self._on_pool_event)
        log.info(
            "sync engine up: dc %s, registry %s (%s), store %s, RPC on %s",
            config.dc,
            self._registry_url(),
            "embedded" if self.local_registry is not None else config.registry.kind,
            redact(str(config.store)),
            self.rpc.address,
        )

    def _new_exporter(self) -> Exporter:
        config, filters = self.settings, self.settings.filters
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
                config = self.settings
                await self.rpc.stop()
                self.rpc = SyncServer(
                    exporter, config.rpc_addr.host, config.rpc_addr.port, tls=self.tls
                )
                self.rpc.inspector = self
                await self.rpc.start()
        self._advertise_exporter(leading)
        log.info("%s exporting data center %s", "now" if leading else "no longer", self.settings.dc)

    def _advertise_exporter(self, exporting: bool) -> None:
        tags = {**self.membership.tags, sync_tags.EXPORT: sync_tags.export_tag(exporting)}
        try:
            self.membership.set_tags(tags)
        except Exception as exc:  # gossip stopping: the tags go with it
            if self.ownership is not None:
                self.ownership.stats.error("advertise")
            log.warning("cannot advertise export=%s in gossip: %s", exporting, exc)

    async def _start_adapter(self) -> Adapter:
        registry = self.settings.registry
        if self.local_registry is not None:
            adapter = self.local_registry.adapter()
        else:
            adapter = load_adapter(registry.kind, list(registry.urls), registry.adapter_settings)
        try:
            await adapter.start()
        except BaseException:
            await adapter.close()  # its HTTP session or connection, not left to the GC
            raise
        return adapter

    async def _report_unused_rules(self) -> None:
        """Warn once at start about filter rules that match none of the local instances."""
        filters = self.settings.filters
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
        """The local registry's address(es), credentials redacted: the given URLs, or the
        one's in process."""
        if self.local_registry is not None:
            return self.local_registry.url
        return redact(", ".join(self.settings.registry.urls))

    async def stop(self) -> None:
        """Stop in reverse order; the store is flushed and closed last."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.rpc is not None:
            await _step(self.rpc.stop)
        await self._close_parts()
        self.started = False

    async def _close_parts(self) -> None:
        """Close what :meth:`_start_parts` started, in reverse order; the listeners stay."""
        parts = (self.ownership, self.peers, self.exporter, self.importer, self.adapter)
        for part in parts:
            if part is not None:
                await _step(part.close)
        if self.store is not None:
            await _step(self.store.close)
        if self.rpc is not None:
            self.rpc.source = _NotExporting(self.settings.dc, self.settings.node)
        self.ownership = self.peers = self.exporter = self.importer = None
        self.adapter = self.store = None

    # -- gossip wiring -------------------------------------------------------------------

    def _announce(self, revision: int) -> None:
        now = time.monotonic()
        if now - self._last_announce < ANNOUNCE_INTERVAL:
            return
        self._last_announce = now
        try:
            self.membership.user_event(REVISION_EVENT, self.settings.dc.encode(), coalesce=True)
        except Exception as exc:  # peers still find the change at their next anti-entropy
            if self.exporter is not None:
                self.exporter.stats.error("announce")
            log.warning("cannot announce revision %d in gossip: %s", revision, exc)

    def _on_pool_event(self, event: SerfEvent) -> None:
        if isinstance(event, UserEvent) and event.name == REVISION_EVENT and self.peers:
            self.peers.wake(event.payload.decode(errors="replace"))
        elif (
            isinstance(event, MemberEvent)
            and event.type in _MEMBERSHIP_SIGNALS
            and event.member.tags.get(sync_tags.DC) == self.settings.dc
            and self.ownership is not None
            and self.ownership.coordinated
        ):
            # Gossip is the fast signal that a syncer of this data center came or went;
            # the store's leases decide: re-read them now rather than at the next tick.
            self.ownership.nudge()
        elif (
            isinstance(event, MemberEvent)
            and event.type in _REMOTE_SIGNALS
            and event.member.tags.get(sync_tags.DC) not in (None, self.settings.dc)
            and self.peers is not None
        ):
            # a syncer of another data center appeared or started exporting (export=1 once
            # its engine runs): follow it now, not at the next scan
            self.peers.nudge()

    # -- inspection: the diff view and the filter dry run -----------------------------------

    async def registry_instances(self) -> list[Instance]:
        """Every instance the local registry holds (the RPC's ListService answer)."""
        if self.adapter is None:
            raise NotExportingError(f"syncer {self.settings.node} has no registry connection yet")
        return list(await self.adapter.list_instances())

    def filter_rules(self) -> str:
        return json.dumps(self.settings.filters.to_dict())

    async def _listings(self, name: str, limit: int) -> dict[str, Listing | str]:
        """This data center's registry and every remote one's (one syncer each, over the
        sync RPC), each cut at ``limit`` instances and bounded in time."""
        config = self.settings
        chosen: dict[str, RemoteSyncer] = {}
        for syncer in self.discovery.remote_syncers():
            followed = self.peers.links.get(syncer.dc) if self.peers else None
            if syncer.dc not in chosen or (followed and followed.status.syncer == syncer.node):
                chosen[syncer.dc] = syncer

        async def local() -> Listing:
            instances = await self.registry_instances()
            return sync_diff.local_listing(
                config.dc, config.node, instances, name, limit, config.filters
            )

        def remote(syncer: RemoteSyncer) -> Any:
            async def call() -> Listing:
                client = self.discovery.client(syncer)
                try:
                    return await client.list_service(
                        name, limit=limit, timeout=sync_diff.DIFF_TIMEOUT
                    )
                finally:
                    await client.close()

            return call

        calls = {dc: remote(syncer) for dc, syncer in chosen.items()}
        calls[config.dc] = local
        return await sync_diff.gather_listings(calls)

    async def diff(self, service: str, limit: int) -> DiffAnswer:
        """What every data center's registry holds of ``service`` ("" = every service, at
        most ``limit`` instances each) and every discrepancy, explained."""
        started = time.monotonic()
        limit = listed_limit(limit)
        listings = await self._listings(service, limit)
        held = self.importer.copies_by_origin() if self.importer else {}
        gone = set(held) - set(listings)
        return sync_diff.compare(service, limit, listings, gone=gone, started=started)

    async def dry_run(self, limit: int = 0) -> DryRunAnswer:
        """What the current filter rules export and import, service by service, judged on
        this and every remote registry's originals (bounded listings)."""
        listings = await self._listings("", listed_limit(limit))
        local = listings.pop(self.settings.dc)
        if not isinstance(local, Listing):
            raise NotExportingError(f"cannot list this data center's registry: {local}")
        return dry_run(self.settings.filters, local, listings, self.unused_rules)

    def _catching_up(self) -> bool:
        """Whether some remote data center is being caught up (the importer's bootstrap
        write rate applies): see :func:`~pysyncer.sync.writebudget.catching_up`."""
        links = self.peers.links.values() if self.peers else ()
        return any(catching_up(link.synced, link.status.state, link.status.lag) for link in links)

    def slot_runs(self) -> list[tuple[int, int, str, bool]]:
        """The slot table as runs (see :meth:`SlotOwnership.slot_runs`)."""
        return self.ownership.slot_runs() if self.ownership is not None else []

    # -- status ------------------------------------------------------------------------

    def not_ready_reasons(self) -> list[str]:
        """Why this engine does not serve yet (empty: ready): the registry does not
        answer, the store is degraded, or a data center's first sync is not done."""
        if not self.started:
            return ["sync engine: not started"]
        reasons = []
        exporter = self.exporter
        if exporter is not None and exporter.running and not exporter.following:
            reasons.append(f"registry {self._registry_url()}: not answering")
        health = getattr(self.store, "health", None)
        if health is not None:
            state: StoreHealth = health()
            if state.status != "ok":
                error = f": {redact(state.last_error)}" if state.last_error else ""
                reasons.append(f"store {redact(state.endpoint)}: {state.status}{error}")
        for dc, link in sorted((self.peers.links if self.peers else {}).items()):
            if not link.synced:
                reasons.append(f"data center {dc}: first sync not done ({link.status.state})")
        return reasons

    def full_sync(self) -> list[str]:
        """Repair every link now, after checking every copy against the registry (a copy
        deleted there by hand is found lost and pulled again); the data centers asked."""
        if self.peers is None:
            return []
        task = asyncio.get_running_loop().create_task(self._verified_full_sync())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return sorted(self.peers.links)

    async def _verified_full_sync(self) -> None:
        if self.importer is not None:
            try:
                await self.importer.renew_all()
            except PysyncerError as exc:  # the repair still runs: it finds what it can
                self.importer.stats.error(type(exc).__name__)
                log.warning("full sync: checking the copies against the registry failed: %s", exc)
        if self.peers is not None:
            self.peers.request_full_sync()

    def status(self) -> SyncStatus:
        """This data center, its links and its parts' counters, for the admin API."""
        exporter, importer, ownership = self.exporter, self.importer, self.ownership
        health = getattr(self.store, "health", None)
        return {
            "dc": self.settings.dc,
            "node": self.settings.node,
            "revision": exporter.revision() if exporter else 0,
            "epoch": exporter.epoch if exporter else "",
            "exported": exporter.exported_count() if exporter else 0,
            "registry": self._registry_url(),
            "remote": remote_links(
                {dc: link.status for dc, link in (self.peers.links if self.peers else {}).items()},
                importer.copies_by_origin() if importer else {},
            ),
            "exporter": exporter_status(
                exporter.stats if exporter else ExporterStats(),
                self.rpc.stats if self.rpc else None,
            ),
            "importer": importer_status(importer.stats if importer else ImporterStats()),
            "ownership": ownership_status(ownership.stats if ownership else OwnershipStats()),
            "store": store_status(health() if health is not None else None),
            "filters": filters_status(
                self.settings.filters,
                self.unused_rules,
                self.peers.not_followed if self.peers else (),
            ),
            "identity": (
                self.peers.trust.status()
                if self.peers
                else {"established": {}, "claimants": {}, "conflicts": 0}
            ),
        }


async def _step(close: Callable[[], Any]) -> None:
    """One step of a shutdown: its failure is logged, the next steps still run."""
    try:
        await close()
    except Exception as exc:
        tolerate("sync-engine-stop", exc, level=logging.ERROR, trace=True)


class NotExportingError(PysyncerError, RuntimeError):
    """The sync engine has not started its exporter yet."""


class _NotExporting:
    """The RPC server's source until the exporter runs: every call fails (never an empty
    data center, which a peer would mirror by deleting its copies)."""

    def __init__(self, dc: str, node: str) -> None:
        self.dc = dc
        self.node = node
        self.epoch = ""

    def _refuse(self) -> NotExportingError:
        return NotExportingError(f"syncer {self.node} of {self.dc} is starting: not exporting")

    def revision(self) -> int:
        raise self._refuse()

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        raise self._refuse()

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        raise self._refuse()

    def digest_table(self) -> tuple[int, bytes]:
        raise self._refuse()

    def slot_records(self, slots: Sequence[int]) -> AsyncIterator[tuple[int, list[Record]]]:
        raise self._refuse()
