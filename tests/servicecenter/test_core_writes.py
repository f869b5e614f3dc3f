"""The embedded registry's write paths: a refused holder in a batch, unregistering (its
errors, the service's last instance) and the same-endpoints takeover of id-less
registrations through registrations, replacements, unregistrations and expiries."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryError
from pysyncer.servicecenter.errors import (
    ERR_INSTANCE_NOT_EXISTS,
    ERR_INVALID_PARAMS,
    ERR_SERVICE_NOT_EXISTS,
)
from tests.support.servicecenter import SERVICE, ManualClock

pytestmark = pytest.mark.timeout(30)


def body(endpoint: str, instance_id: str = "", interval: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {
        "hostName": "h",
        "endpoints": [endpoint],
        "healthCheck": {"mode": "push", "interval": interval, "times": 0},
    }
    if instance_id:
        out["instanceId"] = instance_id
    return out


async def test_a_refused_holder_answers_every_registration_of_a_batch() -> None:
    registry = EmbeddedRegistry()
    sid = await registry.create_service(SERVICE)
    before = registry.revision()
    answers = await registry.register_instances(
        [(sid, body("rest://a:1", "i1")), ("no-such-service", body("rest://a:2", "i2"))],
        holder="",
    )
    assert [type(a) for a in answers] == [RegistryError, RegistryError]
    assert [a.code for a in answers if isinstance(a, RegistryError)] == [ERR_INVALID_PARAMS] * 2
    assert answers[0] is not answers[1]  # each registration its own error
    assert registry.instance_count() == 0
    assert registry.revision() == before


async def test_unregistering_answers_which_one_is_missing_and_keeps_the_service() -> None:
    registry = EmbeddedRegistry()
    sid = await registry.create_service(SERVICE)
    with pytest.raises(RegistryError) as unknown_service:
        await registry.unregister_instance("no-such-service", "i1")
    assert unknown_service.value.code == ERR_SERVICE_NOT_EXISTS
    with pytest.raises(RegistryError) as unknown_instance:
        await registry.unregister_instance(sid, "i1")
    assert unknown_instance.value.code == ERR_INSTANCE_NOT_EXISTS
    await registry.register_instance(sid, body("rest://a:1", "i1"))
    await registry.unregister_instance(sid, "i1")
    assert (await registry.list_instances(sid))[0] == []
    assert await registry.register_instance(sid, body("rest://a:1", "i1")) == "i1"
    listed, _ = await registry.list_instances(sid)
    assert [i["instanceId"] for i in listed] == ["i1"]


async def test_an_id_less_registration_takes_over_the_first_instance_with_its_endpoints() -> None:
    """Random registrations (with and without ids, moving endpoints, some by a holder),
    unregistrations and expiries: each id-less registration gets the id of the first
    instance, in registration order, holding the same endpoints and renewed by no holder,
    else a new one (Service-Center's rule; a holder's instance is a syncer's copy)."""
    rng = random.Random(17)
    clock = ManualClock()
    registry = EmbeddedRegistry(clock=clock)
    sid = await registry.create_service(SERVICE)
    endpoints = [f"rest://10.0.0.{n}:80" for n in range(6)]
    held: dict[str, str | None] = {}  # each instance's holder as last registered
    for _ in range(400):
        roll = rng.random()
        listed, _ = await registry.list_instances(sid)
        if roll < 0.4:
            endpoint = rng.choice(endpoints)
            holding = [
                i["instanceId"]
                for i in listed
                if i["endpoints"] == [endpoint] and held[i["instanceId"]] is None
            ]
            instance_id = await registry.register_instance(
                sid, body(endpoint, interval=rng.choice((10, 20)))
            )
            if holding:
                assert instance_id == holding[0]
            else:
                assert instance_id not in {i["instanceId"] for i in listed}
            held[instance_id] = None
        elif roll < 0.7:
            instance_id = f"i{rng.randrange(8)}"
            holder = rng.choice((None, "copies of dc2"))
            await registry.register_instance(
                sid, body(rng.choice(endpoints), instance_id), holder=holder
            )
            held[instance_id] = holder
        elif roll < 0.85 and listed:
            await registry.unregister_instance(sid, rng.choice(listed)["instanceId"])
        else:
            clock.now += rng.choice((1.0, 5.0, 11.0))
            registry.expire()


async def test_an_application_never_takes_over_a_held_copy_with_its_endpoints() -> None:
    """A syncer's copy (renewed by a holder) keeps its id and body when an application
    registers the same endpoints without an id: the application gets an id of its own,
    and its re-registration finds that one again."""
    registry = EmbeddedRegistry()
    sid = await registry.create_service(SERVICE)
    copy = body("rest://10.0.0.1:80", "px0000000000000001")
    copy["properties"] = {"pysyncer.origin.dc": "dc2"}
    await registry.register_instance(sid, copy, holder="copies of dc2")
    app = await registry.register_instance(sid, body("rest://10.0.0.1:80"))
    assert app != "px0000000000000001"
    assert await registry.register_instance(sid, body("rest://10.0.0.1:80")) == app
    listed, _ = await registry.list_instances(sid)
    by_id = {i["instanceId"]: i for i in listed}
    assert set(by_id) == {"px0000000000000001", app}
    assert by_id["px0000000000000001"]["properties"] == {"pysyncer.origin.dc": "dc2"}
    # the holder's own id-less registration of those endpoints finds its instance
    again = await registry.register_instance(
        sid, body("rest://10.0.0.1:80"), holder="copies of dc2"
    )
    assert again == "px0000000000000001"
