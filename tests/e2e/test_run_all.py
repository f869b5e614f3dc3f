"""The benchmark suite's driver, ``benchmarks.run_all``: a smoke run at tiny sizes into a
temporary directory (results file, PNG, docs block; never the repository's docs), a
failing step reported in one line, and the committed docs block equal to what its
committed results file renders. Checks are about what was written, never how fast.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _plots, run_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_writes_results_a_figure_and_the_docs_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"# page\n\n{_plots.BEGIN}\n{_plots.END}\n\nafter\n")
    out, img = tmp_path / "results" / "smoke.json", tmp_path / "img"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--smoke", "--only", "full-sync,gossip",
         "--out", str(out), "--img-dir", str(img), "--doc", str(doc)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sizes = run_all.MODES["smoke"].full_sync
    steps = len(sizes) + 1
    assert f"[1/{steps}] bench_sync full {sizes[0]:,} ... " in done.stdout
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert [s["figure"] for s in report["steps"]] == ["full-sync"] * len(sizes) + ["gossip"]
    assert all(s["ok"] for s in report["steps"]), report["steps"]
    synced = [s["result"]["full_sync"] for s in report["steps"][:-1]]
    assert [r["instances"] for r in synced] == list(sizes)
    assert all(r["sync_s"] > 0 for r in synced)
    assert (img / _plots.FULLSYNC_PNG).read_bytes()[:8] == PNG_MAGIC
    block = _plots.read_block(doc)
    assert f"| {sizes[0]:,} |" in block
    assert f"]({img.name}/{_plots.FULLSYNC_PNG})" in block
    assert doc.read_text().endswith("\n\nafter\n")
    # the block is drawn from the results file alone: redrawing it changes nothing
    again = run_all.main(["--from-json", str(out), "--img-dir", str(img), "--doc", str(doc)])
    assert again == 0
    assert _plots.read_block(doc) == block


def test_a_failing_step_is_one_line_and_the_run_goes_on(tmp_path: Path) -> None:
    missing = run_all.Step("gossip", "no such benchmark", "bench_no_such_module", (), 1.0)
    gossip = run_all.Step("gossip", "bench_gossip", "bench_gossip", ("--sizes", "5"), 1.0)
    report = run_all.run_suite("smoke", [missing, gossip], tmp_path / "r.json")
    failed, ok = report["steps"]
    assert not failed["ok"]
    assert "\n" not in failed["error"]
    assert failed["error"].startswith("exit 1: ")
    assert "bench_no_such_module" in failed["error"]
    assert ok["ok"]
    assert "5" in ok["result"]["sizes"]
    assert json.loads((tmp_path / "r.json").read_text()) == report


def test_the_last_printed_object_is_the_result() -> None:
    printed = 'starting\n{"a": 1}\nnoise {"b": 2}\n{\n  "c": {"d": 3}\n}\n'
    assert run_all.parse_json(printed) == {"c": {"d": 3}}
    with pytest.raises(ValueError, match="no JSON object"):
        run_all.parse_json("nothing here\n")


def test_the_committed_docs_block_is_what_its_results_file_renders() -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    block = _plots.read_block(doc)
    named = re.search(r"from `(benchmarks/results/[\w.-]+\.json)`", block)
    assert named, "the generated block names no results file"
    source = ROOT / named.group(1)
    report = json.loads(source.read_text())
    assert _plots.render_markdown(report, source, ROOT / "docs" / "img", doc) == block


def test_no_docs_leaves_the_figures_and_the_doc_alone(tmp_path: Path) -> None:
    img, doc = tmp_path / "img", tmp_path / "doc.md"
    doc.write_text(f"{_plots.BEGIN}\n{_plots.END}\n")
    source = ROOT / "benchmarks" / "results" / "full.json"
    assert run_all.main(["--from-json", str(source), "--img-dir", str(img),
                         "--doc", str(doc), "--no-docs"]) == 0  # fmt: skip
    assert not img.exists()
    assert doc.read_text() == f"{_plots.BEGIN}\n{_plots.END}\n"
    # nor do the gossip benchmarks draw theirs
    plotted = [s.args for s in run_all.plan("full", None) if "--plot" in s.args]
    assert plotted == []


def test_a_figure_directory_in_the_checkout_is_handed_over_relative() -> None:
    steps = run_all.plan("full", ROOT / "docs" / "img")
    plotted = {s.module: s.args[s.args.index("--plot") + 1] for s in steps if "--plot" in s.args}
    assert plotted == {"bench_gossip_tuning": "docs/img", "bench_gossip_vs_serf": "docs/img"}
    assert run_all.shown_path(Path("/tmp/figures")) == "/tmp/figures"
