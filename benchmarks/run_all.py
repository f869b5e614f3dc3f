"""The benchmark suite in one command: run the capacity and gossip benchmarks, keep their
JSON, redraw the figures.

Owns the plan of the suite: which ``benchmarks.bench_*`` modules run, with which sizes in
each mode (``--smoke``: seconds, for the test; ``--quick``: a few minutes; ``--full``: the
issue's sizes, 45 minutes in its first run here), each as ``python -m
benchmarks.<module> ... --json`` in its own process group, bounded in time (SIGINT, so a
benchmark stops its daemons, then SIGKILL of the group). Every step's JSON is kept, in
order, in one results file (``benchmarks/results/<mode>.json``, committed: the docs'
figures are drawn from it), written again after each step. A failed step is one line and
the run goes on; the exit status is 1 when any step failed. Afterwards
:mod:`benchmarks._plots` draws the PNGs into ``--img-dir`` (``docs/img``) and rewrites the
generated block of ``--doc`` (``docs/benchmarks.md``); ``--from-json FILE`` does only that,
from a saved results file; ``--no-docs`` does none of it (the results file only).
The gossip benchmarks that draw their own figures (``bench_gossip_tuning``,
``bench_gossip_vs_serf``) are handed ``--plot`` only in ``--full``: the committed
``docs/img/gossip_*.png`` are full runs.

Must not measure anything itself nor know a benchmark's keys (that is ``_plots``), nor
change how a benchmark runs beyond its command-line flags.

    python -m benchmarks.run_all --quick | --full | --smoke [--only full-sync,cost]
        [--out FILE] [--img-dir DIR] [--doc FILE] [--no-docs: the results file only]
    python -m benchmarks.run_all --from-json benchmarks/results/quick.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _plots

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GRACE_S = 20.0  # after SIGINT, before the process group is killed
STDERR_KEPT = 30  # lines of a failed step's stderr kept in the results file
FIGURES = (
    "full-sync",
    "propagation-rate",
    "mesh",
    "cost",
    "gossip",
    "gossip-tuning",
    "gossip-serf",
)


@dataclass(frozen=True)
class Step:
    """One benchmark process: which figure it feeds, its module and flags, and how long it
    took on the project's shared 2-core machine (``--quick`` at a load average of about
    13, ``--full`` in its first run, on 2026-12-04 at 4-6; the bound is a multiple of
    that)."""

    figure: str
    label: str
    module: str
    args: tuple[str, ...]
    estimate_s: float

    @property
    def bound_s(self) -> float:
        return 120.0 + 10.0 * self.estimate_s


@dataclass(frozen=True)
class Sizes:
    """What one mode runs. Strings of flags go to the module as they are (split on blanks)."""

    full_sync: tuple[int, ...]
    renew_bound_s: float  # bench_sync watches two renewal passes for at most this long
    sync_bound_s: float
    rates: tuple[float, ...]  # bench_sync propagation, registrations/s offered in all
    rate_services: int  # x 10 instances each
    mesh: str
    mesh_estimate_s: float
    cost: str
    cost_estimate_s: float
    gossip: str
    gossip_estimate_s: float
    tuning: str
    tuning_estimate_s: float
    serf: str
    serf_estimate_s: float


MODES: dict[str, Sizes] = {
    "smoke": Sizes(
        full_sync=(1_000,),
        renew_bound_s=1.0,
        sync_bound_s=60.0,
        rates=(100.0,),
        rate_services=2,
        mesh="--dcs 2 --instances 100 --changes 10 --rate 50 --ae-slots 0,2 --ae-repeats 1",
        mesh_estimate_s=25.0,
        cost="--remotes 1 --instances 100 --window 2",
        cost_estimate_s=20.0,
        gossip="--sizes 5 --seeds 1",
        gossip_estimate_s=2.0,
        tuning="--profiles pysyncer --losses 0 --size 10 --seeds 1 --fp-size 5 --fp-seconds 2",
        tuning_estimate_s=5.0,
        serf="--sizes 3 --trials 1 --kills 1 --events 1 --idle 1 --return-wait 10",
        serf_estimate_s=30.0,
    ),
    "quick": Sizes(
        full_sync=(10_000, 30_000, 100_000),
        renew_bound_s=2.0,
        sync_bound_s=240.0,
        rates=(100.0, 300.0, 1000.0),
        rate_services=50,
        mesh=(
            "--dcs 2,4 --instances 1000 --changes 200 --rate 100 --ae-slots 0,10,100 --ae-repeats 1"
        ),
        mesh_estimate_s=75.0,
        cost="--remotes 1,2 --instances 1000 --window 10 --churn-per-min 10",
        cost_estimate_s=100.0,
        gossip="--sizes 10,50 --seeds 2",
        gossip_estimate_s=3.0,
        tuning="--losses 0,0.05 --size 50 --seeds 2 --fp-size 20 --fp-seconds 10",
        tuning_estimate_s=40.0,
        serf="--sizes 10 --trials 1 --kills 1 --events 2 --idle 3 --return-wait 20",
        serf_estimate_s=45.0,
    ),
    "full": Sizes(
        full_sync=(10_000, 30_000, 100_000, 300_000, 1_000_000),
        renew_bound_s=100.0,
        sync_bound_s=900.0,
        rates=(100.0, 250.0, 500.0, 1000.0, 2000.0),
        rate_services=1000,
        mesh=(
            "--dcs 2,4,6,8 --instances 50000 --changes 2000 --rate 500 --ae-slots "
            "0,10,100,1000 --ae-repeats 3 --bound 600"
        ),
        mesh_estimate_s=550.0,
        cost="--remotes 1,2,4 --instances 4000 --window 60",
        cost_estimate_s=400.0,
        gossip="--sizes 10,100,500 --seeds 5",
        gossip_estimate_s=30.0,
        tuning="",
        tuning_estimate_s=150.0,
        serf="--sizes 10,50 --trials 3 --mixed --event-size 100",
        serf_estimate_s=790.0,
    ),
}


def plan(mode: str, img_dir: Path | None) -> list[Step]:
    """The steps of ``mode``, in the order they run; the gossip benchmarks draw their own
    figures into ``img_dir`` in ``--full`` unless it is None (the docs left alone)."""
    sizes = MODES[mode]
    steps = [
        Step(
            "full-sync",
            f"bench_sync full {count:,}",
            "bench_sync",
            tuple(
                f"--phases full --full {count} --bound {sizes.sync_bound_s:g} "
                f"--renew-bound {sizes.renew_bound_s:g}".split()
            ),
            15.0 + count * 2e-4 + sizes.renew_bound_s,
        )
        for count in sizes.full_sync
    ]
    instances = sizes.rate_services * 10
    steps += [
        Step(
            "propagation-rate",
            f"bench_sync propagation {rate:g}/s",
            "bench_sync",
            tuple(
                f"--phases propagation --rate {rate:g} --services {sizes.rate_services} "
                "--instances 10 --bound 120".split()
            ),
            20.0 + 2 * instances / rate + instances / 500,
        )
        for rate in sizes.rates
    ]
    plot = ("--plot", shown_path(img_dir)) if mode == "full" and img_dir is not None else ()
    steps += [
        Step(figure, module, module, (*flags.split(), *extra), estimate)
        for figure, module, flags, extra, estimate in (
            ("mesh", "bench_mesh", sizes.mesh, (), sizes.mesh_estimate_s),
            ("cost", "bench_cost", sizes.cost, (), sizes.cost_estimate_s),
            ("gossip", "bench_gossip", sizes.gossip, (), sizes.gossip_estimate_s),
            ("gossip-tuning", "bench_gossip_tuning", sizes.tuning, plot, sizes.tuning_estimate_s),
            ("gossip-serf", "bench_gossip_vs_serf", sizes.serf, plot, sizes.serf_estimate_s),
        )
    ]
    return steps


def shown_path(path: Path) -> str:
    """``path`` as a step is handed it (it runs in the checkout): relative when inside."""
    absolute = path.resolve()
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else str(absolute)


def parse_json(stdout: str) -> dict[str, Any]:
    """The JSON object a benchmark printed last (a top-level object starts a line)."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    offset = 0
    for line in stdout.splitlines(keepends=True):
        if line.startswith("{"):
            try:
                value, _ = decoder.raw_decode(stdout, offset)
            except ValueError:
                value = None
            if isinstance(value, dict):
                found = value
        offset += len(line)
    if found is None:
        raise ValueError("printed no JSON object")
    return found


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:240] if lines else "(no output)"


