"""Two whole sync engines in one event loop: embedded registries, SQLite stores, real gRPC.

The gossip pool is a tiny in-memory implementation of the engine's membership protocol
(:class:`pysyncer.sync.membership.Membership`); each engine follows an embedded service
center started here, as the daemon does; no daemon, no subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from pysyncer.admin.terminal import not_followed_lines
from pysyncer.embeddedregistry import EmbeddedServiceCenter
from pysyncer.gossip.lamport import UserEvent
from pysyncer.gossip.serf import EventType, Member, MemberEvent, MemberStatus, SerfEvent
from pysyncer.hostport import HostPort
from pysyncer.model import ORIGIN_DC_PROPERTY, Instance, is_copy
from pysyncer.store.url import parse_store_url
from pysyncer.sync import tags as sync_tags
from pysyncer.sync.engine import SyncEngine
from pysyncer.sync.filters import Filters, filters_from_config
from pysyncer.sync.settings import RegistrySettings, SyncSettings

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"


class Pool:
    """The members of an in-memory gossip pool and everyone listening to it."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.observers: list[Callable[[SerfEvent], None]] = []
        self.ltime = 0

    def publish(self, event: SerfEvent) -> None:
        loop = asyncio.get_running_loop()
        for observer in list(self.observers):
            loop.call_soon(observer, event)

    def put(self, name: str, tags: Mapping[str, str], kind: EventType) -> None:
        member = Member(name, LOOPBACK, 0, dict(tags), MemberStatus.ALIVE)
        self.members[name] = member
        self.publish(MemberEvent(kind, member))


class PoolView:
    """One member's view of a :class:`Pool`: what the engine's protocol asks for."""

    def __init__(self, pool: Pool, name: str, tags: Mapping[str, str]) -> None:
        self.pool = pool
        self.name = name
        pool.put(name, tags, EventType.MEMBER_JOIN)

    @property
    def tags(self) -> Mapping[str, str]:
        return dict(self.pool.members[self.name].tags)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.pool.put(self.name, tags, EventType.MEMBER_UPDATE)

    def members(self) -> list[Member]:
        return list(self.pool.members.values())

    def subscribe(self, observer: Callable[[SerfEvent], None]) -> Callable[[], None]:
        self.pool.observers.append(observer)
        return lambda: self.pool.observers.remove(observer)

    def user_event(self, name: str, payload: bytes = b"", coalesce: bool = False) -> int:
        self.pool.ltime += 1
        self.pool.publish(UserEvent(self.pool.ltime, name, payload, coalesce))
        return self.pool.ltime


def _settings(dc: str, data_dir: Path, **overrides: object) -> SyncSettings:
    settings = SyncSettings(
        dc=dc,
        node=f"node-{dc}",
        registry=RegistrySettings(urls=(), kind="servicecomb", adapter_settings={}),
        store=parse_store_url("embedded"),
        data_dir=data_dir,
        rpc_addr=HostPort(LOOPBACK, 0),
        member_ttl=10.0,
        anti_entropy_interval=60.0,
        import_rate_bootstrap=0.0,  # unlimited: the budget's own test sets one
        import_rate_steady=0.0,
        change_log_size=1_000,
        origin_grace=3600.0,
        origin_policy="expire",
        filters=Filters(),
    )
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


async def _start(pool: Pool, dc: str, data_dir: Path, **overrides: object) -> SyncEngine:
    """An engine following its own embedded service center, whose pool member advertises
    the gRPC address it really bound (``overrides``: settings other than the defaults)."""
    data_dir.mkdir(parents=True)
    settings = _settings(dc, data_dir, **overrides)
    membership = _LateView(pool, settings)
    registry = EmbeddedServiceCenter(HostPort(LOOPBACK, 0))
    await registry.start()
    # type-checks the view and the registry against the engine's protocols
    engine = SyncEngine(settings, membership, local_registry=registry)
    await engine.start()
    assert engine.rpc is not None
    membership.join(engine.rpc.address)
    return engine


