"""The diff across data centers, the filter dry run and the repair progress figures.

Pure functions over listings (what ``ListService`` answers): every discrepancy kind is
produced by a listing built to show it, and a listing cut by its bound never makes a copy
look missing or extra.
"""

from __future__ import annotations

import asyncio
import json
from types import MappingProxyType

import pytest

from pysyncer.admin.payloads import DiffAnswer
from pysyncer.errors import PysyncerError
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, ServiceKey
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc.client import SyncClient
from pysyncer.rpc.errors import PayloadError
from pysyncer.rpc.listing import MAX_LISTED, Listing, listed_limit, listing_message, read_listing
from pysyncer.rpc.server import SyncServer
from pysyncer.sync.diff import compare, filters_from_json, gather_listings
from pysyncer.sync.dryrun import dry_run
from pysyncer.sync.filters import filters_from_config
from pysyncer.sync.peers import SyncProgress
from pysyncer.sync.status import progress_status
from tests.rpc.test_rpc import MemorySource

CART = ServiceKey("shop", "cart", "1.0")
PAY = ServiceKey("shop", "pay", "1.0")
NO_RULES = json.dumps({"direction": "both", "export": {}, "import": {}})


def original(iid: str, service: ServiceKey = CART, host: str = "h1", **props: str) -> Instance:
    return Instance(service, iid, host, ("rest://10.0.0.1:80",), properties=MappingProxyType(props))


def copy_of(instance: Instance, origin: str, **changes: str) -> Instance:
    properties = {
        **instance.properties,
        ORIGIN_DC_PROPERTY: origin,
        ORIGIN_ID_PROPERTY: instance.instance_id,
    }
    return Instance(
        instance.service,
        f"px-{instance.instance_id}",
        changes.get("host", instance.host_name),
        instance.endpoints,
        changes.get("status", instance.status),
        MappingProxyType(properties),
    )


def listing(dc: str, *instances: Instance, rules: str = NO_RULES, cut: bool = False) -> Listing:
    return Listing(dc, f"n-{dc}", instances, cut, rules)


def kinds(answer: DiffAnswer) -> list[tuple[str, str, str]]:
    return sorted((d["kind"], d["registry"], d["instance_id"]) for d in answer["discrepancies"])


def test_an_agreeing_pool_has_no_discrepancy() -> None:
    a1 = original("a1")
    answer = compare("cart", 100, {"a": listing("a", a1), "b": listing("b", copy_of(a1, "a"))})
    assert answer["discrepancies"] == []
    assert answer["registries"]["a"]["originals"] == 1
    assert answer["registries"]["b"]["copies"] == 1
    assert {(i["registry"], i["copy"]) for i in answer["instances"]} == {("a", False), ("b", True)}


def test_every_discrepancy_kind_is_explained() -> None:
    a1, a2, a3 = original("a1"), original("a2"), original("a3", secret="yes")
    gone_copy = copy_of(original("z1"), "z")
    left_over = copy_of(original("a9"), "a")
    refuse = json.dumps(
        {"direction": "both", "import": {"exclude": [{"metadata": "secret"}]}, "export": {}}
    )
    answer = compare(
        "cart",
        100,
        {
            "a": listing("a", a1, a2, a3),
            "b": listing("b", copy_of(a2, "a", host="old"), gone_copy, left_over, rules=refuse),
            "c": "no answer within 5 s",
        },
        gone={"z"},
    )
    assert kinds(answer) == [
        ("copy_missing", "b", "a1"),
        ("extra_copy", "b", "a9"),
        ("filtered_out", "b", "a3"),
        ("origin_gone", "b", "z1"),
        ("stale_fields", "b", "a2"),
        ("unreachable", "c", ""),
    ]
    by_kind = {d["kind"]: d for d in answer["discrepancies"]}
    assert by_kind["stale_fields"]["fields"] == ["host"]
    assert "import rules refuse it" in by_kind["filtered_out"]["explanation"]
    assert "no answer within 5 s" in by_kind["unreachable"]["explanation"]
    assert not answer["registries"]["c"]["reached"]


def test_a_copy_the_rules_refuse_is_extra() -> None:
    a1 = original("a1")
    sends_nothing = json.dumps({"direction": "receive"})
    answer = compare(
        "", 100, {"a": listing("a", a1, rules=sends_nothing), "b": listing("b", copy_of(a1, "a"))}
    )
    (found,) = answer["discrepancies"]
    assert found["kind"] == "extra_copy" and "sends nothing" in found["explanation"]


def test_a_registry_that_imports_nothing_of_an_origin_does_not_follow_it() -> None:
    a1 = original("a1")
    only_c = json.dumps({"import": {"include": [{"dc": "c"}]}})
    answer = compare("", 100, {"a": listing("a", a1), "b": listing("b", rules=only_c)})
    (found,) = answer["discrepancies"]
    assert found["kind"] == "filtered_out"
    assert found["explanation"] == (
        "no copy in b: b does not follow a: no import.include rule applies to data center 'a'"
    )


def test_a_cut_listing_calls_nothing_missing_or_extra() -> None:
    a1 = original("a1")
    orphan = copy_of(original("a7"), "a")
    answer = compare("", 1, {"a": listing("a", a1, cut=True), "b": listing("b", orphan, cut=True)})
    assert answer["discrepancies"] == []
    assert answer["registries"]["a"]["truncated"]


