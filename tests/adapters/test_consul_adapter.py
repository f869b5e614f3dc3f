"""Consul adapter specifics on the Consul fake: Meta encoding, index rules, txn batching,
TTL reaping, error shapes, failover. The fake is checked against ``py-consul``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysyncer.adapters import (
    AdapterError,
    ChangeBatch,
    ConflictError,
    UnavailableError,
    load_adapter,
)
from pysyncer.adapters.consul import ConsulAdapter
from pysyncer.adapters.consul_codec import (
    MAX_META_PAIRS,
    ConsulSettings,
    decode_meta,
    encode_meta,
)
from pysyncer.adapters.consul_watch import next_index
from pysyncer.errors import ConfigError
from pysyncer.model import Instance
from pysyncer.testing.contract import COPY_SERVICE, copy_instance
from tests.support.adapters import dead_address, expect_bad_answers, started
from tests.support.fakes.consul import FakeConsul, validate_meta
from tests.support.waits import eventually

pytestmark = pytest.mark.timeout(30)

TOKEN = "tok"  # the fake's ACL token


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with FakeConsul(token=TOKEN) as server:
        yield server


def adapter_for(fake: FakeConsul, *before: str, **settings: Any) -> ConsulAdapter:
    """The adapter on ``fake`` (after the addresses ``before``), with the fake's token."""
    base = {"token": TOKEN, "wait": "2", "min-query-interval": "0.05"}
    chosen = ConsulSettings.from_mapping({**base, **settings})
    return ConsulAdapter([*before, fake.address], chosen)


# -- Meta encoding -----------------------------------------------------------------------

meta_dicts = st.dictionaries(
    st.text(min_size=0, max_size=160),
    st.text(max_size=700),
    max_size=70,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta_dicts)
def test_meta_round_trips_or_refuses(values: dict[str, str]) -> None:
    try:
        meta = encode_meta(values)
    except ConflictError:
        assert sum(len(v) for v in values.values()) > 20000 or len(values) > 40
        return
    assert validate_meta(meta) == meta  # what Consul accepts
    assert decode_meta(meta) == values


def test_meta_encoding_shapes() -> None:
    meta = encode_meta({"pysyncer.origin.dc": "dc-b", "team": "x", "consul-id": "1", "a_b": "2"})
    assert meta == {
        "_pysyncer": "1",
        "pysyncer_2Eorigin_2Edc": "dc-b",
        "team": "x",
        "_63onsul-id": "1",
        "a_5Fb": "2",
    }
    big = encode_meta({"long": "v" * 600, **{f"k{n}": str(n) for n in range(70)}})
    assert len(big) <= MAX_META_PAIRS and "_pysyncer0" in big
    assert decode_meta(big)["long"] == "v" * 600
    with pytest.raises(ConflictError, match="do not fit"):
        encode_meta({f"k{n}": "v" * 512 for n in range(80)})
    native = {"my_key": "v", "zone": "a"}
    assert decode_meta(native) == native  # unmarked Meta is read as is


def test_next_index_rules() -> None:
    assert next_index(0, 42) == 42
    assert next_index(42, 42) == 42  # timed out: same index, block again
    assert next_index(42, 7) == 0  # backwards: one plain read to start over
    assert next_index(0, 0) == 1  # never 0 again: index 0 does not block
    assert next_index(1, 0) == 1


# -- against the fake --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_py_consul_client_accepts_the_fake() -> None:
    consul = pytest.importorskip("consul")
    fake = FakeConsul()  # no ACLs: py-consul's txn.put sends no token
    await fake.start()

    def run() -> dict[str, Any]:
        c = consul.Consul(host="127.0.0.1", port=fake.port, token="tok")
        c.agent.service.register(
            "web",
            service_id="web-1",
            address="10.4.0.1",
            port=80,
            meta={"zone": "a"},
            check=consul.Check.ttl("10s"),
        )
        c.agent.check.ttl_pass("service:web-1")
        index, services = c.catalog.services()
        _, nodes = c.health.service("web", passing=True)
        blocked_index, _ = c.health.service("web", index=index, wait="100ms")
        c.txn.put(
            [
                {"Node": {"Verb": "set", "Node": {"Node": "n2", "Address": "10.4.0.2"}}},
                {
                    "Service": {
                        "Verb": "set",
                        "Node": "n2",
                        "Service": {"ID": "web-2", "Service": "web", "Port": 81},
                    }
                },
            ]
        )
        _, after_txn = c.health.service("web")
        c.agent.service.deregister("web-1")
        _, after = c.health.service("web")
        return {
            "index": index,
            "services": services,
            "nodes": nodes,
            "blocked": blocked_index,
            "after_txn": after_txn,
            "after": after,
        }

    try:
        r = await asyncio.to_thread(run)
    finally:
        await fake.stop()
    assert r["services"] == {"web": []}
    assert [(n["Service"]["ID"], n["Service"]["Meta"]) for n in r["nodes"]] == [
        ("web-1", {"zone": "a"})
    ]
    assert [c["Status"] for c in r["nodes"][0]["Checks"]] == ["passing"]
    assert int(r["blocked"]) == int(r["index"])  # nothing changed within the wait
    assert sorted(n["Service"]["ID"] for n in r["after_txn"]) == ["web-1", "web-2"]
    assert [n["Service"]["ID"] for n in r["after"]] == ["web-2"]


