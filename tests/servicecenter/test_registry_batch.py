"""EmbeddedRegistry.register_instances: many registrations in one call, each as by itself."""

from __future__ import annotations

from typing import Any

import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryError
from pysyncer.servicecenter.errors import (
    ERR_INVALID_PARAMS,
    ERR_NOT_ENOUGH_QUOTA,
    ERR_SERVICE_NOT_EXISTS,
)
from pysyncer.servicecenter.feed import Change
from pysyncer.servicecenter.settings import ServiceCenterSettings

pytestmark = pytest.mark.timeout(30)

SERVICES = (
    {"appId": "shop", "serviceName": "orders", "version": "1.0.0"},
    {"appId": "shop", "serviceName": "billing", "version": "2.0.0"},
)


def body(n: int, **extra: Any) -> dict[str, Any]:
    endpoints = [f"rest://10.0.0.{n}:80"]
    return {"instanceId": f"i{n}", "hostName": f"h{n}", "endpoints": endpoints, **extra}


async def services(registry: EmbeddedRegistry) -> list[str]:
    return [await registry.create_service(service) for service in SERVICES]


def shape(change: Change) -> dict[str, Any]:
    """A change as JSON, without what differs between two registries (revision, service
    ids, wall-clock timestamps)."""
    out = dict(change.to_json())
    del out["revision"]
    for part in ("service", "instance"):
        for field in ("serviceId", "timestamp", "modTimestamp"):
            out[part].pop(field, None)
    return out


async def test_a_batch_gives_the_ids_changes_and_leases_of_one_call_each() -> None:
    one, many = EmbeddedRegistry(initial_revision=0), EmbeddedRegistry(initial_revision=0)
    one_ids, many_ids = await services(one), await services(many)
    requests = [(0, body(1)), (1, body(2)), (0, body(3)), (0, body(1, status="DOWN"))]
    requests.append((0, body(3)))  # unchanged: no change (its lease is renewed)
    singly = [await one.register_instance(one_ids[k], b) for k, b in requests]
    batched = await many.register_instances([(many_ids[k], b) for k, b in requests])
    assert batched == singly == ["i1", "i2", "i3", "i1", "i3"]
    assert many.revision() == one.revision() == 2 + 4
    one_feed, many_feed = (await one.changes(2, 0)).changes, (await many.changes(2, 0)).changes
    assert [c.action for c in many_feed] == ["CREATE", "CREATE", "CREATE", "UPDATE"]
    assert [c.revision for c in many_feed] == [c.revision for c in one_feed] == [3, 4, 5, 6]
    assert [shape(c) for c in many_feed] == [shape(c) for c in one_feed]
    assert many.instance_count() == one.instance_count() == 3


async def test_each_failure_is_that_registrations_own_and_the_others_are_written() -> None:
    registry = EmbeddedRegistry(initial_revision=0, settings=ServiceCenterSettings(max_instances=2))
    sid, other = await services(registry)
    answers = await registry.register_instances(
        [
            (sid, body(1)),
            (sid, body(2, hostName="has space")),
            ("no-such-service", body(3)),
            (sid, body(4)),
            (sid, body(5)),  # a third instance of the service: over its quota
            (other, body(6)),
        ]
    )
    assert [answers[k] for k in (0, 3, 5)] == ["i1", "i4", "i6"]
    codes = [a.code if isinstance(a, RegistryError) else a for a in (answers[k] for k in (1, 2, 4))]
    assert codes == [ERR_INVALID_PARAMS, ERR_SERVICE_NOT_EXISTS, ERR_NOT_ENOUGH_QUOTA]
    listed, _ = await registry.list_instances(sid)
    assert sorted(i["instanceId"] for i in listed) == ["i1", "i4"]
    assert registry.revision() == 2 + 3  # two services, three instances: nothing else


async def test_an_unknown_tenant_answers_every_registration_with_its_error() -> None:
    registry = EmbeddedRegistry(initial_revision=0)
    answers = await registry.register_instances(
        [("s", body(1)), ("s", body(2))], domain="nobody", project="nothing"
    )
    codes = [a.code if isinstance(a, RegistryError) else a for a in answers]
    assert codes == [ERR_SERVICE_NOT_EXISTS, ERR_SERVICE_NOT_EXISTS]
    assert ("nobody", "nothing") not in registry.tenants()
    assert await registry.register_instances([]) == []


async def test_handed_over_bodies_keep_their_lists_and_dicts_and_the_same_checks() -> None:
    registry = EmbeddedRegistry()
    service_id = (await services(registry))[0]
    given = body(1, properties={"zone": "a"})
    kept = body(2, properties={"zone": "b"})
    await registry.register_instances([(service_id, given)])
    await registry.register_instances([(service_id, kept)], handed_over=True)
    leases = registry._get("default", "default").instances[service_id]
    copied, held = leases["i1"].instance, leases["i2"].instance
    assert copied["properties"] == given["properties"]
    assert copied["properties"] is not given["properties"]  # the caller's own: copied
    assert copied["endpoints"] is not given["endpoints"]
    assert held["properties"] is kept["properties"] and held["endpoints"] is kept["endpoints"]
    # handed over or not, what is not plain strings is refused the same way
    bad = body(3, properties={"zone": 7})
    answers = await registry.register_instances([(service_id, bad)], handed_over=True)
    assert isinstance(answers[0], RegistryError) and answers[0].code == int(ERR_INVALID_PARAMS)
