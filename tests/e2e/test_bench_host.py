"""Smoke run of ``benchmarks.bench_host`` at a tiny size, so it does not rot.

Two peers of 50 instances, one rate of 20 changes: the run must pin the syncer under
test to its CPU, sync, and have every copy of every change arrive and leave both ways.
The checks are about what the run did, never about how fast; the benchmark stops every
process it starts and the run is bounded by a subprocess timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.test_bench_capacity import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.skipif(not {0, 1} <= os.sched_getaffinity(0), reason="bench_host pins to CPUs 0 and 1")
def test_bench_host_delivers_every_change_into_and_out_of_the_pinned_syncer() -> None:
    report = run_benchmark(
        "bench_host", "--instances", "50", "--peers", "2", "--rate", "20", "--changes", "20",
        "--idle-window", "1", "--bound", "30", timeout=120,
    )  # fmt: skip
    assert report["sync_failed"] == 0
    assert report["u_copies_mapped"] == report["u_copies_expected"] == 100
    assert report["u_pinned"] == report["rest_pinned"] == 1
    assert report["peers_data_in_memory"] == float(Path("/dev/shm").is_dir())
    expected = 2 * 20
    for side in ("in", "out"):
        assert report[f"r20_{side}_expected"] == expected
        for what in ("visible", "gone"):
            assert report[f"r20_{side}_{what}_count"] == expected
            assert report[f"r20_{side}_{what}_p50_ms"] >= 0
    assert report["r20_failed"] == 0
    assert report["r20_measured_expected"] == 20  # the first peer's changes alone
    for what in ("visible", "gone"):
        assert report[f"r20_measured_{what}_count"] == 20
    assert report["r20_load_peers_nice"] == 10  # the second peer goes after the first
    for what in ("visible", "gone"):  # the path split at the origin's commit, every change
        assert report[f"r20_in_origin_{what}_count"] == expected
        assert report[f"r20_in_after_{what}_count"] == expected
        assert report[f"r20_u_origin_{what}_count"] == 20  # U's own REST writes
        assert report[f"r20_composed_{what}_count"] == expected
        assert 0 <= report[f"r20_u_origin_{what}_p50_ms"] <= report[f"r20_u_origin_{what}_p99_ms"]
    assert report["r20_u_cpu_s"] > 0  # U did the work on its own CPU
    assert report["sustainable_rate_per_dc"] in (0, 20)