def run_step(step: Step) -> dict[str, Any]:
    """Run one step; its record: ok, seconds, and the JSON or a one-line error."""
    argv = [sys.executable, "-m", f"benchmarks.{step.module}", *step.args, "--json"]
    record: dict[str, Any] = {
        "figure": step.figure,
        "label": step.label,
        "argv": argv[1:],
        "ok": False,
        "error": None,
        "result": None,
    }
    began = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the daemons it starts go with it
    )
    try:
        stdout, stderr = process.communicate(timeout=step.bound_s)
    except subprocess.TimeoutExpired:
        stdout, stderr = stop_group(process)
        record["error"] = f"no answer within {step.bound_s:.0f} s: {last_line(stderr)}"
    record["seconds"] = round(time.monotonic() - began, 2)
    if record["error"] is None:
        if process.returncode != 0:
            record["error"] = f"exit {process.returncode}: {last_line(stderr or stdout)}"
        else:
            try:
                record["result"] = parse_json(stdout)
                record["ok"] = True
            except ValueError as exc:
                record["error"] = f"{exc}: {last_line(stderr or stdout)}"
    if not record["ok"]:  # kept in the results file for whoever looks into it
        record["stderr_tail"] = (stderr or "").splitlines()[-STDERR_KEPT:]
    return record


