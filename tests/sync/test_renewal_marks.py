"""Renewal rounds skip the copies written since the previous round began, and no copy
is ever left more than one round without a heartbeat after that (CopyIndex.mark)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pysyncer.adapters.base import LocalRef, RenewResult
from pysyncer.model import ServiceKey
from pysyncer.sync import renewals as renewals_module
from pysyncer.sync.copyindex import CopyIndex
from pysyncer.sync.renewals import Renewals

pytestmark = pytest.mark.timeout(30)

SERVICE = ServiceKey("shop", "cart", "1.0.0")


def _hold(index: CopyIndex, n: int, generation: int = -1) -> int:
    key_hash = 1000 + n
    ref = LocalRef("svc", f"px{key_hash:016x}")
    index.add(key_hash, "dc2", SERVICE, n % 7, n + 1, ref, generation)
    return key_hash


def test_the_first_round_renews_every_copy_and_the_next_skips_the_new_ones() -> None:
    index = CopyIndex()
    old = [_hold(index, n) for n in range(3)]
    assert list(index.mark()) == old
    new = _hold(index, 3, index.generation)
    assert list(index.mark()) == old  # written since the previous round began: skipped
    assert list(index.mark()) == [*old, new]  # one round later: renewed


def test_an_index_empty_at_the_mark_skips_copies_written_after_it() -> None:
    index = CopyIndex()
    assert list(index.mark()) == []
    new = _hold(index, 0, index.generation)
    assert list(index.mark()) == []
    assert list(index.mark()) == [new]


def test_a_lease_set_before_the_mark_moves_the_mark_past_its_copy() -> None:
    """A batch registered before a round began but committed after it: renewed next."""
    index = CopyIndex()
    old = _hold(index, 0)
    index.mark()
    batch_generation = index.generation  # the batch starts writing the registry
    index.mark()  # a round begins meanwhile
    late = _hold(index, 1, batch_generation)
    assert list(index.mark()) == [old, late]


def test_a_copy_loaded_without_a_lease_is_renewed_at_the_next_round() -> None:
    index = CopyIndex()
    index.mark()
    loaded = _hold(index, 0)  # from the store: unknown lease
    assert list(index.mark()) == [loaded]


def test_removals_and_rewrites_keep_the_split_exact() -> None:
    index = CopyIndex()
    a, b, c = (_hold(index, n) for n in range(3))
    index.mark()
    index.remove(a)  # the mark moves one place towards the front
    _hold(index, 0, index.generation)  # a again: now written since the mark
    d = _hold(index, 3, index.generation)
    assert list(index.mark()) == [b, c]
    assert list(index.mark()) == [b, c, a, d]


def test_rewriting_the_newest_copy_at_the_mark_renews_every_copy_next() -> None:
    index = CopyIndex()
    a, b = (_hold(index, n) for n in range(2))
    index.mark()
    _hold(index, 1, index.generation)  # b, the mark, rewritten: the split is lost
    assert sorted(index.mark()) == [a, b]


class _Recorder:
    """An adapter's renew that records, per copy, the rounds (generations) it was renewed in."""

    def __init__(self, index: CopyIndex) -> None:
        self.index = index
        self.renewed: dict[str, list[int]] = {}
        self.on_renew: list[int] = []

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        for ref in refs:
            self.renewed.setdefault(ref.instance_id, []).append(self.index.generation)
        self.on_renew.append(self.index.generation)
        return [RenewResult(ref, "ok") for ref in refs]


async def test_the_loop_renews_a_copy_written_just_after_a_round_began(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Copies written at every moment of the loop's rounds (just after one began among
    them) are each renewed by the round after next at the latest, and by every round
    after that: a copy never waits two periods (half a TTL) for a heartbeat."""
    monkeypatch.setattr(renewals_module, "RENEW_TICK", 0.01)
    monkeypatch.setattr(renewals_module, "RENEW_STARTUP_DELAY", 0.01)
    index = CopyIndex()
    recorder = _Recorder(index)
    written: dict[str, int] = {}  # copy -> the generation its lease was set in

    class _Stats:
        renewals = 0

        def error(self, kind: str) -> None:
            raise AssertionError(kind)

    async def no_loss(lost: object) -> None:
        raise AssertionError(lost)

    renewals = Renewals(recorder, index, _Stats(), set(), no_loss)  # type: ignore[arg-type]
    for n in range(5):
        written[f"px{_hold(index, n, index.generation):016x}"] = index.generation
    renewals.start(0.05)
    try:
        for n in range(5, 60):
            generation = index.generation
            if n % 3 == 0:  # just after a round began
                while index.generation == generation:
                    await asyncio.sleep(0.002)
                generation = index.generation
            key_hash = _hold(index, n, generation)
            written[f"px{key_hash:016x}"] = generation
            await asyncio.sleep(0.013)
        last = index.generation
        while index.generation < last + 3:
            await asyncio.sleep(0.01)
    finally:
        await renewals.close()
    rounds = set(recorder.on_renew)
    for n in range(60):
        local_id = f"px{1000 + n:016x}"
        done = set(recorder.renewed.get(local_id, ()))
        due = {g for g in rounds if g >= written[local_id] + 2}
        assert due and due <= done, (n, written[local_id], sorted(done))
    # (The first round renews every copy: no round began before it.)
    skipped = [i for i, w in written.items() if w > 0 and w + 1 in rounds]
    assert skipped  # the rounds did skip the copies only one round old
    assert all(written[i] + 1 not in recorder.renewed.get(i, ()) for i in skipped)
