"""Two syncers that both believe they own a slot (a simulated partition), on a real etcd.

Syncers ``m1`` and ``m2`` of data center B share one registry (embedded, in-process) and
one etcd prefix, each with its own :class:`EtcdStore`, :class:`SlotOwnership` and
:class:`Importer`. Neither runs the ownership loop: each follows the slot table only
when the test calls ``refresh()``, so ``m1`` is made stale simply by not refreshing it
while the table changes (two slots swapped between the members, written through the
Coordinator API, as a leader would after a membership change). Then the same and
conflicting record batches of origin ``dc-a`` go through both:

* every write of the stale ``m1`` raises :class:`FencedError` and writes no mapping;
* the mapping table holds exactly the new owner's (``m2``'s) view of the slot;
* the registry holds exactly one copy per origin instance (deterministic copy ids),
  with the owner's content;
* once ``m1`` refreshes, it releases the slot (and applies none of its records).

And the other way round: a new owner whose store has not heard the previous owner's last
writes yet (its watch held back) neither owns the slot without them nor removes their
copies from the registry as orphans; once its store caught up, it adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record, ServiceKey
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.store.base import SLOT_COUNT, FencedError, MappingEntry, StoreError
from pysyncer.store.etcd import EtcdStore
from pysyncer.store.etcd_client import WatchBatch
from pysyncer.sync.copyindex import copy_instance_id
from pysyncer.sync.importer import Importer
from pysyncer.sync.ownership import SlotOwnership
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix

__all__ = ["etcd_server"]

pytestmark = [pytest.mark.needs_server("etcd"), pytest.mark.timeout(60)]

ORIGIN = "dc-a"
MEMBER_TTL = 10.0  # long: leases must not lapse during the test (nothing refreshes them late)


def service_in(slots: frozenset[int], stem: str) -> ServiceKey:
    """A service whose slot is one of ``slots`` (its name is ``stem-N``)."""
    for n in range(100_000):
        key = ServiceKey("shop", f"{stem}-{n}", "1.0.0")
        if key.slot in slots:
            return key
    raise AssertionError("no service name found for these slots")


def live(service: ServiceKey, iid: str, host: str, revision: int) -> Record:
    instance = Instance(service, iid, host, (f"rest://{host}:80",), health_interval=30)
    return Record(ORIGIN, service, iid, revision, instance)


def gone(service: ServiceKey, iid: str, revision: int) -> Record:
    return Record(ORIGIN, service, iid, revision, None)


class Syncer:
    """One syncer of data center B: its own etcd store, slot ownership and importer."""

    def __init__(self, endpoint: str, prefix: str, node: str, registry: EmbeddedRegistry) -> None:
        self.node = node
        self.store = EtcdStore(endpoint, prefix=prefix, member=node, request_timeout=3.0)
        self.adapter = EmbeddedAdapter(registry)
        self.ownership = SlotOwnership(
            node,
            self.store,
            member_ttl=MEMBER_TTL,
            playback=self._playback,
            release=self._release,
        )
        self.importer = Importer("dc-b", self.adapter, self.store, ownership=self.ownership)

    async def _playback(self, slots: frozenset[int]) -> None:
        await self.importer.adopt(slots)

    async def _release(self, slots: frozenset[int]) -> None:
        await self.importer.release(slots)

    async def start(self) -> None:
        """Join and take the current table once; no background refresh (the test drives)."""
        await self.adapter.start()
        await self.store.open()
        await self.importer.start(renew_interval=3600)
        await self.store.join(self.node, {}, MEMBER_TTL)
        await self.ownership.refresh()

    async def close(self) -> None:
        await self.ownership.close()  # leaves: revokes the lease
        await self.importer.close()
        await self.adapter.close()
        await self.store.close()


def hold_watch(store: EtcdStore, flowing: asyncio.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before ``store`` opens: its etcd watch delivers nothing while ``flowing`` is clear
    (a watch running late, as one on a loaded machine does); the other stores' are not held."""
    client = store._client  # this store's own etcd connection, not the class
    watch = client.watch

    async def held(key: bytes, range_end: bytes, start_revision: int) -> AsyncIterator[WatchBatch]:
        async for batch in watch(key, range_end, start_revision):
            await flowing.wait()
            yield batch

    monkeypatch.setattr(client, "watch", held)


@contextlib.asynccontextmanager
async def data_center(
    endpoint: str, *, m2_watch: tuple[asyncio.Event, pytest.MonkeyPatch] | None = None
) -> AsyncIterator[tuple[Syncer, Syncer, EmbeddedRegistry]]:
    """Two started syncers of one data center, each owning half the slots; with
    ``m2_watch``, m2's store watch is held while its event is clear (:func:`hold_watch`)."""
    prefix = unique_prefix()
    registry = EmbeddedRegistry()
    m1 = Syncer(endpoint, prefix, "m1", registry)
    m2 = Syncer(endpoint, prefix, "m2", registry)
    if m2_watch is not None:
        hold_watch(m2.store, *m2_watch)
    try:
        await m1.start()  # the oldest lease: m1 leads, writes the table
        await m2.start()
        await m1.ownership.refresh()  # the leader rebalances over two members
        await m2.ownership.refresh()  # m2 follows: gains its half, plays it back
        yield m1, m2, registry
    finally:
        for syncer in (m1, m2):
            with contextlib.suppress(Exception):
                await syncer.close()
        registry.close()


