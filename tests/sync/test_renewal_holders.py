"""Renewal rounds through an adapter that renews copies per origin (RenewsByHolder): one
call per origin when the registry holds what the index holds, the copies one by one only
for an origin whose count differs (a copy deleted behind the syncer's back is found lost;
copies the syncer no longer holds are let go), and never for a batch caught between its
registry write and its index update, nor under an importer's steady churn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pysyncer.adapters.base import LocalRef, RenewResult
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record, ServiceKey
from pysyncer.servicecenter import EmbeddedRegistry
from pysyncer.store.sqlite import SqliteStore
from pysyncer.sync import renewals as renewals_module
from pysyncer.sync.copyindex import CopyIndex, copy_instance_id
from pysyncer.sync.importer import Importer
from pysyncer.sync.renewals import LostCopies, Renewals
from tests.support.servicecenter import ManualClock

pytestmark = pytest.mark.timeout(30)

SERVICE = ServiceKey("shop", "cart", "1.0.0")
PERIOD = 0.4


class Recording(EmbeddedAdapter):
    """The embedded adapter, recording what each renewal call renewed."""

    def __init__(self, registry: EmbeddedRegistry) -> None:
        super().__init__(registry)
        self.calls: list[tuple[str, str, int]] = []  # (method, origin, copies)
        self.before_renew_origin: list[Callable[[], None]] = []  # one per call, in order

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        self.calls.append(("renew", "", len(refs)))
        return await super().renew(refs)

    async def renew_origin(self, origin_dc: str) -> int:
        self.calls.append(("renew_origin", origin_dc, 1))
        if self.before_renew_origin:
            self.before_renew_origin.pop(0)()
        return await super().renew_origin(origin_dc)

    async def renew_held(
        self, origin_dc: str, refs: Sequence[LocalRef], *, anew: bool = False
    ) -> list[RenewResult]:
        self.calls.append(("renew_held" + (" anew" if anew else ""), origin_dc, len(refs)))
        return await super().renew_held(origin_dc, refs, anew=anew)

    def one_by_one(self) -> list[tuple[str, str, int]]:
        return [call for call in self.calls if call[0] != "renew_origin"]


class Stats:
    renewals = 0

    def error(self, kind: str) -> None:
        raise AssertionError(kind)


class Side:
    """A registry (on a fake clock unless ``real_time``), the recording adapter, an index
    and its renewals."""

    def __init__(self, *, real_time: bool = False) -> None:
        self.clock = ManualClock()
        self.registry = EmbeddedRegistry() if real_time else EmbeddedRegistry(clock=self.clock)
        self.adapter = Recording(self.registry)
        self.index = CopyIndex()
        self.lost: LostCopies = []
        self.refs: dict[int, LocalRef] = {}
        self.renewals = Renewals(self.adapter, self.index, Stats(), set(), self._on_lost)

    async def _on_lost(self, lost: LostCopies) -> None:
        self.lost += lost

    async def write(self, origin_dc: str, numbers: range, *, index: bool = True) -> list[int]:
        """Register copies of ``origin_dc`` (TTL 8 s) and, with ``index``, hold them."""
        copies = [
            Instance(
                SERVICE,
                copy_instance_id(origin_dc, f"o{n}"),
                f"h{n}",
                (f"rest://10.0.0.1:{n}",),
                properties={ORIGIN_DC_PROPERTY: origin_dc, ORIGIN_ID_PROPERTY: f"o{n}"},
                health_interval=2,
            )
            for n in numbers
        ]
        refs = await self.adapter.register_many(copies)
        keys = []
        for n, ref in zip(numbers, refs, strict=True):
            assert isinstance(ref, LocalRef)
            key_hash = int(copy_instance_id(origin_dc, f"o{n}")[2:], 16)
            self.refs[key_hash] = ref
            if index:
                self.index.add(key_hash, origin_dc, SERVICE, 7, n + 1, ref)
            keys.append(key_hash)
        return keys

    async def round(self) -> int:
        return await self.renewals.round(self.index.mark(), PERIOD)

    async def lost_keys(self) -> list[int]:
        """The key hashes handed to on_lost (handed over in the background)."""
        while not self.lost:
            await asyncio.sleep(0.01)
        return [key for key, _ in self.lost]

    async def listed(self) -> set[str]:
        return {i.instance_id for i in await self.adapter.list_instances()}


@pytest.fixture(autouse=True)
def quick_rechecks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renewals_module, "RENEW_TICK", 0.01)
    monkeypatch.setattr(renewals_module, "RENEW_STARTUP_DELAY", 0.01)


async def test_rounds_after_the_first_renew_one_holder_per_origin() -> None:
    side = Side()
    await side.write("dc2", range(30))
    await side.write("dc3", range(20))
    assert await side.round() == 50  # the first round: one by one, held from now on
    assert {call[0] for call in side.adapter.calls} == {"renew_held"}
    side.adapter.calls.clear()
    for _ in range(6):  # 6 s of 8 s leases: kept by the holders alone
        side.clock.now += 1.0
        assert await side.round() == 50
    assert side.adapter.one_by_one() == []
    assert sorted(side.adapter.calls) == sorted([("renew_origin", "dc2", 1)] * 6) + sorted(
        [("renew_origin", "dc3", 1)] * 6
    )
    side.clock.now += 3.0  # 9 s after the copies were registered
    assert side.registry.expire() == 0
    assert len(await side.listed()) == 50
    assert side.lost == []


async def test_an_expired_origin_is_not_renewed_and_its_copies_lapse() -> None:
    side = Side()
    await side.write("dc2", range(3))
    await side.write("dc3", range(3, 5))
    await side.round()
    side.renewals.expired_origins.add("dc3")  # type: ignore[attr-defined]
    for _ in range(9):
        side.clock.now += 1.0
        await side.round()
    assert ("renew_origin", "dc3", 1) not in side.adapter.calls
    side.registry.expire()
    assert await side.listed() == {copy_instance_id("dc2", f"o{n}") for n in range(3)}


async def test_a_copy_deleted_from_the_registry_is_found_lost_by_a_round_of_its_origin() -> None:
    side = Side()
    keys = await side.write("dc2", range(10))
    await side.write("dc3", range(10, 15))
    await side.round()
    await side.round()  # the copies are a round old: the next rounds' marks include them
    side.adapter.calls.clear()
    deleted = side.refs[keys[4]]
    await side.registry.unregister_instance(deleted.service_id, deleted.instance_id)
    await side.round()
    assert await side.lost_keys() == [keys[4]]
    # Only dc2's copies, one by one, and with its holder kept (it held fewer, not more).
    assert side.adapter.one_by_one() == [("renew_held", "dc2", 10)]
    await side.renewals.close()


async def test_copies_no_longer_held_by_the_index_are_let_go() -> None:
    """A copy this syncer stopped holding without unregistering it (its slot was handed
    over) is no longer renewed: the holder is started afresh with the index's copies."""
    side = Side()
    keys = await side.write("dc2", range(6))
    await side.round()
    await side.round()
    side.index.remove(keys[0])  # released
    side.adapter.calls.clear()
    await side.round()
    assert side.adapter.one_by_one() == [("renew_held anew", "dc2", 5)]
    side.adapter.calls.clear()
    for _ in range(9):
        side.clock.now += 1.0
        await side.round()
    assert side.adapter.one_by_one() == []  # the counts agree again
    side.registry.expire()
    assert await side.listed() == {copy_instance_id("dc2", f"o{n}") for n in range(1, 6)}
    assert side.lost == []