async def _stop(engine: SyncEngine) -> None:
    """Stop the engine, then the registry it followed (as the daemon does)."""
    await engine.stop()
    assert isinstance(engine.local_registry, EmbeddedServiceCenter)
    await engine.local_registry.close()


class _LateView(PoolView):
    """A view that joins the pool only when :meth:`join` is called (after the RPC bound)."""

    def __init__(self, pool: Pool, settings: SyncSettings) -> None:
        self.pool = pool
        self.name = settings.node
        self.dc = settings.dc
        self.extra: dict[str, str] = {}

    @property
    def tags(self) -> Mapping[str, str]:
        member = self.pool.members.get(self.name)
        return dict(member.tags) if member else dict(self.extra)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.name in self.pool.members:
            super().set_tags(tags)
        else:
            self.extra = dict(tags)

    def join(self, rpc_addr: str) -> None:
        tags = {**sync_tags.syncer_tags(self.dc, rpc_addr), **self.extra}
        self.pool.put(self.name, tags, EventType.MEMBER_JOIN)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[SyncEngine, SyncEngine]]:
    pool = Pool()
    a = await _start(pool, "dc-a", tmp_path / "a")
    b = await _start(pool, "dc-b", tmp_path / "b")
    try:
        yield a, b
    finally:
        await _stop(b)
        await _stop(a)


async def _copies(engine: SyncEngine) -> list[Instance]:
    assert engine.adapter is not None
    return [i for i in await engine.adapter.list_instances() if is_copy(i)]


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_an_instance_and_its_delete_cross_between_two_engines(
    engines: tuple[SyncEngine, SyncEngine],
) -> None:
    a, b = engines
    assert isinstance(a.local_registry, EmbeddedServiceCenter)
    registry = a.local_registry.registry
    sid = await registry.create_service(
        {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}
    )
    iid = await registry.register_instance(
        sid, {"hostName": "orders-1", "endpoints": ["rest://10.0.0.1:8080"]}
    )

    async def copied() -> bool:
        return any(
            c.service.name == "orders" and c.properties.get(ORIGIN_DC_PROPERTY) == "dc-a"
            for c in await _copies(b)
        )

    await _eventually(copied)
    assert await _copies(a) == []  # nothing flows back: b has no instance of its own

    await registry.unregister_instance(sid, iid)

    async def removed() -> bool:
        return not await _copies(b)

    await _eventually(removed)


async def test_a_syncer_of_another_sync_protocol_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = Pool()
    engine = await _start(pool, "dc-a", tmp_path / "a")
    try:
        current = sync_tags.syncer_tags("dc-new", "127.0.0.1:1")
        future = {**current, sync_tags.SYNC_PROTO: str(sync_tags.SYNC_PROTOCOL_VERSION + 1)}
        absent = {k: v for k, v in current.items() if k != sync_tags.SYNC_PROTO}
        pool.put("new", future, EventType.MEMBER_JOIN)
        pool.put("old", {**absent, sync_tags.DC: "dc-old"}, EventType.MEMBER_JOIN)
        pool.put("same", {**current, sync_tags.DC: "dc-same"}, EventType.MEMBER_JOIN)
        with caplog.at_level(logging.WARNING, logger="pysyncer.sync.discovery"):
            followed = {s.dc for s in engine.discovery.remote_syncers()}
            engine.discovery.remote_syncers()  # asked again: no second warning
        assert followed == {"dc-same"}
        warnings = [r.getMessage() for r in caplog.records if "not following" in r.getMessage()]
        assert len(warnings) == 2
        assert any("syncer new" in w and "'2'" in w for w in warnings)
        assert any("syncer old" in w and "none advertised" in w for w in warnings)
    finally:
        await _stop(engine)


