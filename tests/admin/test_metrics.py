"""Prometheus families of the sync engine: links, counters, slot ownership and store health,
as rendered from a typed sync status."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pysyncer.admin.metrics import SyncCollector
from pysyncer.admin.payloads import StoreStatus, SyncStatus
from pysyncer.sync.exporter import ExporterStats
from pysyncer.sync.filters import Filters
from pysyncer.sync.importer import ImporterStats
from pysyncer.sync.ownership import OwnershipStats
from pysyncer.sync.peers import LAG_BUCKETS, PeerStatus
from pysyncer.sync.status import (
    exporter_status,
    filters_status,
    importer_status,
    ownership_status,
    remote_links,
)
from pysyncer.sync.writebudget import WriteBudget

pytestmark = pytest.mark.timeout(30)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def status(node: str, leader: str, store: StoreStatus | None = None) -> SyncStatus:
    """A sync status as :meth:`SyncEngine.status` builds it for a scaled-out member."""
    streaming = PeerStatus("dc-a", state="streaming", syncer="a1", applied_revision=40)
    streaming.remote_revision = 42
    streaming.repairs = 2
    streaming.error("stream")
    streaming.lag_buckets = [0, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 4]
    streaming.lag_sum, streaming.lag_count = 9.5, 4
    return {
        "dc": "dc-b",
        "node": node,
        "revision": 7,
        "epoch": "e1",
        "exported": 3,
        "registry": "http://127.0.0.1:30100",
        "remote": remote_links({"dc-a": streaming}, {"dc-a": 10, "dc-c": 4}),
        "exporter": exporter_status(ExporterStats(changes_exported=11, resyncs=1)),
        "importer": importer_status(ImporterStats(applied=20, renewals=5, errors={"register": 2})),
        "ownership": ownership_status(
            OwnershipStats(
                epoch=4,
                leader=leader,
                slots_owned=5461,
                slots_pending=2,
                tables_written=3,
                slots_gained=8192,
                slots_lost=2731,
                playbacks=5,
                playback_seconds=1.25,
                last_playback_slots=2730,
                members={"b1": 5462, "b2": 5461, "b3": 5461},
                errors={"playback": 1},
            )
        ),
        "store": store
        if store is not None
        else {"status": "degraded", "queued": 12, "dropped": 1, "last_error": "x", "endpoint": ""},
        "filters": filters_status(Filters(), []),
        "identity": {"established": {}, "claimants": {}, "conflicts": 0},
    }


def scrape(answer: SyncStatus | None) -> Samples:
    """Rendered text format, parsed back: sample name -> labels -> value."""
    registry = CollectorRegistry()
    registry.register(SyncCollector(lambda: answer))
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_sync_counters_and_links() -> None:
    samples = scrape(status("b1", "b1"))
    one = ()
    assert samples["pysyncer_sync_revision"][one] == 7
    assert samples["pysyncer_sync_exported_instances"][one] == 3
    assert samples["pysyncer_sync_changes_exported_total"][one] == 11
    assert samples["pysyncer_sync_resyncs_total"][one] == 1
    assert samples["pysyncer_sync_applied_total"][one] == 20
    assert samples["pysyncer_sync_renewals_total"][one] == 5
    assert samples["pysyncer_sync_registered_total"][one] == 0
    assert samples["pysyncer_sync_copies"] == {(("origin", "dc-a"),): 10, (("origin", "dc-c"),): 4}
    assert samples["pysyncer_sync_lag_revisions"] == {
        (("origin", "dc-a"),): 2,
        (("origin", "dc-c"),): 0,
    }
    assert samples["pysyncer_sync_repairs_total"][(("origin", "dc-a"),)] == 2
    assert samples["pysyncer_sync_errors_total"] == {
        (("kind", "register"), ("part", "importer")): 2,
        (("kind", "stream"), ("part", "peer:dc-a")): 1,
    }
    buckets = samples["pysyncer_sync_propagation_seconds_bucket"]
    assert buckets[(("le", "+Inf"), ("origin", "dc-a"))] == 4
    assert buckets[(("le", str(LAG_BUCKETS[1])), ("origin", "dc-a"))] == 1
    assert samples["pysyncer_sync_propagation_seconds_sum"][(("origin", "dc-a"),)] == 9.5
    assert samples["pysyncer_sync_propagation_seconds_count"][(("origin", "dc-a"),)] == 4


def test_ownership_and_store_families() -> None:
    samples = scrape(status("b1", "b1"))
    one = ()
    assert samples["pysyncer_ownership_epoch"][one] == 4
    assert samples["pysyncer_ownership_slots_owned"][one] == 5461
    assert samples["pysyncer_ownership_slots_pending"][one] == 2
    assert samples["pysyncer_ownership_leader"][one] == 1
    assert samples["pysyncer_ownership_member_slots"] == {
        (("member", "b1"),): 5462,
        (("member", "b2"),): 5461,
        (("member", "b3"),): 5461,
    }
    assert samples["pysyncer_ownership_slot_tables_written_total"][one] == 3
    assert samples["pysyncer_ownership_slots_gained_total"][one] == 8192
    assert samples["pysyncer_ownership_slots_lost_total"][one] == 2731
    assert samples["pysyncer_ownership_playbacks_total"][one] == 5
    assert samples["pysyncer_ownership_playback_seconds_total"][one] == 1.25
    assert samples["pysyncer_ownership_errors_total"] == {(("kind", "playback"),): 1}
    assert samples["pysyncer_store_degraded"][one] == 1
    assert samples["pysyncer_store_queued_writes"][one] == 12
    assert samples["pysyncer_store_dropped_writes_total"][one] == 1


def test_a_follower_with_a_healthy_store() -> None:
    samples = scrape(status("b2", "b1", {"status": "ok", "queued": 0, "dropped": 0}))
    assert samples["pysyncer_ownership_leader"][()] == 0
    assert samples["pysyncer_store_degraded"][()] == 0
    assert samples["pysyncer_store_queued_writes"][()] == 0


def test_embedded_store_reports_ok_without_queue_figures() -> None:
    samples = scrape(status("solo", "solo", {"status": "ok"}))
    assert samples["pysyncer_store_degraded"][()] == 0
    assert "pysyncer_store_queued_writes" not in samples
    assert "pysyncer_store_dropped_writes_total" not in samples


def test_no_sync_engine_no_sync_families() -> None:
    assert not any(name.startswith("pysyncer_") for name in scrape(None))


def test_the_importer_write_budget_families() -> None:
    budget = WriteBudget(200.0, 50.0, catching_up=lambda: True, clock=lambda: 0.0)
    budget.delayed = 7
    answer = status("b1", "b1")
    answer["importer"] = importer_status(ImporterStats(budget=budget))
    samples = scrape(answer)
    assert samples["pysyncer_sync_writes_delayed_total"][()] == 7
    assert samples["pysyncer_sync_write_rate"][()] == 200.0  # catching up: the bootstrap rate
    assert samples["pysyncer_sync_write_bootstrap"][()] == 1
    assert samples["pysyncer_sync_write_tokens"][()] == 50.0  # switched at the next write
