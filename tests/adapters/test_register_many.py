"""Many copies registered in one call: the embedded adapter's ``register_many`` (one answer
per copy, as its own register() would give) and ``register_all``'s one-at-a-time fallback
for adapters without it."""

from __future__ import annotations

import pytest

from pysyncer.adapters.base import (
    AdapterError,
    LocalRef,
    NotFoundError,
    RegistersMany,
    UnavailableError,
    capable,
    register_all,
)
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.model import Instance, ServiceKey
from pysyncer.servicecenter import EmbeddedRegistry
from pysyncer.testing.contract import copy_instance

pytestmark = pytest.mark.timeout(30)

ELSEWHERE = ServiceKey("shop", "orders", "1.0.0", project="other/proj")


class OneAtATime(EmbeddedAdapter):
    """The embedded adapter as one without RegistersMany (register_all's fallback)."""

    register_many = None  # type: ignore[assignment]  # not a RegistersMany


async def adapter_of(kind: type[EmbeddedAdapter]) -> EmbeddedAdapter:
    adapter = kind(EmbeddedRegistry())
    await adapter.start()
    assert isinstance(adapter, RegistersMany) is (kind is EmbeddedAdapter)
    return adapter


def bad(instance_id: str) -> Instance:
    """A copy the registry refuses (a host name with a space): 400001."""
    copy = copy_instance(instance_id)
    return Instance(copy.service, instance_id, "has space", copy.endpoints)


async def test_each_copy_gets_its_own_answer_and_the_others_are_written() -> None:
    adapter = await adapter_of(EmbeddedAdapter)
    copies = [copy_instance("c-1"), bad("c-2"), copy_instance("c-3", service=ELSEWHERE)]
    answers = await adapter.register_many(copies)
    assert isinstance(answers[1], AdapterError) and answers[1].code == "400001"
    with pytest.raises(AdapterError) as alone:
        await adapter.register(bad("c-2"))
    assert str(alone.value) == str(answers[1])
    first, third = answers[0], answers[2]
    assert isinstance(first, LocalRef) and isinstance(third, LocalRef)
    assert await adapter.get_instance(first) == copies[0]
    tenant = {"domain": "other", "project": "proj"}
    stored, _ = await adapter.registry.get_instance(third.service_id, "c-3", **tenant)
    assert stored["hostName"] == copies[2].host_name
    assert adapter.registry.instance_count() == 1


async def test_a_service_deleted_meanwhile_is_created_again() -> None:
    adapter = await adapter_of(EmbeddedAdapter)
    before = await adapter.register(copy_instance("c-1"))
    await adapter.registry.delete_service(before.service_id, force=True)
    (after,) = await adapter.register_many([copy_instance("c-2")])
    assert isinstance(after, LocalRef) and after.service_id != before.service_id
    assert await adapter.get_instance(after) == copy_instance("c-2")


async def test_a_closed_adapter_refuses_the_whole_call() -> None:
    adapter = await adapter_of(EmbeddedAdapter)
    await adapter.close()
    with pytest.raises(UnavailableError):
        await adapter.register_many([copy_instance("c-1")])


async def test_one_at_a_time_stops_at_a_failing_registry_but_not_at_a_missing_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = await adapter_of(OneAtATime)
    register = adapter.register

    async def failing(instance: Instance) -> LocalRef:
        if instance.instance_id == "gone":
            raise NotFoundError("no such service")
        if instance.instance_id == "down":
            raise UnavailableError("the registry is down")
        return await register(instance)

    monkeypatch.setattr(adapter, "register", failing)
    ids = ["c-1", "gone", "c-3", "down", "c-5"]
    answers = await register_all(adapter, [copy_instance(i) for i in ids])
    assert [type(a).__name__ for a in answers] == [
        "LocalRef",
        "NotFoundError",
        "LocalRef",
        "UnavailableError",
        "UnavailableError",
    ]
    assert answers[3] is answers[4]
    listed = {i.instance_id for i in await adapter.list_instances()}
    assert listed == {"c-1", "c-3"}  # c-5 was not tried


def test_capable_answers_per_adapter_class() -> None:
    adapter, fallback = EmbeddedAdapter(EmbeddedRegistry()), OneAtATime(EmbeddedRegistry())
    assert capable(adapter, RegistersMany) and not capable(fallback, RegistersMany)
    # Decided per class: another object of a class already seen gets the same answer.
    assert capable(OneAtATime(EmbeddedRegistry()), RegistersMany) is False
