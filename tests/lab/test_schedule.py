"""The chaos runner's fault schedule: a function of its seed, with holds that fit each kind."""

from __future__ import annotations

from lab.chaos import SPECS, ChaosConfig
from lab.faults import KINDS, policy_slack, schedule

DCS = [(spec.etcd, spec.proxy) for spec in SPECS]
TIMING = ChaosConfig(soak=True).timing()


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = schedule(7, 200, DCS, TIMING, 8.0)
    assert first == schedule(7, 200, DCS, TIMING, 8.0)
    assert first != schedule(8, 200, DCS, TIMING, 8.0)
    assert {fault.kind for fault in first} == set(KINDS)  # every kind is drawn


def test_holds_and_targets_fit_each_kind() -> None:
    for fault in schedule(3, 500, DCS, TIMING, 8.0):
        if fault.kind == "isolate-past-grace":
            assert fault.hold > TIMING.origin_grace + policy_slack(TIMING)
        elif fault.kind == "registry-restart":
            assert fault.hold == 0
        elif fault.kind in ("kill-syncer", "pause-syncer"):
            assert fault.hold < TIMING.instance_ttl
        if fault.kind.startswith(("kill-leader", "etcd-")):
            assert SPECS[fault.dc - 1].etcd
        if fault.kind.startswith("proxy-"):
            assert SPECS[fault.dc - 1].proxy
        if fault.kind.startswith(("partition", "loss")):
            assert fault.other not in (0, fault.dc)


def test_only_restricts_the_kinds() -> None:
    only = ("partition-both", "kill-leader")
    assert {f.kind for f in schedule(1, 100, DCS, TIMING, 8.0, only)} == set(only)