@pytest.mark.parametrize("policy", ["expire", "remove"])
async def test_copies_gone_under_origin_grace_come_back_as_soon_as_their_origin_does(
    tmp_path: Path, policy: str
) -> None:
    """lab/FINDINGS.md 8: when a data center came back after origin-grace, its copies that
    had lapsed (``expire``: still in the importer's index, so the digests matched) waited
    for a renewal round to find them lost, then for a watch batch to carry the link to a
    repair; under ``remove`` the link resumed its watch and waited for anti-entropy. Now
    the return itself renews, then repairs the slots that differ, on a quiet stream too
    (anti-entropy here is a minute away, renewals a quarter of the copy's TTL)."""
    pool = Pool()
    a = await _start(pool, "dc-a", tmp_path / "a")
    b = await _start(pool, "dc-b", tmp_path / "b", origin_grace=0.5, origin_policy=policy)
    try:
        assert isinstance(a.local_registry, EmbeddedServiceCenter)
        registry = a.local_registry.registry
        sid = await registry.create_service(
            {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}
        )
        await registry.register_instance(
            sid, {"hostName": "orders-1", "endpoints": ["rest://10.0.0.1:8080"]}
        )

        async def copied() -> bool:
            return any(c.service.name == "orders" for c in await _copies(b))

        await _eventually(copied)
        assert b.importer is not None and b.peers is not None
        origin = pool.members["node-dc-a"]  # dc-a drops out of gossip (cut off)
        pool.members["node-dc-a"] = dataclasses.replace(origin, status=MemberStatus.FAILED)
        pool.publish(MemberEvent(EventType.MEMBER_FAILED, pool.members["node-dc-a"]))

        async def past_grace() -> bool:
            return "dc-a" in b.importer.expired_origins  # type: ignore[union-attr]

        await _eventually(past_grace)
        assert b.adapter is not None
        listing = await b.adapter.list_instances()
        for copy in [i for i in listing if is_copy(i)]:  # expire: their leases ran out
            await b.adapter.unregister(listing.ref(copy.instance_id))
        assert not await _copies(b)
        pool.members["node-dc-a"] = origin  # back
        pool.publish(MemberEvent(EventType.MEMBER_JOIN, origin))
        await _eventually(copied, timeout=10.0)
        assert b.peers.links["dc-a"].status.slots_pulled >= 1  # pulled, not fully resynced
    finally:
        await _stop(b)
        await _stop(a)


async def test_a_syncer_follows_only_the_data_centers_it_imports_from(tmp_path: Path) -> None:
    """dc-c imports only from dc-a: a link to dc-a, none to dc-b, whose instance is absent
    from dc-c's registry and whose absence the status explains in one line."""
    pool = Pool()
    only_a = filters_from_config(import_={"include": [{"dc": "dc-a"}]}, dc="dc-c")
    a = await _start(pool, "dc-a", tmp_path / "a")
    b = await _start(pool, "dc-b", tmp_path / "b")
    c = await _start(pool, "dc-c", tmp_path / "c", filters=only_a)
    try:
        for engine, name in ((a, "from-a"), (b, "from-b")):
            assert isinstance(engine.local_registry, EmbeddedServiceCenter)
            registry = engine.local_registry.registry
            sid = await registry.create_service(
                {"appId": "shop", "serviceName": name, "version": "1.0.0"}
            )
            await registry.register_instance(
                sid, {"hostName": f"{name}-1", "endpoints": ["rest://10.0.0.1:8080"]}
            )

        async def both_copied() -> bool:  # into dc-c from dc-a, into dc-a from dc-b
            return [i.service.name for i in await _copies(c)] == ["from-a"] and [
                i.service.name for i in await _copies(a)
            ] == ["from-b"]

        await _eventually(both_copied)
        assert c.peers is not None and a.peers is not None
        assert set(c.peers.links) == {"dc-a"}
        assert set(a.peers.links) == {"dc-b", "dc-c"}  # no rules: it follows everyone
        status = c.status()
        assert status["filters"]["not_followed"] == {
            "dc-b": "no import.include rule applies to data center 'dc-b'"
        }
        assert set(status["remote"]) == {"dc-a"}
        assert not_followed_lines(status) == [
            "dc-b: not followed (no import.include rule applies to data center 'dc-b')"
        ]
        assert a.status()["filters"]["not_followed"] == {}
    finally:
        for engine in (c, b, a):
            await _stop(engine)
