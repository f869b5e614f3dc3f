"""Smoke runs of the capacity benchmarks at tiny sizes, so they do not rot.

``benchmarks.bench_cost`` (one importing syncer, K remote data centers, churn) and
``benchmarks.bench_mesh`` (a full mesh, propagation, anti-entropy rounds) run as
``python -m`` does, with ``--json``; the checks are about what the runs did (copies
arrived, changes applied, slots pulled), never about how fast. Every process the
benchmarks start is stopped by them; each run is bounded by a subprocess timeout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout)
    assert all(isinstance(v, (int, float, str)) for v in report.values()), "not flat"
    return report


def test_bench_cost_measures_each_pool_and_fits_a_line() -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the wire bytes are read with it")
    report = run_benchmark(
        "bench_cost", "--remotes", "1,2", "--instances", "100", "--window", "3",
        "--churn-per-min", "600",
    )  # fmt: skip
    for k in (1, 2):
        assert report[f"k{k}_steady_changes"] == 0
        assert report[f"k{k}_churn_changes"] > 0
        assert report[f"k{k}_churn_errors"] == 0
        # every change made at a remote reached the local syncer as one or two records
        assert report[f"k{k}_churn_applied"] >= report[f"k{k}_churn_changes"] - 2 * k
        assert report[f"k{k}_churn_wire_bytes_per_s"] > report[f"k{k}_steady_wire_bytes_per_s"]
        assert report[f"k{k}_churn_wire_connections"] >= k  # a gRPC link per remote at least
        assert report[f"k{k}_steady_registry_rss_mib"] > 0  # the separate registry process
    for key in ("cpu_share_per_remote", "rss_mib_per_remote", "wire_bytes_per_s_per_remote"):
        assert isinstance(report[f"churn_{key}"], float)


def test_bench_mesh_propagates_everywhere_at_each_rate_and_pulls_only_changed_slots() -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the wire bytes are read with it")
    report = run_benchmark(
        "bench_mesh", "--dcs", "3", "--instances", "200", "--changes", "20", "--rate", "100,50",
        "--ae-slots", "0,5", "--ae-repeats", "1", "--idle-window", "1",
    )  # fmt: skip
    expected = 20 * 3 * 2
    assert report["rates_per_dc"] == "50,100"  # ascending, one phase each in one pool
    for rate in ("r50", "r100"):
        assert report[f"n3_{rate}_copies_expected"] == expected
        assert report[f"n3_{rate}_visible_count"] == expected
        assert report[f"n3_{rate}_gone_count"] == expected
        assert report[f"n3_{rate}_failed"] == 0
    assert report["rate_per_dc"] == 100
    assert report["n3_visible_count"] == report["n3_r100_visible_count"]  # the highest, bare
    assert report["n3_sustainable_rate_per_dc"] in (0, 50, 100)
    assert report["n3_synced_rss_mib_max"] > 0
    assert report["n3_fill_s"] <= report["n3_sync_s"] <= report["n3_sync_bound_s"]
    assert report["n3_ae0_slots_pulled"] == 0
    assert report["n3_ae5_slots_pulled"] == 5
    assert report["n3_ae5_records_pulled"] >= 5
    assert report["n3_ae0_wire_bytes"] > 0  # the digest table still crosses the wire


def test_bench_mesh_admits_the_issue_size_only_where_its_memory_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import bench_mesh

    args = argparse.Namespace(
        instances=100_000, changes=1000, rates=[25.0, 500.0], bound=180.0, sync_bound=0.0
    )
    monkeypatch.setattr(bench_mesh, "mem_available", lambda: 24 << 30)
    need = bench_mesh.preflight(8, args)  # 8 x 100,000 on a 24 GiB machine
    assert need["copies_per_dc"] == 700_000
    assert bench_mesh.sync_bound(8, need, args) >= args.bound
    monkeypatch.setattr(bench_mesh, "mem_available", lambda: 8 << 30)
    with pytest.raises(ValueError, match="needs"):
        bench_mesh.preflight(8, args)


def test_bench_mesh_reports_a_pool_that_does_not_sync_within_its_bound() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_mesh", "--dcs", "2", "--instances", "20000",
         "--sync-bound", "0.5", "--ae-slots", "", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["n2_sync_failed"] == 1
    assert report["n2_copies_mapped_min"] < report["n2_copies_per_dc"]
    assert "n2_visible_p50_ms" not in report  # nothing measured on a pool that did not sync
    assert "did not sync within" in out.stderr


TAKEN_PORT_RUN = """
import socket, sys
import benchmarks.bench_sync as bench_sync
from benchmarks import bench_mesh
taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
picked, pick = [], bench_sync.free_port
def free_port(host="127.0.0.1"):  # the first daemon's admin port is already taken
    picked.append(host)
    return taken.getsockname()[1] if len(picked) == 2 else pick(host)
bench_sync.free_port = free_port
sys.exit(bench_mesh.main(["--dcs", "2", "--instances", "100", "--changes", "5", "--rate", "50",
                          "--ae-slots", "", "--idle-window", "1", "--json"]))
"""


def test_bench_mesh_starts_a_pool_again_when_a_port_was_taken_meanwhile() -> None:
    out = subprocess.run(
        [sys.executable, "-c", TAKEN_PORT_RUN],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "(port taken); starting again" in out.stderr
    report = json.loads(out.stdout)
    assert report["n2_visible_count"] == report["n2_copies_expected"] == 5 * 2


def test_bench_mesh_refuses_a_size_that_cannot_fit() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_mesh", "--dcs", "8", "--instances", "100000000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refused" in out.stderr
