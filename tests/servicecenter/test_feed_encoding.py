"""The change feed's cheap paths: records encoded once (FeedEncoder), waits without tasks,
and the HTTP side around them (the feed's body, the routes' order, the middlewares)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer, build_app, feed
from pysyncer.servicecenter.feed import Change, ChangeLog, FeedBatch, FeedEncoder
from pysyncer.servicecenter.rbac import Rbac

pytestmark = pytest.mark.timeout(30)

SERVICE = {"serviceId": "s1", "serviceName": "orders", "version": "1.0.0", "properties": {}}


def instance(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "instanceId": f"i{n}",
        "hostName": f"h{n}",
        "endpoints": [f"rest://10.0.0.{n}:80"],
        "properties": {"zone": "z1", "note": "caf\u00e9 \u2603"},
        **fields,
    }


def counting_encoder(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the feed's JSON encoder by one recording what it encodes."""
    encoded: list[Any] = []
    real: Callable[[Any], str] = feed.encode_json

    def counted(value: Any) -> str:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(feed, "encode_json", counted)
    return encoded


# ------------------------------------------------------------------ FeedEncoder


@pytest.mark.parametrize(
    "value",
    [
        instance(1),
        {"n": [1, -2, 3.25, 1e300, float("nan"), float("inf")], "b": [True, False, None]},
        {1: "int key", "nested": {"deep": [{"x": '\u00e9\n"q"'}]}},
        "text",
        [],
        {},
    ],
)
def test_the_compact_encoder_writes_what_the_stdlib_encoder_writes(value: Any) -> None:
    stdlib = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
    assert feed.encode_json(value) == stdlib(value)


def test_the_compact_encoder_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        feed.encode_json({"a": object()})


@pytest.mark.parametrize(
    "batch",
    [
        FeedBatch(7, False, ()),
        FeedBatch(7, True, ()),
        FeedBatch(3, False, (Change(3, "CREATE", SERVICE, None),)),
        FeedBatch(
            12,
            False,
            (
                Change(10, "CREATE", SERVICE, instance(1)),
                Change(11, "UPDATE", SERVICE, instance(1, status="DOWN")),
                Change(12, "DELETE", SERVICE, instance(2)),
            ),
        ),
    ],
    ids=["idle", "reset", "service-only", "instances"],
)
def test_encoded_batch_is_the_json_of_the_batch(batch: FeedBatch) -> None:
    data = FeedEncoder().batch(batch)
    assert json.loads(data) == batch.to_json()
    assert data.isascii()  # non-ASCII text escaped, as json.dumps does by default


def test_each_record_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = counting_encoder(monkeypatch)
    created, other = instance(1), instance(2)
    batch = FeedBatch(
        4,
        False,
        (
            Change(1, "CREATE", SERVICE, created),
            Change(2, "CREATE", SERVICE, other),
            Change(3, "DELETE", SERVICE, created),  # the same stored record as its CREATE
        ),
    )
    encoder = FeedEncoder()
    first = encoder.batch(batch)
    assert [id(r) for r in encoded] == [id(SERVICE), id(created), id(other)]
    assert encoder.batch(batch) == first  # read again: assembled, nothing encoded
    assert len(encoded) == 3


def test_the_memo_is_bounded_and_keeps_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = counting_encoder(monkeypatch)
    encoder = FeedEncoder(size=2)
    records = [instance(n) for n in range(3)]
    for record in records:
        encoder.record(record)
    assert len(encoder) == 2
    encoder.record(records[2])  # kept
    encoder.record(records[0])  # the oldest made room: encoded again
    assert [r["instanceId"] for r in encoded] == ["i0", "i1", "i2", "i0"]
    with pytest.raises(ValueError):
        FeedEncoder(size=0)


# ------------------------------------------------------------------ ChangeLog waits


async def test_one_change_wakes_every_waiter_and_none_is_left() -> None:
    log = ChangeLog(0, 10)
    waits = [asyncio.create_task(log.wait(10)) for _ in range(5)]
    await asyncio.sleep(0)
    assert log.waiting == 5
    log.record("CREATE", SERVICE, None)
    await asyncio.wait_for(asyncio.gather(*waits), 2)
    assert log.waiting == 0


async def test_a_wait_ends_at_its_timeout_without_waking_the_others() -> None:
    log = ChangeLog(0, 10)
    long = asyncio.create_task(log.wait(10))
    await asyncio.wait_for(log.wait(0.01), 2)
    assert not long.done() and log.waiting == 1
    log.wake()
    await asyncio.wait_for(long, 2)
    assert log.waiting == 0


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    log = ChangeLog(0, 10)
    waiter = asyncio.create_task(log.wait(10))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert log.waiting == 0
    log.record("CREATE", SERVICE, None)  # nobody to wake: no error


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
async def served() -> AsyncIterator[tuple[RegistryServer, aiohttp.ClientSession]]:
    async with (
        RegistryServer(EmbeddedRegistry(initial_revision=0)) as server,
        aiohttp.ClientSession() as session,
    ):
        yield server, session


async def test_the_feed_over_http_is_the_registry_history_read_after_read(
    served: tuple[RegistryServer, aiohttp.ClientSession],
) -> None:
    server, session = served
    registry = server.registry
    service_id = await registry.create_service({"serviceName": "orders", "version": "1.0.0"})
    await registry.register_instance(service_id, instance(1))
    url = f"{server.url}/v4/default/registry/changes"

    async def read() -> tuple[Any, str]:
        async with session.get(url, params={"since": "0", "timeout": "0"}) as response:
            return await response.json(), response.headers["Content-Type"]

    before, content_type = await read()  # encodes the records
    assert content_type == "application/json; charset=utf-8"
    await registry.update_instance_status(service_id, "i1", "DOWN")
    await registry.register_instance(service_id, instance(1, status="DOWN", hostName="h9"))
    await registry.unregister_instance(service_id, "i1")
    expected = (await registry.changes(0, 0)).to_json()
    for _ in range(2):  # the second read is assembled from kept bytes
        body, _ = await read()
        assert body == expected
    assert body["changes"][: len(before["changes"])] == before["changes"]
    assert [(c["action"], (c["instance"] or {}).get("status")) for c in body["changes"]] == [
        ("CREATE", None),
        ("CREATE", "UP"),
        ("UPDATE", "DOWN"),
        ("UPDATE", "DOWN"),
        ("DELETE", "DOWN"),
    ]
    assert body["changes"][1]["instance"]["hostName"] == "h1"  # history, not the last state
    assert body["changes"][3]["instance"]["hostName"] == "h9"


def _sample_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_no_two_routes_match_the_same_path() -> None:
    """The routes are tried busiest first; that order may change only because no path
    matches two patterns."""
    app = build_app(EmbeddedRegistry())
    templates = {r.resource.canonical for r in app.router.routes() if r.resource}
    for template in templates:
        path = _sample_path(template)
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^{}/]+", re.escape(template)) + "$"
        assert re.match(pattern, path)
        matching = [
            other
            for other in templates
            if re.match("^" + re.sub(r"\\\{[^}]+\\\}", "[^{}/]+", re.escape(other)) + "$", path)
        ]
        assert matching == [template]


def test_authorization_is_a_middleware_only_with_rbac() -> None:
    registry = EmbeddedRegistry()
    assert len(build_app(registry).middlewares) == 1
    assert len(build_app(registry, rbac=Rbac({})).middlewares) == 2
