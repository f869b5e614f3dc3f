"""Holder leases of the embedded registry: renewing a holder renews every instance it holds
in one call, a lapsed holder's instances expire exactly when their own TTL past its last
renewal runs out, per-instance heartbeats still work, and the holder's count follows
registrations, unregistrations, expiries and replacements."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryError
from pysyncer.servicecenter.leases import Lease, LeaseQueue
from tests.support.servicecenter import SERVICE, ManualClock

pytestmark = pytest.mark.timeout(30)

SCOPE = ("default", "default")


def instance(n: int, interval: int = 10, times: int = 0) -> dict[str, Any]:
    return {
        "instanceId": f"i{n}",
        "hostName": f"h{n}",
        "endpoints": [f"rest://10.0.0.{n}:80"],
        "healthCheck": {"mode": "push", "interval": interval, "times": times},
    }


async def _ids(registry: EmbeddedRegistry, service_id: str) -> set[str]:
    listed, _ = await registry.list_instances(service_id)
    return {i["instanceId"] for i in listed}


async def test_renewing_a_holder_extends_every_instance_it_holds(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    answers = await registry.register_instances(
        [(sid, instance(n)) for n in range(1, 4)], holder="copies-of-dc2"
    )
    assert answers == ["i1", "i2", "i3"]
    await registry.register_instance(sid, instance(4))  # not held
    for _ in range(5):  # 45 s of 10 s leases, kept by the holder alone
        clock.now += 9.0
        assert registry.renew_holder("copies-of-dc2") == 3
        registry.expire()
    assert await _ids(registry, sid) == {"i1", "i2", "i3"}
    listed, _ = await registry.list_instances(sid)  # a held instance keeps its own shape
    assert all(i["healthCheck"] == {"mode": "push", "interval": 10, "times": 0} for i in listed)


async def test_a_lapsed_holder_expires_its_instances_exactly_a_ttl_after_its_last_renewal(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    await registry.register_instance(sid, instance(1, interval=10), holder="h")
    await registry.register_instance(sid, instance(2, interval=20), holder="h")
    clock.now += 8.0
    assert registry.renew_holder("h") == 2  # at 1008: i1 runs to 1018, i2 to 1028
    clock.now = 1017.999
    assert registry.expire() == 0
    clock.now = 1018.0
    assert registry.expire() == 1
    assert await _ids(registry, sid) == {"i2"}
    clock.now = 1027.999
    assert registry.expire() == 0
    clock.now = 1028.0
    assert registry.expire() == 1
    assert registry.renew_holder("h") == 0  # holds none any more


async def test_a_holder_never_shortens_an_instances_own_lease(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    await registry.register_instance(sid, instance(1, interval=10), holder="h")
    registry.renew_holder("h")  # at 1000: to 1010
    clock.now = 1008.0
    await registry.heartbeat(sid, "i1")  # its own lease: to 1018
    clock.now = 1017.999
    assert registry.expire() == 0
    clock.now = 1018.0
    assert registry.expire() == 1


async def test_per_instance_heartbeats_keep_working_on_held_instances(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    await registry.register_instances([(sid, instance(1)), (sid, instance(2))], holder="h")
    for _ in range(4):  # the holder is never renewed: i1 lives by its heartbeats
        clock.now += 9.0
        answers = await registry.heartbeat_set([(sid, "i1")])
        assert answers[0]["errMessage"] == ""
        registry.expire()
    assert await _ids(registry, sid) == {"i1"}
    assert registry.renew_holder("h") == 1


async def test_the_count_follows_unregistrations_expiries_and_replacements(
    registry: EmbeddedRegistry, clock: ManualClock
) -> None:
    sid = await registry.create_service(SERVICE)
    await registry.register_instances([(sid, instance(n)) for n in range(1, 6)], holder="h")
    assert registry.renew_holder("h") == 5
    await registry.register_instances([(sid, instance(1)), (sid, instance(2))], holder="h")
    assert registry.renew_holder("h") == 5  # registered again under it: counted once
    await registry.unregister_instance(sid, "i1")
    assert registry.renew_holder("h") == 4
    await registry.register_instance(sid, instance(2))  # again, without a holder: let go
    await registry.register_instance(sid, instance(3, interval=5), holder="other")
    assert (registry.renew_holder("h"), registry.renew_holder("other")) == (2, 1)
    await registry.heartbeat_set([(sid, "i2"), (sid, "i9")], holder="h")  # held again
    assert (registry.renew_holder("h"), registry.renew_holder("other")) == (3, 1)
    clock.now += 5.0
    assert registry.expire() == 1  # i3: "other" renewed at 1000, TTL 5 s
    assert registry.renew_holder("other") == 0
    await registry.delete_service(sid, force=True)
    assert registry.renew_holder("h") == 0
    assert registry.instance_count() == 0


async def test_holders_are_per_tenant(registry: EmbeddedRegistry, clock: ManualClock) -> None:
    sid = await registry.create_service(SERVICE)
    other = await registry.create_service(SERVICE, project="p2")
    await registry.register_instance(sid, instance(1), holder="h")
    await registry.register_instance(other, instance(2), holder="h", project="p2")
    clock.now += 9.0
    assert registry.renew_holder("h") == 1  # the default tenant's only
    clock.now += 1.0
    assert registry.expire() == 1
    assert registry.instance_count(project="p2") == 0
    assert registry.instance_count() == 1


async def test_a_holder_must_be_a_non_empty_string(registry: EmbeddedRegistry) -> None:
    sid = await registry.create_service(SERVICE)
    with pytest.raises(RegistryError):
        await registry.register_instance(sid, instance(1), holder="")
    with pytest.raises(RegistryError):
        registry.renew_holder("")


def test_random_holder_renewals_expire_exactly_on_time() -> None:
    """The wheel's invariant with holders: never early, never later than the first call."""
    rng = random.Random(23)
    clock = ManualClock(500.0)
    queue = LeaseQueue(clock)
    held: dict[int, Lease] = {}

    def current(lease: Lease) -> bool:
        return held.get(int(lease.service_id)) is lease

    for _ in range(3000):
        clock.now += rng.choice([0.0, 0.01, 0.13, 0.5, 1.0, 2.7])
        action = rng.random()
        number = rng.randrange(200)
        holder = rng.choice([None, "a", "b"])
        if action < 0.35:
            ttl = {"healthCheck": {"interval": rng.choice([1, 2, 3]), "times": rng.choice([0, 1])}}
            held[number] = queue.grant(ttl, held.get(number), SCOPE, str(number), holder)
        elif action < 0.5 and number in held:
            queue.renew(held[number])
        elif action < 0.75:
            queue.renew_holder(SCOPE, rng.choice(["a", "b"]))
        elif number in held:
            queue.release(held.pop(number))  # unregistered: its queued entry is stale
        gone = [*queue.expired(current)]
        while queue.behind():
            gone += queue.expired(current)
        for lease in gone:
            assert lease.until() <= clock.now  # never early
            queue.release(held.pop(int(lease.service_id)))
        assert all(lease.until() > clock.now for lease in held.values())  # never late
        for name in ("a", "b"):  # the counts are exact
            count = sum(1 for lease in held.values() if lease.holder and lease.holder.name == name)
            assert queue.holding(SCOPE, name) == count
