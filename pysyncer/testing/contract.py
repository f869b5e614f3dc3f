"""The adapter contract suite: the pytest tests every registry adapter must pass.

Owns the kind-independent behaviour of :class:`pysyncer.adapters.base.Adapter` as seen
through a real (or faithfully faked) registry: idempotent services, copies that read
back equal field for field, renewals and ``not_found``, native changes within the
harness's bound, ``close()`` ending the change stream, ``UnavailableError`` when the
server is gone, loading by name; and, for an adapter that offers them, a change feed
leaving copies out (:class:`~pysyncer.adapters.base.SkipsCopies`) and copies renewed per
origin data center (:class:`~pysyncer.adapters.base.RenewsByHolder`). It builds adapters
only through :func:`pysyncer.adapters.load_adapter` and drives the registry only through a
:class:`~pysyncer.testing.harness.RegistryHarness`; it must not import from ``tests/``
or know any registry kind. Usage (one test module per adapter)::

    class TestEurekaContract(AdapterContract):
        @pytest.fixture
        async def harness(self) -> AsyncIterator[RegistryHarness]:
            h = EurekaHarness()
            await h.start()
            yield h
            await h.stop()

Needs pytest, pytest-asyncio (``asyncio_mode = "auto"``) and pytest-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from pysyncer.adapters import (
    Adapter,
    ChangeBatch,
    ChangeEvent,
    LocalRef,
    NotFoundError,
    Snapshot,
    UnavailableError,
    load_adapter,
)
from pysyncer.adapters.base import RenewsByHolder, SkipsCopies, register_all
from pysyncer.adapters.fieldmap import CANONICAL_STATUSES
from pysyncer.errors import ConfigError
from pysyncer.model import (
    ORIGIN_DC_PROPERTY,
    ORIGIN_ID_PROPERTY,
    Instance,
    ServiceKey,
    is_copy,
    marks_copy,
)
from pysyncer.testing.harness import AppInstance, RegistryHarness

__all__ = ["COPY_SERVICE", "AdapterContract", "EventCollector", "copy_instance"]

TEST_TIMEOUT = 60.0  # seconds, per contract test (pytest-timeout)
COPY_SERVICE = ServiceKey("shop", "orders", "1.0.0", "production")
"""The service of the copies: a full Service-Center shape, so kinds lacking a field carry it."""


def copy_instance(
    instance_id: str,
    *,
    service: ServiceKey = COPY_SERVICE,
    status: str = "UP",
    port: int = 8080,
    endpoints: tuple[str, ...] | None = None,
    interval: int = 20,
    times: int = 2,
) -> Instance:
    """A copy as the importer registers it: origin properties plus some metadata."""
    return Instance(
        service=service,
        instance_id=instance_id,
        host_name=f"host-{instance_id}",
        endpoints=endpoints if endpoints is not None else (f"rest://10.0.0.1:{port}",),
        status=status,
        properties={
            ORIGIN_DC_PROPERTY: "dc-b",
            ORIGIN_ID_PROPERTY: f"origin-{instance_id}",
            "team": "payments",
            "build.tag": "v1-2",
        },
        health_interval=interval,
        health_times=times,
    )


class EventCollector:
    """Consumes ``adapter.changes()`` (or another feed of it) in a task; waits (bounded) for
    a matching event."""

    def __init__(self, adapter: Adapter, feed: AsyncIterator[ChangeBatch] | None = None) -> None:
        self.batches: list[ChangeBatch] = []
        self._new = asyncio.Condition()
        self._task = asyncio.create_task(self._run(adapter.changes() if feed is None else feed))

    async def _run(self, feed: AsyncIterator[ChangeBatch]) -> None:
        async for batch in feed:
            async with self._new:
                self.batches.append(batch)
                self._new.notify_all()

    def events(self) -> list[ChangeEvent]:
        return [e for b in self.batches for e in b.events]

    async def wait_for(self, match: Callable[[ChangeEvent], bool], timeout: float) -> ChangeEvent:
        """The first event (seen so far or later) that matches; TimeoutError after ``timeout``."""

        async def find() -> ChangeEvent:
            async with self._new:
                while True:
                    for event in self.events():
                        if match(event):
                            return event
                    if self._task.done():
                        raise AssertionError("the change stream ended early")
                    await self._new.wait()

        return await asyncio.wait_for(find(), timeout)

    async def first_batch(self, timeout: float = 2.0) -> ChangeBatch | None:
        """The first batch, waiting up to ``timeout`` for it (None if none came)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first(), timeout)
        return self.batches[0] if self.batches else None

    async def _first(self) -> None:
        async with self._new:
            while not self.batches:
                await self._new.wait()

    async def finished(self, timeout: float) -> None:
        """Wait (bounded) for the change iterator to end by itself."""
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def start_collector(adapter: Adapter) -> EventCollector:
    """A collector continuing from a fresh listing (what the exporter does)."""
    await adapter.list_instances()
    collector = EventCollector(adapter)
    await asyncio.sleep(0.1)
    return collector