async def test_a_batch_between_its_registry_write_and_its_index_update_is_waited_for() -> None:
    side = Side()
    await side.write("dc2", range(5))
    await side.round()
    side.adapter.calls.clear()
    in_flight = await side.write("dc2", range(5, 8), index=False)  # registered, not indexed

    def commit() -> None:
        for n, key_hash in zip(range(5, 8), in_flight, strict=True):
            side.index.add(key_hash, "dc2", SERVICE, 7, n + 1, side.refs[key_hash])

    # The batch commits while the round asks again (after reading the index's count).
    side.adapter.before_renew_origin += [lambda: None, commit]
    assert await side.round() == 8
    assert side.adapter.one_by_one() == []
    assert side.adapter.calls == [("renew_origin", "dc2", 1)] * 3


async def test_the_loop_reregisters_a_deleted_copy_within_about_a_period() -> None:
    """Through the loop (first round one by one, then by holders): a copy an operator
    deleted is handed to on_lost within a couple of periods."""
    side = Side(real_time=True)
    keys = await side.write("dc2", range(4))
    side.renewals.start(PERIOD)
    try:
        while not any(call[0] == "renew_origin" for call in side.adapter.calls):
            await asyncio.sleep(0.01)  # the first round ran; the holder rounds have begun
        ref = side.refs[keys[2]]
        await side.registry.unregister_instance(ref.service_id, ref.instance_id)
        deleted_in = side.index.generation  # the round running (or the last one)
        assert await side.lost_keys() == [keys[2]]
        assert side.index.generation <= deleted_in + 1  # found by the next round
    finally:
        await side.renewals.close()


async def test_copies_loaded_that_the_registry_does_not_know_are_found_lost_at_start() -> None:
    """After a restart the index holds copies from the store that a fresh registry never
    saw (and no holder holds): the loop's first round, one by one, finds them all lost."""
    side = Side(real_time=True)
    keys = [1000 + n for n in range(5)]
    for n, key_hash in enumerate(keys):
        side.index.add(key_hash, "dc2", SERVICE, 7, n + 1, LocalRef("svc", f"px{key_hash:016x}"))
    side.renewals.start(PERIOD)
    try:
        assert sorted(await side.lost_keys()) == keys
        assert side.adapter.calls[0] == ("renew_held", "dc2", 5)
    finally:
        await side.renewals.close()


async def test_an_importer_churning_without_pause_is_renewed_by_holders(tmp_path: Path) -> None:
    """Batches applied back to back: one is nearly always between its registry write and
    its index update (the store's commit runs in a thread meanwhile). The rounds compare
    the counts holding the importer's lock, so no round renews copies one by one."""
    registry = EmbeddedRegistry()
    adapter = Recording(registry)
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    importer = Importer("dc1", adapter, store)
    stop = asyncio.Event()

    def record(n: int) -> Record:
        instance = Instance(SERVICE, f"o{n}", f"h{n}", (f"rest://10.0.0.1:{n}",))
        return Record("dc2", SERVICE, f"o{n}", n + 1, instance)

    async def churn() -> None:
        n = 100
        while not stop.is_set():  # a registration a batch, no pause between
            await importer.apply("dc2", [record(n)], n, "e1")
            n += 1

    await importer.apply("dc2", [record(n) for n in range(100)], 99, "e1")
    churning = asyncio.get_running_loop().create_task(churn())
    try:
        await importer.renewals.round(importer.index.mark(), PERIOD)  # the first: one by one
        adapter.calls.clear()
        for _ in range(5):
            await importer.renewals.round(importer.index.mark(), PERIOD)
        assert adapter.one_by_one() == []
        assert len(adapter.calls) > 5  # the first look differed, a second agreed
    finally:
        stop.set()
        await churning
        await importer.close()
        await store.close()
        registry.close()
