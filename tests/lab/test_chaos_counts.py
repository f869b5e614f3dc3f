"""The chaos runner's per-heal catch-up count (lab/chaos.py)."""

from __future__ import annotations

from lab.chaos import pulled_since


def test_slots_pulled_per_heal_count_each_link_and_a_restarted_syncer_from_zero() -> None:
    before = {("dc-b-s1", "dc-a"): (3, 10), ("dc-c-s1", "dc-a"): (1, 4)}
    after = {
        ("dc-b-s1", "dc-a"): (4, 12),  # 2 more
        ("dc-c-s1", "dc-a"): (1, 3),  # restarted since: its counter began again at 0
        ("dc-a-s1", "dc-b"): (1, 5),  # a link that appeared meanwhile
    }
    assert pulled_since(before, after) == 2 + 3 + 5
    assert pulled_since(after, after) == 0