async def test_ttl_copies_go_critical_and_are_reaped(fake: FakeConsul) -> None:
    async with started(adapter_for(fake)) as adapter:
        ref = await adapter.register(copy_instance("t-1", interval=20, times=2))  # TTL 60 s
        check = fake.nodes[fake.agent_node].checks["service:t-1"]
        assert (check.ttl, check.deregister_after, check.status) == (60, 60, "passing")
        fake.clock.advance(50)
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
        fake.clock.advance(61)
        fake.sweep()
        assert check.status == "critical"
        got = await adapter.get_instance(ref)
        assert got.status == "UP"  # the copy's own status rides in Meta
        fake.clock.advance(95)  # critical > 60 s, and a reaper round has passed
        assert [r.status for r in await adapter.renew([ref])] == ["not_found"]
        # a DOWN copy stays registered and routable-or-not via "warning", never critical
        down = await adapter.register(copy_instance("t-2", status="DOWN"))
        assert fake.nodes[fake.agent_node].checks["service:t-2"].status == "warning"
        assert [r.status for r in await adapter.renew([down])] == ["ok"]
        assert fake.calls["PUT /v1/agent/check/warn/service:t-2"] == 1


async def test_unknown_check_as_legacy_500_is_not_found() -> None:
    async with (
        FakeConsul(legacy_errors=True) as fake,
        started(ConsulAdapter([fake.address])) as adapter,
    ):
        ref = await adapter.register(copy_instance("l-1"))
        fake.forget("l-1")
        assert [r.status for r in await adapter.renew([ref])] == ["not_found"]
        await adapter.unregister(ref)  # 500 "unknown service" is not an error either


async def test_catalog_mode_batches_concurrent_writes_in_txns(fake: FakeConsul) -> None:
    async with started(adapter_for(fake, mode="catalog")) as adapter:
        assert adapter.node == "pysyncer-dc1"
        copies = [copy_instance(f"b-{n}", port=10000 + n) for n in range(100)]
        refs = await asyncio.gather(*(adapter.register(c) for c in copies))
        assert adapter.txns == 4  # 1 node op + 2 ops per copy, <= 64 ops: 31 per txn
        assert fake.calls["PUT /v1/txn"] == 4
        assert len(fake.nodes["pysyncer-dc1"].services) == 100
        listed = {i.instance_id: i for i in await adapter.list_instances()}
        assert all(listed[c.instance_id] == c for c in copies)
        results = await adapter.renew(refs)
        assert {r.status for r in results} == {"ok"}
        assert fake.calls["GET /v1/catalog/node-services/pysyncer-dc1"] == 1
        # one bad copy in a batch: the others still land, the bad one gets its error
        huge = Instance(
            COPY_SERVICE,
            "huge",
            "h",
            ("rest://10.0.0.9:1",),
            "UP",
            {f"k{n}": "v" * 512 for n in range(80)},
        )
        bad_meta = copy_instance("bad")
        results2 = await asyncio.gather(
            adapter.register(huge), adapter.register(bad_meta), return_exceptions=True
        )
        assert isinstance(results2[0], ConflictError)
        await asyncio.gather(*(adapter.unregister(r) for r in refs))
        assert set(fake.nodes["pysyncer-dc1"].services) == {"bad"}


async def test_txn_rollback_isolates_the_failing_copy(fake: FakeConsul) -> None:
    async with started(adapter_for(fake, mode="catalog")) as adapter:
        original = fake._txn_op

        def failing(op: Any) -> None:
            service = op.get("Service", {}).get("Service", {})
            if service.get("ID") == "poison":
                from tests.support.fakes.consul import ConsulError

                raise ConsulError(409, "poisoned")
            original(op)

        fake._txn_op = failing  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(
                adapter.register(copy_instance(i, port=p))
                for p, i in enumerate(["a", "poison", "c"], 1)
            ),
            return_exceptions=True,
        )
        assert isinstance(results[1], ConflictError) and "poisoned" in str(results[1])
        assert set(fake.nodes["pysyncer-dc1"].services) == {"a", "c"}


