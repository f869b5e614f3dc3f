"""A short seeded chaos run in the reliability lab: real namespaces, shaped links, faults,
churn, and the invariant checker after every heal and all along. It must find nothing.

Needs root, ``ip`` and ``iptables-legacy`` (ci/test.sh installs iptables) and etcd; skipped
with the reason otherwise (failed under CI=true, where they are expected).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.chaos import ChaosConfig, run, table
from lab.net import lab_unavailable
from tests.conftest import IN_CI, require_program

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

SEED = 15  # draws partition-one-way, partition-both, partition-one-way, isolate-past-grace, ...
DURATION = 100.0  # seconds of faults; with start-up and the last check about 2.5 minutes


def test_a_short_seeded_chaos_run_breaks_no_invariant(tmp_path: Path) -> None:
    reason = lab_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    require_program("etcd", "etcd-server")
    config = ChaosConfig(seed=SEED, duration=DURATION, soak=True, workdir=tmp_path, instances=25)
    results = run(config)
    report = table(results)
    print(report)
    assert sum(results.faults.values()) >= 4, report
    assert "isolate-past-grace" in results.faults, report  # origin-grace and its policy
    assert results.policy_expiries > 0, report
    assert results.checks > 0 and results.samples > 0, report
    assert results.violations == [], report
    assert results.duplicates == 0, report
    assert len(results.convergence) == sum(results.faults.values()) + 2, report