def _ids(snapshot: Snapshot) -> set[str]:
    return {i.instance_id for i in snapshot}


@pytest.mark.timeout(TEST_TIMEOUT)
class AdapterContract:
    """What every adapter proves against its registry; subclass with a ``harness`` fixture.

    The subclass's ``harness`` fixture yields a started
    :class:`~pysyncer.testing.harness.RegistryHarness` and stops it afterwards.
    """

    @pytest.fixture
    async def adapter(self, harness: RegistryHarness) -> AsyncIterator[Adapter]:
        adapter = self.make_adapter(harness)
        await asyncio.wait_for(adapter.start(), 10)
        try:
            yield adapter
        finally:
            await asyncio.wait_for(adapter.close(), 10)

    @staticmethod
    def make_adapter(harness: RegistryHarness) -> Adapter:
        return load_adapter(harness.kind, harness.addresses(), harness.settings())

    # -- services and copies -----------------------------------------------------------

    async def test_ensure_service_is_idempotent(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        first = await adapter.ensure_service(COPY_SERVICE)
        assert first
        assert await adapter.ensure_service(COPY_SERVICE) == first
        fresh = self.make_adapter(harness)  # no cache: must find, not create again
        await fresh.start()
        try:
            assert await fresh.ensure_service(COPY_SERVICE) == first
        finally:
            await fresh.close()

    async def test_copy_reads_back_equal(self, adapter: Adapter) -> None:
        """The field mapping round trip through the registry: every field comes back."""
        copy = copy_instance("i-1")
        ref = await adapter.register(copy)
        assert ref.service_id == await adapter.ensure_service(copy.service)
        snapshot = await adapter.list_instances()
        listed = {i.instance_id: i for i in snapshot}
        assert "i-1" in listed, sorted(listed)
        got = listed["i-1"]
        assert got.service == copy.service
        assert (got.instance_id, got.host_name) == (copy.instance_id, copy.host_name)
        assert got.endpoints == copy.endpoints
        assert got.status == copy.status
        assert dict(got.properties) == dict(copy.properties)
        assert (got.health_interval, got.health_times) == (copy.health_interval, 2)
        assert got == copy
        assert is_copy(got)
        assert snapshot.ref("i-1") == ref
        assert await adapter.get_instance(ref) == copy

    async def test_every_status_and_shape_round_trips(self, adapter: Adapter) -> None:
        copies = [
            copy_instance(f"s-{status.lower()}", status=status, port=9000 + n)
            for n, status in enumerate(CANONICAL_STATUSES)
        ]
        copies.append(
            copy_instance(
                "multi",
                endpoints=("rest://10.0.0.2:8080", "highway://10.0.0.2:7070"),
                interval=30,
                times=3,
            )
        )
        copies.append(copy_instance("http", endpoints=("http://10.0.0.3:80",)))
        copies.append(
            copy_instance("other-svc", service=ServiceKey("b2b", "Billing-API", "2.1.0", ""))
        )
        refs = [await adapter.register(c) for c in copies]
        listed = {i.instance_id: i for i in await adapter.list_instances()}
        for copy, ref in zip(copies, refs, strict=True):
            assert listed.get(copy.instance_id) == copy
            assert await adapter.get_instance(ref) == copy

    async def test_copies_registered_together_read_back_equal(self, adapter: Adapter) -> None:
        """:func:`register_all` (the adapter's RegistersMany, or one at a time without it):
        one LocalRef per copy, those register() gives, every copy read back equal."""
        copies = [copy_instance(f"b-{n}", port=9100 + n) for n in range(3)]
        copies.append(copy_instance("b-other", service=ServiceKey("b2b", "Ledger", "2.1.0")))
        copies.append(copy_instance("b-0", status="DOWN", port=9100))  # b-0 again, changed
        answers = await register_all(adapter, copies)
        assert all(isinstance(answer, LocalRef) for answer in answers), answers
        assert answers[4] == answers[0]
        snapshot = await adapter.list_instances()
        listed = {i.instance_id: i for i in snapshot}
        for copy, ref in zip(copies[1:], answers[1:], strict=True):
            assert listed.get(copy.instance_id) == copy
            assert snapshot.ref(copy.instance_id) == ref
        assert [await adapter.register(copy) for copy in copies] == answers

    async def test_reregister_overwrites(self, adapter: Adapter) -> None:
        ref = await adapter.register(copy_instance("i-1"))
        changed = copy_instance("i-1", status="DOWN", port=8081)
        assert await adapter.register(changed) == ref
        mine = [i for i in await adapter.list_instances() if i.instance_id == "i-1"]
        assert mine == [changed]
        assert await adapter.get_instance(ref) == changed

    async def test_get_unknown_instance_is_not_found(self, adapter: Adapter) -> None:
        ref = await adapter.register(copy_instance("i-1"))
        with pytest.raises(NotFoundError):
            await adapter.get_instance(LocalRef(ref.service_id, "no-such-instance"))

    async def test_renew_ok_then_not_found_after_loss(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        assert await adapter.renew([]) == []
        live = await adapter.register(copy_instance("i-live"))
        lost = await adapter.register(copy_instance("i-lost"))
        assert [r.status for r in await adapter.renew([live, lost])] == ["ok", "ok"]
        await harness.lose(lost)
        results = await adapter.renew([live, lost])
        assert [r.ref for r in results] == [live, lost]
        assert [r.status for r in results] == ["ok", "not_found"]
        again = await adapter.register(copy_instance("i-lost"))  # the importer's repair
        assert [r.status for r in await adapter.renew([again, live])] == ["ok", "ok"]
        assert await adapter.get_instance(again) == copy_instance("i-lost")

    async def test_an_origins_holder_renews_its_copies_and_counts_them(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        """Copies registered (one by one or together) are held by their origin's holder;
        its count drops when one is unregistered or lost; renewing copies ``anew`` leaves
        the holder holding only those."""
        if not isinstance(adapter, RenewsByHolder):
            pytest.skip(f"the {adapter.name} adapter cannot renew copies per origin")
        origin = copy_instance("h-0").properties[ORIGIN_DC_PROPERTY]
        other = copy_instance("h-x")
        other = other._replace(properties={**other.properties, ORIGIN_DC_PROPERTY: "dc-other"})
        assert await adapter.renew_origin(origin) == 0
        refs = await register_all(adapter, [copy_instance(f"h-{n}") for n in range(3)])
        refs.append(await adapter.register(copy_instance("h-3")))
        await adapter.register(other)
        assert all(isinstance(ref, LocalRef) for ref in refs), refs
        held = [ref for ref in refs if isinstance(ref, LocalRef)]
        assert await adapter.renew_origin(origin) == 4
        assert await adapter.renew_origin("dc-other") == 1
        await adapter.register(copy_instance("h-1", status="DOWN"))  # again: counted once
        assert await adapter.renew_origin(origin) == 4
        await adapter.unregister(held[0])
        await harness.lose(held[1])
        assert await adapter.renew_origin(origin) == 2
        results = await adapter.renew_held(origin, [held[1], held[2]], anew=True)
        assert [r.status for r in results] == ["not_found", "ok"]
        assert await adapter.renew_origin(origin) == 1  # h-3 was not renewed anew
        results = await adapter.renew_held(origin, [held[3]])
        assert [r.status for r in results] == ["ok"]
        assert await adapter.renew_origin(origin) == 2
        assert await adapter.renew_origin("dc-other") == 1

    async def test_unregister_is_idempotent(self, adapter: Adapter) -> None:
        ref = await adapter.register(copy_instance("i-2"))
        keep = await adapter.register(copy_instance("i-3"))
        await adapter.unregister(ref)
        assert _ids(await adapter.list_instances()) >= {"i-3"}
        assert "i-2" not in _ids(await adapter.list_instances())
        await adapter.unregister(ref)
        await adapter.unregister(LocalRef(keep.service_id, "no-such-instance"))
        with pytest.raises(NotFoundError):
            await adapter.get_instance(ref)

    # -- native applications and change detection ---------------------------------------

    async def test_listing_includes_native_instances(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        app = await harness.app_register(
            harness.service("inventory"), "10.1.0.7", 9100, properties={"zone": "az-1"}
        )
        snapshot = await adapter.list_instances()
        listed = {i.instance_id: i for i in snapshot}
        assert app.instance_id in listed, sorted(listed)
        got = listed[app.instance_id]
        _check_native(got, app)
        assert not is_copy(got)
        assert snapshot.ref(app.instance_id).instance_id

    async def test_native_changes_are_seen(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        bound = harness.change_bound
        collector = await start_collector(adapter)
        try:
            app = await harness.app_register(
                harness.service("invoices"), "10.1.0.8", 9200, properties={"tier": "gold"}
            )
            created = await collector.wait_for(
                lambda e: e.kind == "upsert" and e.instance.instance_id == app.instance_id, bound
            )
            _check_native(created.instance, app)
            assert created.ref is not None

            if "status" in harness.features:
                await harness.app_set_status(app, up=False)
                await collector.wait_for(
                    lambda e: (
                        e.kind == "upsert"
                        and e.instance.instance_id == app.instance_id
                        and e.instance.status != "UP"
                    ),
                    bound,
                )
            await harness.app_unregister(app)
            deleted = await collector.wait_for(
                lambda e: e.kind == "delete" and e.instance.instance_id == app.instance_id, bound
            )
            assert deleted.instance.service.name == app.service.name
        finally:
            await collector.stop()

    async def test_copies_are_reported_as_changes(self, adapter: Adapter) -> None:
        collector = await start_collector(adapter)
        try:
            copy = copy_instance("i-seen")
            await adapter.register(copy)
            event = await collector.wait_for(lambda e: e.instance.instance_id == "i-seen", 30)
            assert event.kind == "upsert"
            assert event.instance == copy
        finally:
            await collector.stop()

    async def test_a_feed_without_copies_skips_and_counts_them(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        """Copies (marked, or named by their local id) are left out, deletes included,
        and counted; the test is asked with each entry's properties and local id."""
        if not isinstance(adapter, SkipsCopies):
            pytest.skip(f"the {adapter.name} adapter's change feed cannot leave copies out")
        asked: dict[str, str] = {}  # the "team" property of each entry asked about -> id

        def copy_test(properties: Mapping[str, str], local_id: str) -> bool:
            team = properties.get("team", "")
            asked[team] = local_id
            return marks_copy(properties) or team == "mapped"

        await adapter.list_instances()
        collector = EventCollector(adapter, adapter.changes_without(copy_test))
        try:
            await asyncio.sleep(0.1)
            marked = await adapter.register(copy_instance("i-marked"))
            unmarked = copy_instance("i-mapped")
            unmarked = unmarked._replace(properties={"team": "mapped"})
            mapped = await adapter.register(unmarked)
            app = await harness.app_register(
                harness.service("ledger"), "10.1.0.9", 9300, properties={"team": "native"}
            )
            bound = harness.change_bound
            await collector.wait_for(lambda e: e.instance.instance_id == app.instance_id, bound)
            await adapter.unregister(marked)
            await adapter.unregister(mapped)
            await harness.app_unregister(app)
            await collector.wait_for(
                lambda e: e.kind == "delete" and e.instance.instance_id == app.instance_id, bound
            )
            seen = {e.instance.instance_id for e in collector.events()}
            assert seen == {app.instance_id}, seen
            assert sum(b.skipped for b in collector.batches) >= 2
            assert asked["mapped"] == mapped.instance_id
            assert asked["native"] == app.instance_id
        finally:
            await collector.stop()

    async def test_changes_without_listing_start_with_resync(self, adapter: Adapter) -> None:
        collector = EventCollector(adapter)
        try:
            first = await collector.first_batch(5.0)
            assert first is not None and first.resync
        finally:
            await collector.stop()

    async def test_close_ends_the_change_stream(self, adapter: Adapter) -> None:
        await adapter.list_instances()
        collector = EventCollector(adapter)
        await asyncio.sleep(0.2)
        await adapter.close()
        await collector.finished(5.0)

    # -- failures and loading ----------------------------------------------------------

    async def test_server_stopped_is_unavailable(
        self, adapter: Adapter, harness: RegistryHarness
    ) -> None:
        if "in_process" in harness.features:
            pytest.skip("the registry runs in process: it cannot become unreachable")
        await adapter.register(copy_instance("i-1"))
        await harness.stop()
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(adapter.list_instances(), 30)
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(adapter.register(copy_instance("i-2")), 30)

    async def test_load_adapter_by_name(self, harness: RegistryHarness) -> None:
        adapter = load_adapter(harness.kind, harness.addresses(), harness.settings())
        assert adapter.name == harness.kind
        with pytest.raises(ConfigError):
            load_adapter(
                harness.kind,
                harness.addresses(),
                {**harness.settings(), "no-such-setting-xyz": "1"},
            )


def _check_native(got: Instance, app: AppInstance) -> None:
    assert got.instance_id == app.instance_id
    assert got.service == app.service
    for key, value in app.properties.items():
        assert got.properties.get(key) == value, (key, dict(got.properties))
    assert any(f"{app.host}:{app.port}" in e for e in got.endpoints), got.endpoints
    assert got.status == "UP"