async def test_index_going_backwards_is_reset_and_changes_still_seen(fake: FakeConsul) -> None:
    async with started(adapter_for(fake)) as adapter:
        await adapter.register(copy_instance("r-1"))
        await adapter.list_instances()
        stream = cast(AsyncGenerator[ChangeBatch, None], adapter.changes())
        fake.rewind()
        await asyncio.sleep(0.3)
        before = fake.calls["GET /v1/health/service/orders"]
        await adapter.register(copy_instance("r-2", port=9999))
        batch = await asyncio.wait_for(stream.__anext__(), 5)
        assert "r-2" in {e.instance.instance_id for e in batch.events}
        assert fake.calls["GET /v1/health/service/orders"] - before <= 4
        await stream.aclose()


async def test_never_spins_on_index_zero(fake: FakeConsul) -> None:
    async with started(adapter_for(fake, **{"min-query-interval": "0.1"})) as adapter:
        await adapter.register(copy_instance("z-1"))
        await adapter.list_instances()
        fake.stuck_index = 0  # a broken server: index 0, never blocks
        stream = cast(AsyncGenerator[ChangeBatch, None], adapter.changes())
        task = asyncio.ensure_future(stream.__anext__())
        before = sum(fake.calls.values())
        await asyncio.sleep(1.0)
        sent = sum(fake.calls.values()) - before
        # two watchers (services + orders) at <= 10 requests/s each
        assert sent <= 24, sent
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()


async def test_new_service_watch_blocks_right_after_its_first_read(fake: FakeConsul) -> None:
    # A long min-query-interval: a watcher that paced its first blocking query would
    # miss the second instance for 8 s (a loaded machine may stall a second or two).
    async with started(adapter_for(fake, **{"min-query-interval": "8"})) as adapter:
        await adapter.list_instances()
        stream = cast(AsyncGenerator[ChangeBatch, None], adapter.changes())
        fresh = dataclasses.replace(COPY_SERVICE, name="fresh")
        await adapter.register(copy_instance("n-1", service=fresh))  # a new service
        seen: set[str] = set()
        while "n-1" not in seen:
            batch = await asyncio.wait_for(stream.__anext__(), 20)
            seen |= {e.instance.instance_id for e in batch.events}
        await adapter.register(copy_instance("n-2", service=fresh, port=9002))
        loop = asyncio.get_running_loop()
        start = loop.time()
        while "n-2" not in seen:
            batch = await asyncio.wait_for(stream.__anext__(), 20)
            seen |= {e.instance.instance_id for e in batch.events}
        assert loop.time() - start < 5.0
        await stream.aclose()


async def test_blocking_queries_use_the_wait_setting(fake: FakeConsul) -> None:
    async with started(adapter_for(fake, wait="1.5")) as adapter:
        await adapter.register(copy_instance("w-1"))
        await adapter.list_instances()
        stream = cast(AsyncGenerator[ChangeBatch, None], adapter.changes())
        task = asyncio.ensure_future(stream.__anext__())
        await eventually(lambda: bool(fake.blocking_waits), 10, "the first blocking query")
        assert set(fake.blocking_waits) == {1.5}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()


async def test_token_datacenter_and_failover(fake: FakeConsul) -> None:
    wrong = adapter_for(fake, token="nope")
    with pytest.raises(AdapterError, match="403"):
        await wrong.start()
        await wrong.list_instances()
    await wrong.close()
    other_dc = adapter_for(fake, datacenter="dc9")
    with pytest.raises(UnavailableError, match="500"):
        await other_dc.start()
    await other_dc.close()
    adapter = adapter_for(fake, dead_address(), **{"max-body": "100000"})
    await adapter.start()
    try:
        assert adapter.http.current_address.endswith(str(fake.port))
        await expect_bad_answers(adapter, fake, 100000)
    finally:
        await adapter.close()


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"adapter\.mode"):
        load_adapter("consul", ["127.0.0.1:8500"], {"mode": "kv"})
    with pytest.raises(ConfigError, match=r"adapter\.wait"):
        load_adapter("consul", ["127.0.0.1:8500"], {"wait": "900"})
    with pytest.raises(ConfigError, match=r"adapter\.deregister-after"):
        load_adapter("consul", ["127.0.0.1:8500"], {"deregister-after": "5"})
    with pytest.raises(ConfigError, match=r"adapter\.colour"):
        load_adapter("consul", ["127.0.0.1:8500"], {"colour": "red"})
    adapter = load_adapter("consul", ["127.0.0.1:8500"], {"mode": "catalog", "node": "n1"})
    assert isinstance(adapter, ConsulAdapter) and adapter.node == "n1"
