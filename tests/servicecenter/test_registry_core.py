"""EmbeddedRegistry without HTTP: leases on a fake clock, revisions, change log, tenancy."""

from __future__ import annotations

import asyncio
import time
from collections import UserDict
from typing import Any

import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryError
from pysyncer.servicecenter.settings import ServiceCenterSettings
from pysyncer.servicecenter.validation import validate_instance
from tests.support.servicecenter import SERVICE, ManualClock

pytestmark = pytest.mark.timeout(30)


def instance(n: int = 1, interval: int | None = None, times: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"hostName": f"h{n}", "endpoints": [f"rest://10.0.0.{n}:80"]}
    if interval is not None:
        body["healthCheck"] = {"mode": "push", "interval": interval, "times": times}
    return body


async def test_ttl_is_interval_times_retries_plus_one(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    short = await registry.register_instance(sid, instance(1, interval=10, times=2))
    default = await registry.register_instance(sid, instance(2))
    clock.now += 29.9
    assert registry.expire() == 0
    await registry.heartbeat(sid, short)  # renewed: expires 30 s from now
    clock.now += 29.9
    assert registry.expire() == 0
    clock.now += 0.2
    assert registry.expire() == 1
    listed, _ = await registry.list_instances(sid)
    assert [i["instanceId"] for i in listed] == [default]
    clock.now += 120 - 60
    assert registry.expire() == 1  # defaults: 30 s x (3 + 1)
    with pytest.raises(RegistryError) as info:
        await registry.heartbeat(sid, short)
    assert info.value.code == 400017


async def test_ttl_override(clock: ManualClock) -> None:
    registry = EmbeddedRegistry(clock=clock, initial_revision=0, ttl_override=5.0)
    sid = await registry.create_service(SERVICE)
    await registry.register_instance(sid, instance())
    clock.now += 5.0
    assert registry.expire() == 1


async def test_every_change_is_logged_and_heartbeats_are_not(
    registry: EmbeddedRegistry,
) -> None:
    sid = await registry.create_service(SERVICE)
    iid = await registry.register_instance(sid, instance())
    await registry.register_instance(sid, instance())  # identical: no change
    await registry.heartbeat(sid, iid)
    await registry.heartbeat_set([(sid, iid)])
    await registry.update_instance_status(sid, iid, "DOWN")
    await registry.update_instance_status(sid, iid, "DOWN")  # no change
    await registry.update_instance_properties(sid, iid, {"k": "v"})
    other = await registry.register_instance(sid, instance(2))
    await registry.unregister_instance(sid, other)
    await registry.delete_service(sid, force=True)
    batch = await registry.changes(0, 0)
    assert not batch.reset and batch.revision == registry.revision() == 8
    assert [(c.revision, c.action, c.instance is None) for c in batch.changes] == [
        (1, "CREATE", True),
        (2, "CREATE", False),
        (3, "UPDATE", False),
        (4, "UPDATE", False),
        (5, "CREATE", False),
        (6, "DELETE", False),
        (7, "DELETE", False),
        (8, "DELETE", True),
    ]


async def test_change_log_is_bounded_and_resets(clock: ManualClock) -> None:
    registry = EmbeddedRegistry(clock=clock, initial_revision=0, change_log_size=3)
    sid = await registry.create_service(SERVICE)
    for n in range(1, 5):
        await registry.register_instance(sid, instance(n))
    assert registry.revision() == 5
    assert (await registry.changes(1, 0)).reset  # revision 2 has left the log
    batch = await registry.changes(2, 0)
    assert not batch.reset and [c.revision for c in batch.changes] == [3, 4, 5]
    assert (await registry.changes(6, 0)).reset  # from the future
    cut = await registry.changes(2, 0, limit=2)
    assert [c.revision for c in cut.changes] == [3, 4] and cut.revision == 4


async def test_default_revision_survives_restarts() -> None:
    first = EmbeddedRegistry()
    await first.create_service(SERVICE)
    seen = first.revision()
    second = EmbeddedRegistry()  # "restarted": starts beyond anything seen before
    assert second.revision() >= seen
    batch = await second.changes(seen, 0)
    assert batch.reset or batch.revision == seen
    assert (await second.changes(0, 0)).reset


async def test_long_poll_wakes_on_expiry(registry: EmbeddedRegistry, clock: ManualClock) -> None:
    sid = await registry.create_service(SERVICE)
    iid = await registry.register_instance(sid, instance(1, interval=1, times=0))
    since = registry.revision()
    eviction = asyncio.create_task(registry.run_eviction(0.01))
    try:
        waiter = asyncio.create_task(registry.changes(since, 10))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        clock.now += 1.0
        started = time.monotonic()
        batch = await asyncio.wait_for(waiter, 9)
        assert time.monotonic() - started < 5.0  # woken by the expiry, not its 10 s timeout
    finally:
        eviction.cancel()
    assert [(c.action, c.instance and c.instance["instanceId"]) for c in batch.changes] == [
        ("DELETE", iid)
    ]


async def test_tenants_are_separate(registry: EmbeddedRegistry) -> None:
    a = await registry.create_service(SERVICE, domain="a")
    b = await registry.create_service(SERVICE, domain="b", project="p")
    assert a != b
    assert registry.revision(domain="a") == 1 and registry.revision() == 0
    with pytest.raises(RegistryError):
        await registry.get_service(a, domain="b", project="p")
    assert [s["serviceId"] for s in await registry.list_services(domain="a")] == [a]


async def test_results_are_copies(registry: EmbeddedRegistry) -> None:
    sid = await registry.create_service(SERVICE)
    iid = await registry.register_instance(sid, instance())
    got, _ = await registry.get_instance(sid, iid)
    got["properties"]["x"] = "y"
    service = await registry.get_service(sid)
    service["serviceName"] = "changed"
    again, _ = await registry.get_instance(sid, iid)
    assert again["properties"] == {}
    assert (await registry.get_service(sid))["serviceName"] == "orders"


async def test_feed_arguments_are_bounded(registry: EmbeddedRegistry) -> None:
    for timeout in (61.0, -1.0):
        with pytest.raises(RegistryError):
            await registry.changes(0, timeout)
    with pytest.raises(RegistryError):
        await registry.changes(0, 0, limit=0)


async def test_heartbeats_keep_one_queued_entry_per_lease_and_expiry_stays_exact(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    iid = await registry.register_instance(sid, instance(1, interval=10, times=0))  # TTL 10 s
    for _ in range(50):
        clock.now += 5.0
        await registry.heartbeat_set([(sid, iid)])
        assert registry.expire() == 0
    assert len(registry._leases) == 1  # renewed 50 times, queued once
    clock.now += 9.9
    assert registry.expire() == 0
    clock.now += 0.1
    assert registry.expire() == 1
    assert len(registry._leases) == 0


async def test_reregistering_with_a_shorter_lease_expires_at_the_shorter_time(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    body = {**instance(1), "instanceId": "i-1"}  # default lease: 120 s
    await registry.register_instance(sid, body)
    await registry.register_instance(sid, body)  # same lease, updated in place
    assert len(registry._leases) == 1
    await registry.register_instance(sid, {**instance(1, interval=2, times=1), "instanceId": "i-1"})
    clock.now += 3.9
    assert registry.expire() == 0
    clock.now += 0.1
    assert registry.expire() == 1  # at 4 s, not 120 s
    clock.now += 200
    assert registry.expire() == 0  # the replaced lease's queued entry is skipped
    assert registry.instance_count() == 0


def test_instance_properties_are_checked_the_same_on_every_path() -> None:
    """A dict of plain strings (the fast path) and any other mapping are validated alike:
    strings only, sizes in UTF-8 bytes, a copy returned."""

    class Text(str):
        pass

    limits = ServiceCenterSettings(max_properties_bytes=8)
    props = {"k": "\u00e9\u00e9\u00e9"}  # 1 + 6 bytes: within 8, though 4 characters
    for given in (props, UserDict(props), {Text("k"): Text("\u00e9\u00e9\u00e9")}):
        out = validate_instance({**instance(), "properties": given}, limits)
        assert out["properties"] == props and out["properties"] is not given
    for big in ({"k": "\u00e9\u00e9\u00e9\u00e9"}, UserDict({"kkk": "\u00e9\u00e9\u00e9"})):
        with pytest.raises(RegistryError, match="9 bytes, more than the 8"):
            validate_instance({**instance(), "properties": big}, limits)
    for bad in ({"k": 1}, {1: "v"}, UserDict({"k": None}), ["k"]):
        with pytest.raises(RegistryError, match="'properties' must"):
            validate_instance({**instance(), "properties": bad}, limits)
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate has no UTF-8 size
        validate_instance({**instance(), "properties": {"k": "\ud800"}}, limits)


async def test_a_batch_heartbeat_answers_each_pair_as_a_single_one_would(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    """Runs of one service, a service without instances, an unknown service and an
    unknown instance, interleaved: each pair gets the answer its own heartbeat gets."""
    a = await registry.create_service(SERVICE)
    b = await registry.create_service({**SERVICE, "serviceName": "billing"})
    empty = await registry.create_service({**SERVICE, "serviceName": "empty"})
    a1, a2 = [await registry.register_instance(a, instance(n)) for n in (1, 2)]
    b1 = await registry.register_instance(b, instance(3))
    pairs = [(a, a1), (a, a2), (b, b1), (a, "nope"), ("ghost", a1), (empty, a1), (a, a1)]
    singles: list[str] = []
    for service_id, instance_id in pairs:
        try:
            await registry.heartbeat(service_id, instance_id)
            singles.append("")
        except RegistryError as exc:
            singles.append(exc.detail or exc.message)
    clock.now += 100
    results = await registry.heartbeat_set(pairs)
    assert [r["errMessage"] for r in results] == singles
    assert [bool(m) for m in singles] == [False, False, False, True, True, True, False]
    clock.now += 100  # 200 s after registration, 100 s after the batch: all still alive
    assert registry.expire() == 0
