"""A repair's pull ends with the repair: an error of the pull surfaces from the repair,
and a repair the importer stops closes the pull at once (it was left for the garbage
collector to close, the origin meanwhile sending into a stream nobody read)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

import pytest

from pysyncer._core import digest as core_digest
from pysyncer.errors import PysyncerError
from pysyncer.rpc.errors import UnavailableError
from pysyncer.sync import peers as peers_module
from pysyncer.sync.peers import PeerLink

pytestmark = pytest.mark.timeout(30)

SLOTS = list(range(100, 300))


class Origin:
    """Serves its digests and pulls; counts the slots sent, can fail after some."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.table = core_digest.SlotDigestTable()
        for slot in SLOTS:
            self.table.add(slot, slot)
        self.sent = 0
        self.fail_after = fail_after
        self.closed = False

    async def get_digests(self) -> tuple[int, str, bytes]:
        return 7, "e1", self.table.to_bytes()

    async def pull_slots(
        self, slots: Collection[int]
    ) -> AsyncIterator[tuple[int, list[Any], bool]]:
        try:
            for slot in sorted(slots):
                if self.fail_after is not None and self.sent == self.fail_after:
                    raise UnavailableError("127.0.0.1:1: UNAVAILABLE: gone", "UNAVAILABLE")
                self.sent += 1
                yield slot, [], True
                await asyncio.sleep(0)  # the network: one message per turn
        finally:
            self.closed = True


class Importer:
    """Writes each slot it is given slowly (yielding to the loop, as registry writes do);
    fails at the ``fail_at``-th write when asked to."""

    def __init__(self, origin: Origin, fail_at: int | None = None) -> None:
        self.needs_repair: set[str] = set()
        self.origin = origin
        self.fail_at = fail_at
        self.reconciled: list[int] = []

    def digest_table(self, origin_dc: str) -> Any:
        return core_digest.SlotDigestTable()

    def wants(self, slot: int) -> bool:
        return True

    async def reconcile_slots(
        self, origin_dc: str, slots: Mapping[int, Sequence[Any]], cursor: int, epoch: str
    ) -> None:
        if self.fail_at is not None and len(self.reconciled) == self.fail_at:
            raise PysyncerError("the registry refused the writes")
        for _ in range(20):
            await asyncio.sleep(0)
        self.reconciled += sorted(slots)


class Store:
    async def set_cursor(self, dc: str, revision: int, epoch: str) -> None:
        pass


def link_to(importer: Importer, origin: Origin) -> PeerLink:
    fake_importer: Any = importer
    store: Any = Store()
    dial: Any = lambda _syncer: origin  # noqa: E731
    return PeerLink("dc2", lambda: [], fake_importer, store, dial, anti_entropy_interval=60.0)


@pytest.fixture(autouse=True)
def one_slot_per_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers_module, "REPAIR_BATCH", 1)


async def test_an_error_of_the_pull_surfaces_from_the_repair() -> None:
    origin = Origin(fail_after=5)
    importer = Importer(origin)
    link = link_to(importer, origin)
    with pytest.raises(UnavailableError):
        await link.repair(origin, "e1")  # type: ignore[arg-type]
    assert importer.reconciled == SLOTS[:5]  # what came before the error was written
    assert origin.closed


async def test_a_repair_stopped_by_the_importer_closes_the_pull() -> None:
    origin = Origin()
    importer = Importer(origin, fail_at=2)
    link = link_to(importer, origin)
    with pytest.raises(PysyncerError):
        await link.repair(origin, "e1")  # type: ignore[arg-type]
    assert importer.reconciled == SLOTS[:2]
    assert origin.closed  # the call was freed
    assert origin.sent < len(SLOTS)
