"""Long passes over the copy index come in bounded steps: dropping the slots handed to
another syncer looks at no more than a step of copies between two yields (at 1,000,000
copies one pass held the event loop for 0.6 s)."""

from __future__ import annotations

import pytest

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey
from pysyncer.sync.copyindex import CopyIndex

pytestmark = pytest.mark.timeout(30)


def _filled(copies: int, slots: int) -> CopyIndex:
    """``copies`` copies, one service per slot (a group's slot is its service's)."""
    index = CopyIndex()
    for n in range(copies):
        slot = n % slots
        key_hash = 1000 + n
        service = ServiceKey("shop", f"svc-{slot}", "1.0.0")
        index.add(key_hash, "dc2", service, slot, n + 1, LocalRef(f"s{slot}", f"px{key_hash:016x}"))
    return index


def test_dropping_slots_yields_after_every_step_of_copies() -> None:
    index = _filled(95, slots=5)
    progress = list(index.drop_slots_in_steps({0, 1}, step=10))
    # 95 copies looked at, 10 per step: 9 yields between steps and the total at the end
    assert len(progress) == 10
    assert progress == sorted(progress)
    assert progress[-1] == 38
    assert len(index) == 95 - 38
    assert index.counts() == {"dc2": 57}
    assert not index.may_hold("dc2", 0) and index.may_hold("dc2", 2)


def test_a_step_drops_what_the_whole_pass_drops() -> None:
    stepwise, whole = _filled(50, slots=4), _filled(50, slots=4)
    *_, dropped = stepwise.drop_slots_in_steps([3], step=7)
    assert dropped == whole.drop_slots([3]) == 12
    assert stepwise.key_hashes() == whole.key_hashes()
    assert stepwise.digest_table("dc2").to_bytes() == whole.digest_table("dc2").to_bytes()


def test_copies_removed_between_steps_are_skipped() -> None:
    index = _filled(30, slots=3)
    steps = index.drop_slots_in_steps({0}, step=5)
    assert next(steps) == 2  # keys 1000 and 1003 of the first five
    index.remove(1006)  # slot 0, removed by someone else between two steps
    *_, dropped = steps
    assert dropped == 9  # the 10 of slot 0 but the one already gone
    assert len(index) == 20
