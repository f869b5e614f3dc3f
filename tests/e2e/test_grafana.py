"""The Grafana dashboard (deploy/grafana/pysyncer.json) queries only what a daemon exports.

Two syncers of two data centers run as subprocesses; once a copy has crossed (so the
per-origin families have samples), every ``pysyncer_*`` metric name in any panel's query
must be a family of the receiving syncer's ``/metrics``. Also checks the file is a
dashboard Grafana can import: unique panel ids, a datasource variable, no overlap.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysyncer.procs import DaemonProcess, RegistryClient, eventually

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pysyncer.json"
METRIC = re.compile(r"\bpysyncer_[a-z0-9_]+")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def queried() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(METRIC.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        names.update(METRIC.findall(json.dumps(variable.get("query", ""))))
    return names


def exported(text: str) -> set[str]:
    """Every sample name /metrics can carry: its samples, and each declared family's."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            names.update(family + suffix for suffix in SUFFIXES)
    return names


@pytest.fixture
def two_dcs(tmp_path: Path) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    a = DaemonProcess("ga", "127.0.0.151", tmp_path, "dc-ga")
    b = DaemonProcess("gb", "127.0.0.152", tmp_path, "dc-gb", "--join", a.bind)
    try:
        for daemon in (a, b):
            eventually(daemon.ready, 60, f"{daemon.name} up", daemon)
        yield a, b
    finally:
        for daemon in (a, b):
            daemon.stop()


def test_the_dashboard_file_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "instance"}
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        mine = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    assert queried() >= {"pysyncer_sync_propagation_seconds_bucket", "pysyncer_sync_copies"}


def test_every_metric_the_dashboard_queries_is_exported(
    two_dcs: tuple[DaemonProcess, DaemonProcess],
) -> None:
    a, b = two_dcs
    registry = RegistryClient(a.registry)
    registry.register(registry.create_service("shop", "grafana"), "g-1", ["rest://10.0.0.3:80"])
    eventually(lambda: b.status()["remote"].get("dc-ga", {}).get("copies") == 1, 60, "a copy", b)
    with urllib.request.urlopen(f"http://{b.admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    missing = sorted(queried() - exported(text))
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"