def test_malformed_rules_read_as_no_rules() -> None:
    assert not filters_from_json("{not json", "a").has_rules
    assert not filters_from_json("", "a").has_rules
    rules = filters_from_json(json.dumps({"export": {"include": [{"name": "cart"}]}}), "a")
    assert rules.exports(original("a1")) and not rules.exports(original("p", PAY))


def test_gathering_bounds_each_listing_in_time() -> None:
    async def fast() -> Listing:
        return listing("a")

    async def slow() -> Listing:
        await asyncio.sleep(5)
        return listing("b")

    async def broken() -> Listing:
        raise PayloadError("bad listing")

    found = asyncio.run(gather_listings({"a": fast, "b": slow, "c": broken}, timeout=0.2))
    assert isinstance(found["a"], Listing)
    assert found["b"] == "no answer within 0.2 s"
    assert found["c"] == "bad listing"


def test_a_listing_round_trips_and_is_bounded() -> None:
    a1, a2 = original("a1"), copy_of(original("b1"), "b")
    message = listing_message("a", "n-a", [a2, a1, original("p", PAY)], "cart", 0, NO_RULES)
    read = read_listing(message)
    assert [i.instance_id for i in read.instances] == ["a1", "px-b1"]
    assert read.instances[1].properties[ORIGIN_DC_PROPERTY] == "b"
    assert read.filters == NO_RULES and not read.truncated
    assert read_listing(listing_message("a", "n", [a1, a2], "", 1, "")).truncated
    assert listed_limit(0) > 0 and listed_limit(10**9) == MAX_LISTED
    bad = pb.ServiceListing(dc="a", instances=[pb.ListedInstance(service="no-slashes")])
    with pytest.raises(PayloadError):
        read_listing(bad)


def test_the_dry_run_explains_each_verdict() -> None:
    filters = filters_from_config(
        {"include": [{"name": "cart"}], "exclude": [{"metadata": "canary"}]},
        {"exclude": [{"dc": "b", "name": "pay"}]},
        dc="a",
    )
    local = listing("a", original("a1"), original("a2", canary="1"), original("p1", PAY))
    remote: dict[str, Listing | str] = {
        "b": listing("b", original("b1", PAY), original("b2")),
        "c": "unreachable",
    }
    answer = dry_run(filters, local, remote, ["export.include[1]: never used"])
    verdicts = {(s["side"], s["dc"], s["service"]): s for s in answer["services"]}
    cart, pay = CART.text(), PAY.text()
    assert verdicts[("export", "a", cart)]["verdict"] == "partly"
    assert (
        "1 of 2 instances pass the metadata of export.exclude[1]"
        in (verdicts[("export", "a", cart)]["reason"])
    )
    assert verdicts[("export", "a", pay)]["reason"] == "no export.include rule matches"
    assert verdicts[("import", "b", pay)]["verdict"] == "no"
    assert verdicts[("import", "b", pay)]["reason"].startswith("excluded by import.exclude[1]")
    assert verdicts[("import", "b", cart)]["verdict"] == "yes"
    assert answer["unreachable"] == {"c": "unreachable"}
    assert answer["unused_rules"] == ["export.include[1]: never used"]


def test_a_direction_turns_a_side_off() -> None:
    filters = filters_from_config(direction="send", dc="a")
    answer = dry_run(filters, listing("a", original("a1")), {"b": listing("b", original("b1"))})
    imported = [s for s in answer["services"] if s["side"] == "import"]
    assert imported and all(s["verdict"] == "no" for s in imported)
    assert "direction is 'send'" in imported[0]["reason"]
    assert next(s for s in answer["services"] if s["side"] == "export")["verdict"] == "yes"


def test_progress_reports_rate_and_time_left() -> None:
    progress = SyncProgress()
    assert progress_status(progress)["eta_seconds"] == -1
    progress.begin("initial", slots=100, records=1000)
    progress.started_at -= 10  # ten seconds in
    progress.slots_done, progress.records_done = 25, 250
    shown = progress_status(progress, now=progress.started_at + 10)
    assert shown["running"] and shown["rate"] == 25.0
    assert shown["eta_seconds"] == 30.0  # 75 slots left at 2.5 slots/s
    progress.end()
    done = progress_status(progress)
    assert not done["running"] and done["eta_seconds"] == 0 and done["finished_at"] > 0


class Registry:
    """The inspector side of ListService: a fixed registry and rules."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    async def registry_instances(self) -> list[Instance]:
        return self.instances

    def filter_rules(self) -> str:
        return NO_RULES


async def test_list_service_over_the_rpc() -> None:
    source = MemorySource(dc="a", node="n-a")
    server = SyncServer(source, "127.0.0.1", 0)
    await server.start()
    try:
        async with SyncClient(f"127.0.0.1:{server.port}", dc="a") as client:
            with pytest.raises(PysyncerError, match="no registry to list"):
                await client.list_service("cart")
            server.inspector = Registry([original("a1"), copy_of(original("b1"), "b")])
            found = await client.list_service("cart", limit=1)
            assert (found.dc, found.node, found.truncated) == ("a", "n-a", True)
            assert [i.instance_id for i in found.instances] == ["a1"]
            everything = await client.list_service("")
            assert len(everything.instances) == 2 and everything.filters == NO_RULES
        async with SyncClient(f"127.0.0.1:{server.port}", dc="other") as wrong:
            with pytest.raises(PysyncerError):
                await wrong.list_service("cart")  # it exports another data center
    finally:
        await server.stop()
