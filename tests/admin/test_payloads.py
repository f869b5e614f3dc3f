"""The admin payload types and what fills them: every counter of the engine's parts is a
payload field (and back), the status sections hold exactly their declared keys."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from pysyncer.admin.payloads import (
    LINK_STATES,
    ExporterStatus,
    FilterRules,
    FiltersStatus,
    ImporterStatus,
    KeyAnswer,
    LinkState,
    OwnershipStatus,
    RemoteLink,
    StoreStatus,
    SyncStatus,
)
from pysyncer.gossip.keymanager import KeyResponse
from pysyncer.store.base import StoreHealth
from pysyncer.sync.exporter import ExporterStats
from pysyncer.sync.filters import Filters, filters_from_config
from pysyncer.sync.importer import ImporterStats
from pysyncer.sync.ownership import OwnershipStats
from pysyncer.sync.peers import PeerStatus
from pysyncer.sync.status import (
    exporter_status,
    filters_status,
    importer_status,
    ownership_status,
    remote_links,
    store_status,
)

pytestmark = pytest.mark.timeout(30)


def keys(payload: type) -> set[str]:
    return set(typing.get_type_hints(payload))


def fields(stats: type) -> set[str]:
    return {field.name for field in dataclasses.fields(stats)}


@pytest.mark.parametrize(
    ("stats", "payload"),
    [
        (ExporterStats, ExporterStatus),
        (ImporterStats, ImporterStatus),
        (OwnershipStats, OwnershipStatus),
        (StoreHealth, StoreStatus),
        (KeyResponse, KeyAnswer),
    ],
)
def test_every_counter_is_a_payload_field(stats: type, payload: type) -> None:
    """A counter added to a part must be added to its payload type too (and the other way)."""
    assert fields(stats) == keys(payload)


def test_a_link_reports_every_peer_counter() -> None:
    # PeerStatus keeps the histogram as three fields and its data center as the dict key
    histogram = {"lag_buckets", "lag_sum", "lag_count"}
    assert fields(PeerStatus) - histogram - {"dc"} == keys(RemoteLink) - {
        "propagation",
        "copies",
        "lag",
    }


def test_link_states_are_the_literal() -> None:
    assert set(LINK_STATES) == set(typing.get_args(LinkState))
    assert PeerStatus("x").state in LINK_STATES


def test_sections_hold_their_declared_keys_and_serialize() -> None:
    stats = OwnershipStats(leader="b1", members={"b1": 3})
    link = PeerStatus("dc-a", state="streaming", syncer="a1", applied_revision=3)
    link.remote_revision = 5
    filters = filters_from_config({"include": [{"app": "shop"}]}, None, direction="send", dc="dc-b")
    status: SyncStatus = {
        "dc": "dc-b",
        "node": "b1",
        "revision": 5,
        "epoch": "e",
        "exported": 2,
        "registry": "",
        "remote": remote_links({"dc-a": link}, {"dc-a": 7, "dc-old": 2}),
        "exporter": exporter_status(ExporterStats()),
        "importer": importer_status(ImporterStats()),
        "ownership": ownership_status(stats),
        "store": store_status(None),
        "filters": filters_status(filters, ["export.include[1]: matched none"]),
        "identity": {
            "established": {"dc-a": "node:a1"},
            "claimants": {"dc-a": {"evil": "node:evil"}},
            "conflicts": 1,
        },
    }
    wire: dict[str, Any] = json.loads(json.dumps(status))
    assert set(wire) == keys(SyncStatus)
    assert set(wire["exporter"]) == keys(ExporterStatus)
    assert set(wire["importer"]) == keys(ImporterStatus)
    assert wire["ownership"]["members"] == {"b1": 3} and wire["ownership"]["leader"] == "b1"
    assert wire["store"] == {"status": "ok"}
    assert set(wire["filters"]) == keys(FiltersStatus)
    assert set(wire["filters"]["export"]) == keys(FilterRules)
    assert wire["filters"]["export"]["include"] == [{"app": "shop"}]
    assert wire["filters"]["direction"] == "send"
    a, gone = wire["remote"]["dc-a"], wire["remote"]["dc-old"]
    assert set(a) == set(gone) == keys(RemoteLink)
    assert (a["state"], a["lag"], a["copies"]) == ("streaming", 2, 7)
    assert (gone["state"], gone["copies"], gone["lag"]) == ("gone", 2, 0)
    assert list(a["propagation"]["buckets"])[-1] == "inf"


def test_store_health_with_queue_figures() -> None:
    health = StoreHealth("degraded", queued=3, dropped=1, last_error="down", endpoint="e:2379")
    assert store_status(health) == {
        "status": "degraded",
        "queued": 3,
        "dropped": 1,
        "last_error": "down",
        "endpoint": "e:2379",
    }
    assert filters_status(Filters(), [])["import"] == {"include": [], "exclude": []}