def stop_group(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGINT to the step's process group (the benchmark's cleanup runs), SIGKILL after
    :data:`GRACE_S`; what it printed."""
    try:
        os.killpg(process.pid, signal.SIGINT)  # the group start_new_session made
        return process.communicate(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate()
    except ProcessLookupError:
        return process.communicate()


def loads() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_suite(mode: str, steps: list[Step], out: Path) -> dict[str, Any]:
    """Run ``steps`` in order, printing a line per step, rewriting ``out`` after each."""
    estimate = sum(s.estimate_s for s in steps)
    print(
        f"run_all --{mode}: {len(steps)} steps, about {estimate / 60:.0f} min as measured on a "
        f"loaded 2-core machine; load average now {loads()[0]:.1f} on {os.cpu_count()} cores"
        + ("; --full takes long" * (mode == "full")),
        flush=True,
    )
    report: dict[str, Any] = {
        "mode": mode,
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count() or 0,
        "python": sys.version.split()[0],
        "load_avg_start": loads(),
        "steps": [],
    }
    began = time.monotonic()
    for n, step in enumerate(steps, 1):
        head = f"[{n}/{len(steps)}] {step.label}"
        print(f"{head} ...", end=" ", flush=True)
        record = run_step(step)
        report["steps"].append(record)
        status = "" if record["ok"] else f" FAILED: {record['error']}"
        print(f"{record['seconds']:.1f} s{status}", flush=True)
        report["wall_s"] = round(time.monotonic() - began, 1)
        report["load_avg_end"] = loads()
        write_json(out, report)
    return report


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    modes = parser.add_mutually_exclusive_group(required=True)
    for mode in MODES:
        modes.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    modes.add_argument("--from-json", type=Path, help="redraw from a saved results file")
    parser.add_argument("--only", help=f"figures to run, comma separated: {','.join(FIGURES)}")
    parser.add_argument("--out", type=Path, help="results file (benchmarks/results/<mode>.json)")
    parser.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--no-docs", action="store_true", help="only the results file: no PNGs, --doc as it is"
    )
    args = parser.parse_args(argv)
    failed = 0
    if args.from_json:
        source = args.from_json
        report = json.loads(source.read_text())
    else:
        only = set(FIGURES if args.only is None else args.only.split(","))
        if unknown := only - set(FIGURES):
            parser.error(f"--only: unknown {','.join(sorted(unknown))}; known: {FIGURES}")
        img_dir = None if args.no_docs else args.img_dir
        steps = [s for s in plan(args.mode, img_dir) if s.figure in only]
        source = args.out or RESULTS / f"{args.mode}.json"
        report = run_suite(args.mode, steps, source)
        failed = sum(not r["ok"] for r in report["steps"])
        print(
            f"run_all --{args.mode}: {report['wall_s']:.0f} s, {failed} of {len(steps)} steps "
            f"failed; load average {report['load_avg_start'][0]:.1f} -> "
            f"{report['load_avg_end'][0]:.1f}; results in {source}",
            flush=True,
        )
    if not args.no_docs:
        for path in _plots.draw(report, args.img_dir):
            print(f"wrote {path}")
        text = _plots.render_markdown(report, source, args.img_dir, args.doc)
        if _plots.write_block(args.doc, text):
            print(f"rewrote the generated block of {args.doc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
