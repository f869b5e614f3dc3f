"""The importer's write budget between real ``pysyncer daemon`` processes.

A new data center B pulls an origin's instances at its bootstrap rate, then follows new
ones at its steady rate; B's importer counts every registration its registry
acknowledged, sampled through ``/v1/sync/status``. The bounds checked hold on any
machine, however loaded: a write counted between two samples happened within the time
from the first request to the second answer, and load can only slow writes down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pysyncer.sync.writebudget import BURST_SECONDS
from tests.support.sync import ORIGIN_ID, SyncDaemon, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

BOOTSTRAP = 100.0  # writes/s while B is caught up
STEADY = 40.0  # writes/s afterwards
FIRST = 400  # instances at the origin before B starts
LATER = 120  # registered at the origin once B is in sync

Sample = tuple[float, float, int, str]  # asked, answered, registered, mode


def sample(daemon: SyncDaemon, into: list[Sample]) -> int:
    """One status sample of ``daemon``'s importer; the copies it holds."""
    asked = time.monotonic()
    status = daemon.status()
    importer = status["importer"]
    into.append((asked, time.monotonic(), int(importer["registered"]), importer["budget"]["mode"]))
    return sum(int(link["copies"]) for link in status["remote"].values())


def assert_paced(samples: list[Sample], rate: float) -> None:
    """Between any two samples, at most a full bucket plus ``rate`` per second elapsed
    (measured from the first request to the second answer), plus the one write in flight."""
    for first, (asked, _, before, _) in enumerate(samples):
        for _, answered, after, _ in samples[first + 1 :]:
            allowed = rate * (BURST_SECONDS + answered - asked) + 1
            assert after - before <= allowed, (after - before, allowed, answered - asked)


def register(origin: SyncDaemon, sid: str, numbers: range) -> None:
    for n in numbers:
        origin.client.register(sid, f"h{n}", [f"rest://10.1.{n // 250}.{n % 250}:80"])


def test_a_new_data_center_fills_its_registry_within_the_budget(tmp_path: Path) -> None:
    origin = SyncDaemon("wa", "127.0.0.81", tmp_path)
    daemons = [origin]
    try:
        eventually(origin.ready, 30, "origin up", origin)
        sid = origin.client.create_service("shop", "paced")
        register(origin, sid, range(FIRST))
        rates = ("--import-rate-bootstrap", str(BOOTSTRAP), "--import-rate-steady", str(STEADY))
        target = SyncDaemon("wb", "127.0.0.82", tmp_path, "--join", origin.bind, *rates)
        daemons.append(target)
        eventually(target.ready, 30, "new data center up", target)

        initial: list[Sample] = []
        eventually(lambda: sample(target, initial) >= FIRST, 60, "initial sync", target, origin)
        assert_paced(initial, BOOTSTRAP)
        assert "bootstrap" in {mode for *_, mode in initial}  # its first sync: caught up
        assert initial[-1][2] >= FIRST

        register(origin, sid, range(FIRST, FIRST + LATER))
        steady: list[Sample] = []
        total = FIRST + LATER
        eventually(lambda: sample(target, steady) >= total, 60, "new instances", target, origin)
        assert_paced(steady, STEADY)
        assert {mode for *_, mode in steady} == {"steady"}  # in sync: a short lag only

        copies = target.client.copies()
        assert len(copies) == total  # converged: every instance once
        assert len({c["properties"][ORIGIN_ID] for c in copies}) == total
        budget = target.status()["importer"]["budget"]
        assert budget["delayed"] > 0 and budget["waited_seconds"] > 0
        assert (budget["bootstrap_rate"], budget["steady_rate"]) == (BOOTSTRAP, STEADY)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
