"""Nacos adapter specifics on the Nacos fake: API modes, beats, tokens, expiry, failover.

The fake itself is checked against an independent client, ``nacos-sdk-python`` 2.0.x
(its v1 HTTP ``nacos`` module, run in a thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest

from pysyncer.adapters import (
    ChangeBatch,
    ConflictError,
    UnavailableError,
    load_adapter,
)
from pysyncer.adapters.nacos import NacosAdapter, NacosSettings
from pysyncer.errors import ConfigError
from pysyncer.testing.contract import copy_instance
from tests.support.adapters import dead_address, expect_bad_answers, started
from tests.support.fakes.nacos import FakeNacos, NacosHarness

pytestmark = pytest.mark.timeout(30)

USER, PASSWORD = "nacos", "pw"  # the fake's one account


@pytest.fixture
async def fake() -> AsyncIterator[FakeNacos]:
    async with FakeNacos(users={USER: PASSWORD}, token_ttl=18000) as server:
        yield server


def adapter_for(fake: FakeNacos, *before: str, **settings: Any) -> NacosAdapter:
    """The adapter on ``fake`` (after the addresses ``before``), logged in as its user."""
    base = {"username": USER, "password": PASSWORD, "poll-interval": "0.1"}
    chosen = NacosSettings.from_mapping({**base, **settings})
    return NacosAdapter([*before, fake.address], chosen)


@pytest.mark.filterwarnings("ignore:ssl.:DeprecationWarning")
async def test_sdk_client_accepts_the_fake(fake: FakeNacos) -> None:
    nacos = pytest.importorskip("nacos")
    logging.getLogger("nacos").setLevel(logging.WARNING)

    def run() -> dict[str, Any]:
        client = nacos.NacosClient(
            fake.address, namespace="public", username=USER, password=PASSWORD
        )
        assert client.add_naming_instance(
            "orders", "10.2.0.1", 8080, cluster_name="DEFAULT", metadata={"zone": "a"}
        )
        beat = client.send_heartbeat("orders", "10.2.0.1", 8080, cluster_name="DEFAULT")
        listed = client.list_naming_instance("orders")
        assert client.remove_naming_instance("orders", "10.2.0.1", 8080, cluster_name="DEFAULT")
        after = client.list_naming_instance("orders")
        return {"beat": beat, "listed": listed, "after": after}

    result = await asyncio.to_thread(run)
    assert result["beat"]["code"] == 10200
    hosts = result["listed"]["hosts"]
    assert [(h["ip"], h["port"], h["metadata"]) for h in hosts] == [
        ("10.2.0.1", 8080, {"zone": "a"})
    ]
    assert hosts[0]["instanceId"] == "10.2.0.1#8080#DEFAULT#DEFAULT_GROUP@@orders"
    assert result["after"]["hosts"] == []
    assert fake.logins >= 1


@pytest.mark.parametrize("api", ["v1", "v3"])
async def test_renew_of_a_lost_copy_is_not_found(fake: FakeNacos, api: str) -> None:
    async with started(adapter_for(fake, api=api)) as adapter:
        ref = await adapter.register(copy_instance("c-1"))
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
        fake.forget(lambda g, i: True)
        assert [r.status for r in await adapter.renew([ref])] == ["not_found"]
        path = "/nacos/v1/ns/instance/beat" if api == "v1" else "/nacos/v3/client/ns/instance"
        assert fake.calls[("PUT " if api == "v1" else "POST ") + path] >= 2
        ref2 = await adapter.register(copy_instance("c-1"))
        assert ref2 == ref
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]


async def test_light_beat_is_20404_but_full_beat_recreates(fake: FakeNacos) -> None:
    async with started(adapter_for(fake)) as adapter:
        token = adapter._token
        base = {"serviceName": "DEFAULT_GROUP@@ghost", "accessToken": token}
        light = await adapter.http.request(
            "PUT", "/nacos/v1/ns/instance/beat", params={**base, "ip": "1.1.1.1", "port": "1"}
        )
        assert json.loads(light.body)["code"] == 20404
        full = await adapter.http.request(
            "PUT",
            "/nacos/v1/ns/instance/beat",
            params={**base, "beat": json.dumps({"ip": "1.1.1.1", "port": 1, "cluster": "DEFAULT"})},
        )
        assert json.loads(full.body)["code"] == 10200
        assert [i.ip for _, i in fake.instances()] == ["1.1.1.1"]


async def test_copies_live_for_their_ttl_on_the_nacos_clock(fake: FakeNacos) -> None:
    async with started(adapter_for(fake)) as adapter:
        copy = copy_instance("c-ttl", interval=20, times=2)  # TTL 60 s
        await adapter.register(copy)
        ((_, inst),) = fake.instances()
        assert inst.metadata["preserved.heart.beat.interval"] == "20000"
        assert inst.metadata["preserved.heart.beat.timeout"] == "60000"
        assert inst.metadata["preserved.ip.delete.timeout"] == "60000"
        fake.clock.advance(45)  # a native instance would be gone after 30 s
        assert [i.healthy for _, i in fake.instances()] == [True]
        fake.clock.advance(20)
        assert fake.instances() == []
        # the copy's own preserved.* properties survive the round trip
        own = copy_instance("c-own")
        own = type(own)(
            **{
                **_fields(own),
                "properties": {
                    **own.properties,
                    "preserved.x": "1",
                    "preserved.heart.beat.interval": "7",
                },
            }
        )
        ref = await adapter.register(own)
        assert await adapter.get_instance(ref) == own


def _fields(instance: Any) -> dict[str, Any]:
    return {k: getattr(instance, k) for k in instance._fields}


async def test_native_instances_age_like_nacos(fake: FakeNacos) -> None:
    harness = NacosHarness()
    harness.fake = fake
    harness._session = __import__("aiohttp").ClientSession()
    try:
        app = await harness.app_register(harness.service("legacy"), "10.3.0.1", 7000)
        harness._beats.pop(app.instance_id).cancel()  # the application dies
        fake.clock.advance(16)
        assert [i.healthy for _, i in fake.instances()] == [False]
        adapter = adapter_for(fake)
        await adapter.start()
        try:
            (got,) = await adapter.list_instances()
            assert got.status == "DOWN" and got.health_interval == 5 and got.health_times == 2
        finally:
            await adapter.close()
        fake.clock.advance(15)
        assert fake.instances() == []
    finally:
        await harness._session.close()


async def test_token_refreshed_before_expiry_and_after_403(fake: FakeNacos) -> None:
    fake.token_ttl = 2
    async with started(adapter_for(fake, **{"token-refresh": "0.5"})) as adapter:
        assert adapter.logins == 1
        await adapter.list_instances()
        assert adapter.logins == 1
        await asyncio.sleep(1.1)
        await adapter.list_instances()
        assert adapter.logins == 2  # refreshed before the 2 s TTL ran out
        fake.tokens.clear()  # server restarted: every token unknown
        await adapter.list_instances()
        assert adapter.logins == 3


async def test_bad_login_is_an_error(fake: FakeNacos) -> None:
    adapter = adapter_for(fake, password="wrong")
    with pytest.raises(Exception, match="login"):
        await adapter.start()
    await adapter.close()


async def test_moved_endpoint_keeps_the_ref_and_shared_ports_split_clusters(
    fake: FakeNacos,
) -> None:
    async with started(adapter_for(fake)) as adapter:
        a = await adapter.register(copy_instance("a"))
        b = await adapter.register(copy_instance("b"))  # same 10.0.0.1:8080
        clusters = sorted(i.cluster for _, i in fake.instances())
        assert clusters[0] == "DEFAULT" and clusters[1].startswith("DEFAULT-")
        moved = copy_instance("a", port=9090)
        assert await adapter.register(moved) == a
        assert sorted((i.port, i.cluster == "DEFAULT") for _, i in fake.instances()) == [
            (8080, False),
            (9090, True),
        ]
        await adapter.unregister(b)
        assert [i.port for _, i in fake.instances()] == [9090]
        with pytest.raises(ConflictError):
            await adapter.register(copy_instance("x", endpoints=()))


async def test_namespaces_and_groups_are_separate(fake: FakeNacos) -> None:
    one = adapter_for(fake, namespace="ns-one")
    two = adapter_for(fake, namespace="ns-two", group="OTHER")
    await one.start()
    await two.start()
    try:
        ref = await one.register(copy_instance("n-1"))
        assert ref.service_id == "DEFAULT_GROUP@@orders"
        assert [i.instance_id for i in await one.list_instances()] == ["n-1"]
        assert list(await two.list_instances()) == []
        assert set(fake.services) == {"ns-one"}
    finally:
        await one.close()
        await two.close()


async def test_changes_are_polled(fake: FakeNacos) -> None:
    async with started(adapter_for(fake)) as adapter:
        await adapter.list_instances()
        stream = cast(AsyncGenerator[ChangeBatch, None], adapter.changes())
        task = asyncio.ensure_future(stream.__anext__())
        await adapter.register(copy_instance("p-1"))
        batch = await asyncio.wait_for(task, 5)
        assert [(e.kind, e.instance.instance_id) for e in batch.events] == [("upsert", "p-1")]
        await stream.aclose()


async def test_failover_and_bad_bodies(fake: FakeNacos) -> None:
    adapter = adapter_for(fake, dead_address(), **{"max-body": "100000"})
    await adapter.start()
    try:
        assert adapter.http.current_address.endswith(str(fake.port))
        fake.fail_next = [503]  # rotates to the dead address: both failures reported
        with pytest.raises(UnavailableError, match=r"HTTP 503.*Cannot connect"):
            await adapter.list_instances()
        assert list(await adapter.list_instances()) == []
        await expect_bad_answers(adapter, fake, 100000)
    finally:
        await adapter.close()
    await fake.stop()
    gone = adapter_for(fake)
    with pytest.raises(UnavailableError):
        await gone.start()
    await gone.close()


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"adapter\.api"):
        load_adapter("nacos", ["127.0.0.1:8848"], {"api": "v2"})
    with pytest.raises(ConfigError, match=r"adapter\.poll-interval"):
        load_adapter("nacos", ["127.0.0.1:8848"], {"poll-interval": "soon"})
    with pytest.raises(ConfigError, match=r"adapter\.cluster"):
        load_adapter("nacos", ["127.0.0.1:8848"], {"cluster": "a_b"})
    with pytest.raises(ConfigError, match=r"adapter\.username"):
        load_adapter("nacos", ["127.0.0.1:8848"], {"username": "u"})
    with pytest.raises(ConfigError):
        load_adapter("nacos", [], {})
    adapter = load_adapter("nacos", ["127.0.0.1:8848"], {"api": "v3", "ephemeral": "false"})
    assert isinstance(adapter, NacosAdapter) and adapter.settings.ephemeral is False
