"""The sync engine's parts, reported as the admin API's sync-status payload.

Owns the field-by-field translation from the engine's own counters (exporter, importer,
peer links, slot ownership, store health, filters) to the typed sections of
:class:`pysyncer.admin.payloads.SyncStatus`. Every field is named on both sides, so a
renamed counter is a type error here rather than a stat that silently reads 0; a new
counter shows up in the payload once it is added to the payload type
(``tests/admin/test_payloads.py`` checks that both sides list the same fields).
Pure functions over the parts' state: no I/O, nothing started or stopped. Imports only
the payload declarations from the admin package, never its server.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

from pysyncer.admin.payloads import (
    ExporterStatus,
    FilterRules,
    FiltersStatus,
    Histogram,
    ImporterStatus,
    OwnershipStatus,
    RemoteLink,
    StoreStatus,
    SyncProgress,
    WriteBudgetStatus,
)
from pysyncer.rpc.server import ServerStats
from pysyncer.store.base import StoreHealth
from pysyncer.sync.exporter import ExporterStats
from pysyncer.sync.filters import Filter, Filters
from pysyncer.sync.importer import ImporterStats
from pysyncer.sync.ownership import OwnershipStats
from pysyncer.sync.peers import LAG_BUCKETS, PeerStatus
from pysyncer.sync.peers import SyncProgress as Progress
from pysyncer.sync.writebudget import WriteBudget

__all__ = [
    "exporter_status",
    "filters_status",
    "importer_status",
    "ownership_status",
    "progress_status",
    "remote_links",
    "store_status",
    "write_budget_status",
]


def exporter_status(stats: ExporterStats, served: ServerStats | None = None) -> ExporterStatus:
    """The exporter's counters; the RPC server's refusals join its errors as ``rpc_<kind>``."""
    errors = dict(stats.errors)
    if served is not None and served.errors:
        errors.update((f"rpc_{kind}", count) for kind, count in served.errors.items())
    return {
        "changes_exported": stats.changes_exported,
        "resyncs": stats.resyncs,
        "feed_resets": stats.feed_resets,
        "registry_lag": stats.registry_lag,
        "copies_skipped": stats.copies_skipped,
        "filtered": stats.filtered,
        "deletes_deferred": stats.deletes_deferred,
        "log_entries_trimmed": stats.log_entries_trimmed,
        "errors": errors,
    }


def importer_status(stats: ImporterStats) -> ImporterStatus:
    return {
        "applied": stats.applied,
        "registered": stats.registered,
        "unregistered": stats.unregistered,
        "renewals": stats.renewals,
        "lost": stats.lost,
        "reregistered": stats.reregistered,
        "filtered": stats.filtered,
        "not_owned": stats.not_owned,
        "errors": dict(stats.errors),
        "budget": write_budget_status(stats.budget),
    }


def write_budget_status(budget: WriteBudget) -> WriteBudgetStatus:
    """The importer's write budget now (tokens as of this call)."""
    mode = budget.mode()
    return {
        "mode": mode,
        "rate": budget.rate_of(mode),
        "bootstrap_rate": budget.bootstrap,
        "steady_rate": budget.steady,
        "tokens": round(budget.tokens(), 1),
        "delayed": budget.delayed,
        "waited_seconds": round(budget.waited, 3),
    }


def ownership_status(stats: OwnershipStats) -> OwnershipStatus:
    return {
        "epoch": stats.epoch,
        "leader": stats.leader,
        "slots_owned": stats.slots_owned,
        "slots_pending": stats.slots_pending,
        "tables_written": stats.tables_written,
        "slots_gained": stats.slots_gained,
        "slots_lost": stats.slots_lost,
        "playbacks": stats.playbacks,
        "playback_seconds": stats.playback_seconds,
        "last_playback_slots": stats.last_playback_slots,
        "members": dict(stats.members),
        "errors": dict(stats.errors),
    }


def progress_status(progress: Progress, now: float | None = None) -> SyncProgress:
    """A repair's progress with its rate (records per second) and the time left,
    estimated from the slots still to pull (-1: not known yet)."""
    end = progress.finished_at or (time.time() if now is None else now)
    elapsed = max(0.0, end - progress.started_at) if progress.started_at else 0.0
    rate = progress.records_done / elapsed if elapsed > 0 else 0.0
    eta = -1.0
    if not progress.running and progress.kind:
        eta = 0.0
    elif progress.slots_total and progress.slots_done:
        left = progress.slots_total - progress.slots_done
        eta = elapsed * left / progress.slots_done
    return {
        "kind": progress.kind,
        "running": progress.running,
        "slots_total": progress.slots_total,
        "slots_done": progress.slots_done,
        "records_total": progress.records_total,
        "records_done": progress.records_done,
        "started_at": progress.started_at,
        "finished_at": progress.finished_at,
        "rate": round(rate, 1),
        "eta_seconds": round(eta, 1),
    }


def _remote_link(status: PeerStatus, copies: int) -> RemoteLink:
    propagation: Histogram = {
        "buckets": dict(zip(map(str, LAG_BUCKETS), status.lag_buckets, strict=True)),
        "sum": status.lag_sum,
        "count": status.lag_count,
    }
    return {
        "state": status.state,
        "syncer": status.syncer,
        "applied_revision": status.applied_revision,
        "remote_revision": status.remote_revision,
        "lag": status.lag,
        "copies": copies,
        "repairs": status.repairs,
        "slots_pulled": status.slots_pulled,
        "slots_settling": status.slots_settling,
        "errors": dict(status.errors),
        "last_applied_at": status.last_applied_at,
        "propagation": propagation,
        "progress": progress_status(status.progress),
    }


def remote_links(
    links: Mapping[str, PeerStatus], copies_by_origin: Mapping[str, int]
) -> dict[str, RemoteLink]:
    """Per remote data center, its link; an origin whose copies are held with no link
    left reads as a ``gone`` link with zero counters."""
    remote = {
        dc: _remote_link(status, copies_by_origin.get(dc, 0))
        for dc, status in sorted(links.items())
    }
    for dc, count in sorted(copies_by_origin.items()):
        if dc not in remote:
            remote[dc] = _remote_link(PeerStatus(dc, state="gone"), count)
    return remote


def store_status(health: StoreHealth | None) -> StoreStatus:
    """A store that reports health (etcd) with its queue figures; any other: ``ok``."""
    if health is None:
        return {"status": "ok"}
    return {
        "status": health.status,
        "queued": health.queued,
        "dropped": health.dropped,
        "last_error": health.last_error,
        "endpoint": health.endpoint,
    }


def _rules(side: Filter) -> FilterRules:
    rules = side.to_dict()
    return {"include": rules["include"], "exclude": rules["exclude"]}


def filters_status(
    filters: Filters, unused_rules: Sequence[str], not_followed: Collection[str] = ()
) -> FiltersStatus:
    """The rules as written, the unused ones, and the live remote data centers followed
    by no link (``not_followed``), each with why nothing of it is imported."""
    return {
        "direction": filters.direction,
        "export": _rules(filters.export),
        "import": _rules(filters.import_),
        "unused_rules": list(unused_rules),
        "not_followed": {dc: filters.not_imported_reason(dc) for dc in sorted(not_followed)},
    }