async def copies_in(adapter: EmbeddedAdapter) -> dict[str, list[Instance]]:
    """origin id -> the copies of it in the registry (two would be a duplicate)."""
    found: dict[str, list[Instance]] = {}
    for instance in await adapter.list_instances():
        if instance.properties.get(ORIGIN_DC_PROPERTY) == ORIGIN:
            found.setdefault(instance.properties[ORIGIN_ID_PROPERTY], []).append(instance)
    return found


async def mappings(store: EtcdStore, slots: frozenset[int]) -> dict[str, MappingEntry]:
    """The mapping table of these slots as etcd holds it (read by a fresh store)."""
    return {e.origin_instance_id: e for e in await store.mappings_in_slots(slots, ORIGIN)}


async def test_a_stale_owner_is_fenced_and_the_owner_view_wins(etcd_server: EtcdServer) -> None:
    async with data_center(etcd_server.endpoint) as (m1, m2, _):
        mine1, mine2 = m1.ownership.owned_slots(), m2.ownership.owned_slots()
        assert len(mine1) + len(mine2) == SLOT_COUNT and not mine1 & mine2
        assert m1.ownership.epoch == m2.ownership.epoch
        contested = service_in(mine1, "contested")  # m1's now, m2's after the swap
        swapped = service_in(mine2, "swapped")  # m2's now, m1's after the swap
        kept = service_in(mine1 - {contested.slot}, "kept")  # m1's throughout

        # Both stream the same origin batch: each applies only its own slots.
        first = [
            live(contested, "x1", "10.0.0.1", 1),
            live(contested, "x2", "10.0.0.2", 2),
            live(contested, "x3", "10.0.0.3", 3),
            live(swapped, "y1", "10.0.1.1", 4),
            live(kept, "z1", "10.0.2.1", 5),
        ]
        await m1.importer.apply(ORIGIN, first, 5, "e1")
        await m2.importer.apply(ORIGIN, first, 5, "e1")
        assert m1.importer.stats.not_owned == 1 and m2.importer.stats.not_owned == 4
        assert sorted(await copies_in(m1.adapter)) == ["x1", "x2", "x3", "y1", "z1"]

        # The table changes (two slots swapped, epoch + 1); m2 follows, m1 does not.
        stale_epoch = m1.ownership.epoch
        table = await m2.store.read_slot_table()
        owners = list(table.owners)
        owners[contested.slot], owners[swapped.slot] = "m2", "m1"
        written = await m2.store.write_slot_table(owners, table.revision)
        assert written is not None and written.epoch == stale_epoch + 1
        await m2.ownership.refresh()
        assert m2.ownership.owns(contested.slot) and not m2.ownership.owns(swapped.slot)
        assert m1.ownership.owns(contested.slot) and m1.ownership.epoch == stale_epoch
        assert m2.importer.copies_by_origin() == {ORIGIN: 3}  # x1..x3 adopted, y1 released

        # The same batch through both: m1 fenced (even for the slot it keeps), m2 applies.
        same = [live(contested, "x1", "10.0.0.11", 6), live(kept, "z1", "10.0.2.11", 7)]
        with pytest.raises(FencedError):
            await m1.importer.apply(ORIGIN, same, 7, "e1")
        await m2.importer.apply(ORIGIN, same, 7, "e1")

        # Conflicting batches: m2 has the newer view, the stale m1 a late, older one.
        newer = [live(contested, "x2", "10.0.0.22", 8), gone(contested, "x3", 9)]
        await m2.importer.apply(ORIGIN, newer, 9, "e1")
        older = [
            gone(contested, "x2", 8),  # m2 holds x2 (newer): a stale delete must not win
            live(contested, "x3", "10.0.0.3", 3),  # deleted by m2: must not come back
            live(contested, "x4", "10.0.0.4", 10),  # only m1 saw it: no mapping may appear
        ]
        with pytest.raises(FencedError):
            await m1.importer.apply(ORIGIN, older, 10, "e1")
        assert m1.importer.stats.errors.get("fenced") == 2

        # The mapping table is exactly m2's view (read back from etcd by a fresh store).
        slots = frozenset({contested.slot, kept.slot, swapped.slot})
        async with EtcdStore(etcd_server.endpoint, prefix=m1.store.prefix, member="r") as fresh:
            table_now = await mappings(fresh, slots)
        assert {k: (e.slot, e.digest) for k, e in table_now.items()} == {
            "x1": (contested.slot, same[0].digest),
            "x2": (contested.slot, newer[0].digest),
            "y1": (swapped.slot, first[3].digest),
            "z1": (kept.slot, first[4].digest),  # m1's fenced write of z1 changed nothing
        }
        assert table_now["x1"].local_instance_id == copy_instance_id(ORIGIN, "x1")

        # The registry never holds two copies of one origin instance (deterministic ids).
        held = await copies_in(m2.adapter)
        for origin_id, found in held.items():
            assert [c.instance_id for c in found] == [copy_instance_id(ORIGIN, origin_id)]
        # The owner's renewal and digest repair (here: the origin's full view of the slot)
        # change nothing: the stale writes never reached the registry.
        await m2.importer.renew_all()
        full_view = [same[0], newer[0]]
        await m2.importer.reconcile_slots(ORIGIN, {contested.slot: full_view}, 9, "e1")
        held = await copies_in(m2.adapter)
        assert {k: len(v) for k, v in held.items() if k != "x4"} == dict.fromkeys(
            ("x1", "x2", "y1", "z1"), 1
        )  # x4: m1's stale apply was fenced before the registry
        assert held["x2"][0].host_name == "10.0.0.22"
        repaired = await mappings(m2.store, slots)
        assert {k: e.digest for k, e in repaired.items()} == {
            k: e.digest for k, e in table_now.items()
        }

        # m1 catches up: it releases the contested slot, takes the swapped one.
        await m1.ownership.refresh()
        assert m1.ownership.epoch == written.epoch
        assert not m1.ownership.owns(contested.slot) and m1.ownership.owns(swapped.slot)
        assert m1.ownership.stats.slots_lost == 1 + SLOT_COUNT // 2
        dropped = m1.importer.stats.not_owned
        await m1.importer.apply(ORIGIN, older, 10, "e1")  # the late batch, again: ignored
        assert m1.importer.stats.not_owned == dropped + len(older)
        await m1.importer.apply(ORIGIN, [live(swapped, "y1", "10.0.1.11", 11)], 11, "e1")
        entry = await m1.store.get_mapping(ORIGIN, "y1")
        assert entry is not None and entry.digest != first[3].digest
        assert await m1.store.get_mapping(ORIGIN, "x4") is None


