"""Prometheus families of the sync engine: slot ownership and store health, as rendered."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pysyncer.admin.metrics import SyncCollector

pytestmark = pytest.mark.timeout(30)


def status(node: str, leader: str, store: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sync status shaped like :meth:`SyncEngine.status` of a scaled-out member."""
    return {
        "dc": "dc-b",
        "node": node,
        "revision": 7,
        "exported": 3,
        "remote": {},
        "exporter": {},
        "importer": {},
        "ownership": {
            "epoch": 4,
            "leader": leader,
            "slots_owned": 5461,
            "slots_pending": 2,
            "tables_written": 3,
            "slots_gained": 8192,
            "slots_lost": 2731,
            "playbacks": 5,
            "playback_seconds": 1.25,
            "last_playback_slots": 2730,
            "members": {"b1": 5462, "b2": 5461, "b3": 5461},
            "errors": {"playback": 1},
        },
        "store": store
        if store is not None
        else {"status": "degraded", "queued": 12, "dropped": 1, "last_error": "x", "endpoint": ""},
    }


def scrape(answer: dict[str, Any]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Rendered text format, parsed back: sample name -> labels -> value."""
    registry = CollectorRegistry()
    registry.register(SyncCollector(lambda: answer))
    text = generate_latest(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


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
    answer = status("solo", "solo", {"status": "ok"})
    samples = scrape(answer)
    assert samples["pysyncer_store_degraded"][()] == 0
    assert "pysyncer_store_queued_writes" not in samples
    answer.pop("ownership")
    answer.pop("store")
    samples = scrape(answer)
    assert not any(name.startswith(("pysyncer_ownership", "pysyncer_store")) for name in samples)