async def test_a_stale_owner_leaves_the_registry_alone(etcd_server: EtcdServer) -> None:
    async with data_center(etcd_server.endpoint) as (m1, m2, _):
        contested = service_in(m1.ownership.owned_slots(), "contested")
        swapped = service_in(m2.ownership.owned_slots(), "swapped")
        first = [live(contested, "x1", "10.0.0.1", 1), live(contested, "x2", "10.0.0.2", 2)]
        await m1.importer.apply(ORIGIN, first, 2, "e1")
        table = await m2.store.read_slot_table()
        owners = list(table.owners)
        owners[contested.slot], owners[swapped.slot] = "m2", "m1"
        assert await m2.store.write_slot_table(owners, table.revision) is not None
        await m2.ownership.refresh()  # m2 adopts x1, x2; m1 stays stale

        newer = [live(contested, "x1", "10.0.0.11", 3)]
        await m2.importer.apply(ORIGIN, newer, 3, "e1")
        older = [
            live(contested, "x1", "10.0.0.1", 1),  # would overwrite m2's newer copy
            gone(contested, "x2", 4),  # would unregister the copy m2 keeps
            live(contested, "x4", "10.0.0.4", 5),  # would leave an orphan copy
        ]
        with pytest.raises(FencedError):
            await m1.importer.apply(ORIGIN, older, 5, "e1")

        held = await copies_in(m2.adapter)
        assert Counter({k: len(v) for k, v in held.items()}) == Counter({"x1": 1, "x2": 1})
        assert held["x1"][0].host_name == "10.0.0.11"
        assert held["x1"][0].instance_id == copy_instance_id(ORIGIN, "x1")


async def test_a_new_owner_waits_for_the_previous_owners_last_writes(
    etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m2 takes a slot while its store has not heard m1's last writes to it yet (the
    etcd store answers mapping reads from a copy its watch keeps, a moment behind etcd):
    it must not own the slot without them, nor remove their copies as orphans."""
    flowing = asyncio.Event()
    flowing.set()
    async with data_center(etcd_server.endpoint, m2_watch=(flowing, monkeypatch)) as (m1, m2, _):
        contested = service_in(m1.ownership.owned_slots(), "contested")
        swapped = service_in(m2.ownership.owned_slots(), "swapped")
        flowing.clear()  # from now on m2's store hears nothing from etcd
        await m1.importer.apply(
            ORIGIN, [live(contested, f"x{n}", f"10.0.0.{n}", n) for n in (1, 2, 3)], 3, "e1"
        )
        table = await m1.store.read_slot_table()
        owners = list(table.owners)
        owners[contested.slot], owners[swapped.slot] = "m2", "m1"
        assert await m1.store.write_slot_table(owners, table.revision) is not None
        assert await m2.store.get_mapping(ORIGIN, "x1") is None  # m1's writes: not seen

        with contextlib.suppress(StoreError):  # may refuse to follow a table it cannot see
            await m2.ownership.refresh()
        assert sorted(await copies_in(m2.adapter)) == ["x1", "x2", "x3"]  # none removed
        assert not m2.ownership.owns(contested.slot)  # not owned without its copies

        flowing.set()  # m2's store catches up: the next refresh adopts the copies
        await m2.ownership.refresh()
        assert m2.ownership.owns(contested.slot)
        assert m2.importer.copies_by_origin() == {ORIGIN: 3}
