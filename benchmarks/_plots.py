"""Figures of a run_all results file: the PNGs and the generated block of the docs page.

Owns what the suite's figures show and where a benchmark's JSON keys are read for them
(bench_sync's nested report, bench_mesh's and bench_cost's flat ``n<N>_`` / ``k<K>_``
keys, the gossip benchmarks' ``sizes`` / ``profiles``), the PNG names under the image
directory, and the docs block between ``<!-- generated: benchmark-figures ... -->`` and
``<!-- end generated: benchmark-figures -->`` (the style of tests/support/docblocks.py,
rendered here from the JSON only, so the page and the results file agree). Everything is
drawn from the results file alone: no measurement, no clock. Must not run benchmarks
(that is :mod:`benchmarks.run_all`). matplotlib is the optional ``bench`` extra.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.bench_sync import TARGET_FULL_SYNC_PER_MILLION_S, TARGET_FULL_SYNC_S
from benchmarks.bench_sync import TARGET_P50_MS as SYNC_TARGET_P50_MS
from benchmarks.bench_sync import TARGET_P99_MS as SYNC_TARGET_P99_MS

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "benchmark-figures"
BEGIN = f"<!-- generated: {BLOCK} (python -m benchmarks.run_all) -->"
END = f"<!-- end generated: {BLOCK} -->"
FULLSYNC_PNG = "bench_fullsync.png"
MESH_PNG = "bench_propagation_dcs.png"
RATE_PNG = "bench_propagation_rate.png"
COST_PNG = "bench_cost_per_remote.png"
MIB = float(1 << 20)

Row = dict[str, Any]


class BlockMarkersError(ValueError):
    """The docs page lacks the generated block's markers, or has them twice or reversed."""


# -- reading the results ------------------------------------------------------------------


def results(report: Row, figure: str) -> Iterator[Row]:
    """The JSON of every step of ``figure`` that succeeded, in run order."""
    for step in report.get("steps", []):
        if step["figure"] == figure and step["ok"]:
            yield step["result"]


def one(report: Row, figure: str) -> Row | None:
    return next(results(report, figure), None)


def full_sync_rows(report: Row) -> list[Row]:
    return [r["full_sync"] for r in results(report, "full-sync") if "full_sync" in r]


def rate_rows(report: Row) -> list[tuple[str, Row]]:
    """bench_sync's propagation runs, labelled, by offered rate: each paced run, then the
    unpaced run its invocation made on the same pool."""
    runs = [r["propagation"]["runs"] for r in results(report, "propagation-rate")]
    labelled = []
    for run in sorted(runs, key=lambda r: r.get("paced", {}).get("offered_rate_per_s") or 0):
        rate = run.get("paced", {}).get("offered_rate_per_s")
        if rate:
            labelled.append((f"{rate:,.0f}/s", run["paced"]))
        if "unpaced" in run:
            labelled.append(
                (f"unpaced (pool of the {rate:,.0f}/s run)" if rate else "unpaced", run["unpaced"])
            )
    return labelled


def counts(flat: Row, key: str) -> list[int]:
    """The integers of a comma-separated key (bench_mesh's ``dcs``, bench_cost's ``remotes``)."""
    return [int(x) for x in str(flat.get(key, "")).split(",") if x]


def ae_slot_counts(mesh: Row, dcs: int) -> list[int]:
    found = (re.fullmatch(rf"n{dcs}_ae(\d+)_slots_pulled", key) for key in mesh)
    return sorted(int(m.group(1)) for m in found if m)


# -- formatting ---------------------------------------------------------------------------


def cell(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def table(head: str, rows: list[list[str]]) -> str:
    """A markdown table; ``head`` names the columns, separated by ``" | "``."""
    lines = [f"| {head} |", "|" + "---|" * len(head.split(" | "))]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def full_sync_target_s(instances: int) -> float:
    """bench_sync's bound for a full sync of ``instances`` (as its report applies it)."""
    return max(TARGET_FULL_SYNC_S, TARGET_FULL_SYNC_PER_MILLION_S * instances / 1e6)


def paragraph(text: str) -> str:
    """Prose wrapped as the docs are (tables and images stay on their lines)."""
    return textwrap.fill(text, 92, break_long_words=False, break_on_hyphens=False)


def image(name: str, alt: str, img_dir: Path, doc: Path) -> str:
    return f"![{alt}]({os.path.relpath(img_dir / name, doc.parent)})"


def shown(path: Path) -> str:
    """A path as the docs show it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


# -- the docs block -----------------------------------------------------------------------


def render_markdown(report: Row, source: Path, img_dir: Path, doc: Path) -> str:
    """The generated block: where the figures come from, every step, then a table (and a
    figure) per benchmark that succeeded."""
    steps = report.get("steps", [])
    failed = sum(not s["ok"] for s in steps)
    start, end = report.get("load_avg_start", [0.0]), report.get("load_avg_end", [0.0])
    parts = [
        f"Generated by `python -m benchmarks.run_all --{report['mode']}` "
        f"({report['started_utc']}; {len(steps)} steps, {failed} failed, "
        f"{report.get('wall_s', 0.0) / 60:.1f} min wall) from `{shown(source)}`; redraw with "
        f"`python -m benchmarks.run_all --from-json {shown(source)}`. "
        f"{report['cpus']} cores, Python {report['python']}, 1-minute load average "
        f"{start[0]:.1f} at the start and {end[0]:.1f} at the end"
        + (
            ": the machine was shared, so wall times are several times an idle host's and "
            "CPU figures are the steadier ones."
            if max(start[0], end[0]) > (report.get("cpus") or 1)
            else " (a quiet machine)."
        ),
        table(
            "step | command | wall | result",
            [
                [
                    s["label"],
                    "`" + " ".join(["python", *s["argv"]]) + "`",
                    f"{s['seconds']:.1f} s",
                    "ok" if s["ok"] else "FAILED: " + str(s["error"]).replace("|", "/"),
                ]
                for s in steps
            ],
        ),
    ]
    for section in SECTIONS:
        text = section(report, lambda name, alt: image(name, alt, img_dir, doc))
        if text:
            parts.append(text)
    chunks = "\n\n".join(parts).split("\n\n")
    return "\n\n".join(c if c.startswith(("|", "![")) else paragraph(c) for c in chunks)


Image = Callable[[str, str], str]


def full_sync_section(report: Row, img: Image) -> str:
    rows = []
    for r in full_sync_rows(report):
        renewal, loop, count = r.get("renewal", {}), r.get("loop", {}), r["instances"]
        timed_out = "timed_out_s" in r
        rows.append(
            [
                f"{count:,}",
                cell(full_sync_target_s(count), ".0f", " s"),
                f"timed out at {r['timed_out_s']:.0f} s ({r['copies_reached']:,} mapped)"
                if timed_out
                else cell(r["sync_s"], ".1f", " s"),
                "-" if timed_out else cell(count / r["sync_s"], ",.0f"),
                "-" if timed_out else cell(1e6 * r["cpu_s"] / count, ".0f", " us"),
                cell(renewal.get("bytes_per_copy"), ",.0f", " B"),
                cell(r["peak_rss_bytes"] / MIB, ".0f", " MiB"),
                cell(loop.get("max_stall_ms"), ".0f", " ms"),
                cell(renewal.get("renewal_cpu_per_ttl_s"), ".2f", " CPU s"),
            ]
        )
    if not rows:
        return ""
    return "\n\n".join(
        [
            "**Initial full sync** (bench_sync `--phases full`): from the importing "
            "daemon's spawn until it maps every copy, against bench_sync's target; copies "
            "per second over that time; the importing daemon's CPU per copy, RSS per copy "
            "(embedded registry included) and peak RSS; its event loop's longest stall; "
            "renewal CPU per TTL (measured only with the full mode's `--renew-bound`).",
            table(
                "instances | target | spawn -> all mapped | copies/s | CPU per copy | "
                "RSS per copy | peak RSS | longest loop stall | renewals per TTL",
                rows,
            ),
            img(FULLSYNC_PNG, "full sync time and memory against instances"),
        ]
    )


def rate_section(report: Row, img: Image) -> str:
    rows = [
        [
            label,
            cell(r["register_rate_per_s"], ",.0f", "/s"),
            f"{r['visible'].get('p50_ms', 0):.0f} / {r['visible'].get('p99_ms', 0):.0f} ms",
            f"{r['gone'].get('p50_ms', 0):.0f} / {r['gone'].get('p99_ms', 0):.0f} ms",
            f"{r['copies_arrived']:,} of {r['copies_expected']:,}",
        ]
        for label, r in rate_rows(report)
    ]
    if not rows:
        return ""
    return "\n\n".join(
        [
            "**Propagation against offered rate** (bench_sync `--phases propagation`, three "
            "data centers, registrations offered in all through the origins' REST APIs, then "
            "deleted): latency from the origin's answer to the copy in each other registry. "
            f"Targets p50 {SYNC_TARGET_P50_MS:.0f} ms, p99 {SYNC_TARGET_P99_MS:.0f} ms.",
            table(
                "offered | registered | register->visible p50 / p99 | delete->gone p50 / p99 | "
                "copies arrived",
                rows,
            ),
            img(RATE_PNG, "propagation p50 and p99 against offered rate"),
        ]
    )


def mesh_section(report: Row, img: Image) -> str:
    mesh = one(report, "mesh")
    if mesh is None:
        return ""
    dcs = counts(mesh, "dcs")
    rows = []
    for n in dcs:
        p = f"n{n}_"
        rows.append(
            [
                str(n),
                f"{mesh[p + 'copies_per_dc']:,.0f}",
                cell(mesh[p + "sync_s"], ".1f", " s"),
                cell(mesh[p + "rss_mib_max"], ".0f", " MiB"),
                f"{mesh[p + 'visible_p50_ms']:.0f} / {mesh[p + 'visible_p99_ms']:.0f} ms",
                f"{mesh[p + 'gone_p50_ms']:.0f} / {mesh[p + 'gone_p99_ms']:.0f} ms",
                f"{mesh[p + 'achieved_rate_per_dc']:.0f} of {mesh[p + 'offered_rate_per_dc']:.0f}",
                cell(mesh[p + "cpu_per_change_ms"], ".2f", " ms"),
            ]
        )
    ae_rows = [
        [str(n), str(s)]
        + [
            cell(mesh[f"n{n}_ae{s}_{key}"], spec)
            for key, spec in (
                ("slots_compared", ",.0f"),
                ("slots_pulled", ",.0f"),
                ("records_pulled", ",.0f"),
                ("cpu_ms", ".1f"),
                ("origin_cpu_ms", ".1f"),
                ("wire_bytes", ",.0f"),
                ("wall_ms", ".0f"),
            )
        ]
        for n in dcs
        for s in ae_slot_counts(mesh, n)
    ]
    fit = ""
    if "cpu_per_copy_fit_ms" in mesh:
        fit = (
            f" CPU per offered change (a line over N): {mesh['cpu_per_change_fixed_ms']:.3f} ms "
            f"fixed, {mesh['cpu_per_copy_fit_ms']:.3f} ms per other data center; "
            f"{mesh['target_dcs']} data centers at {mesh['target_rate_per_dc']:.0f} changes/s "
            f"each would need about {mesh['target_cores_fit']:.1f} cores."
        )
    return "\n\n".join(
        [
            f"**Full mesh** (bench_mesh): N data centers of {mesh['instances_per_dc']:,} "
            f"instances, each importing every other; {mesh['changes_per_dc']:,} registrations "
            f"and deletions per data center offered at {mesh['rate_per_dc']:.0f}/s each, all at "
            f"once. Targets p50 {mesh['target_p50_ms']:.0f} ms, p99 "
            f"{mesh['target_p99_ms']:.0f} ms (at {mesh['target_dcs']} x "
            f"{mesh['target_instances']:,}, {mesh['target_rate_per_dc']:.0f}/s per data "
            f"center).{fit}",
            table(
                "data centers | copies per dc | full sync | largest RSS | register->visible p50 "
                "/ p99 | delete->gone p50 / p99 | registered/s per dc (of offered) | daemons' "
                "CPU per change",
                rows,
            ),
            "Anti-entropy rounds against the number of changed slots (one round each, the "
            "whole slot table compared):",
            table(
                "data centers | changed slots | slots compared | slots pulled | records pulled "
                "| CPU ms | origin CPU ms | bytes on the wire | wall ms",
                ae_rows,
            ),
            img(MESH_PNG, "propagation p50 and p99 against data centers"),
        ]
    )


def cost_section(report: Row, img: Image) -> str:
    cost = one(report, "cost")
    if cost is None:
        return ""
    rows = []
    for k in counts(cost, "remotes"):
        for w in ("steady", "churn"):
            p = f"k{k}_{w}_"
            rows.append(
                [
                    str(k),
                    w,
                    cell(100 * cost[p + "cpu_share"], ".2f", " %"),
                    cell(100 * cost[p + "registry_cpu_share"], ".2f", " %"),
                    cell(cost[p + "rss_mib"], ".0f", " MiB"),
                    cell(cost[p + "registry_rss_mib"], ".0f", " MiB"),
                    cell(cost[p + "wire_bytes_per_s"], ",.0f", " B/s"),
                    f"{cost[p + 'changes']:.0f} ({cost[p + 'errors']:.0f} failed)",
                    cell(cost[p + "applied"], ".0f"),
                ]
            )
    fitted = [
        [
            "syncer CPU, % of a core",
            cell(100 * cost["steady_cpu_share_per_remote"], ".3f"),
            cell(100 * cost["churn_cpu_share_per_remote"], ".3f"),
            cell(100 * cost["goal_cpu_share_per_remote"], ".1f"),
            cell(100 * cost["istio_cpu_share_per_remote"], ".0f"),
        ],
        [
            "syncer RSS, MiB",
            cell(cost["steady_rss_mib_per_remote"], ".2f"),
            cell(cost["churn_rss_mib_per_remote"], ".2f"),
            cell(cost["goal_rss_mib_per_remote"], ".0f"),
            cell(cost["istio_rss_mib_per_remote"], ".0f") + " (MB)",
        ],
        [
            "with the registry: CPU %, RSS MiB",
            f"{100 * cost['steady_cpu_share_with_registry_per_remote']:.3f}, "
            f"{cost['steady_rss_mib_with_registry_per_remote']:.2f}",
            f"{100 * cost['churn_cpu_share_with_registry_per_remote']:.3f}, "
            f"{cost['churn_rss_mib_with_registry_per_remote']:.2f}",
            "-",
            "-",
        ],
        [
            "bytes on the wire per second",
            cell(cost["steady_wire_bytes_per_s_per_remote"], ",.0f"),
            cell(cost["churn_wire_bytes_per_s_per_remote"], ",.0f"),
            "-",
            "-",
        ],
    ]
    return "\n\n".join(
        [
            f"**Cost per remote data center** (bench_cost): one importing syncer, K remote "
            f"data centers of {cost['instances_per_remote']:,} instances, a "
            f"{cost['window_s']:.0f} s window steady and one with "
            f"{cost['churn_per_min_pct']:g} % of the instances changing per minute; local "
            f"registry: {cost['local_registry']}; wire: {cost['wire_counter']}.",
            table(
                "remote dcs | window | syncer CPU | registry CPU | syncer RSS | registry RSS | "
                "wire | changes made | records applied",
                rows,
            ),
            "Per remote data center (slope of a least-squares line over K), beside the goal "
            "and Istio's published multi-cluster figure (per remote cluster of 300 services x "
            "4,000 endpoints):",
            table("per remote data center | steady | churn | goal | Istio", fitted),
            img(COST_PNG, "syncer CPU and RSS against remote data centers"),
        ]
    )


def gossip_section(report: Row, img: Image) -> str:
    gossip = one(report, "gossip")
    if gossip is None:
        return ""
    rows = [
        [
            size,
            cell(r["detect_median_s"], ".2f", " s"),
            cell(r["detect_max_s"], ".2f", " s"),
            cell(r["packets_per_member_s"], ".1f"),
            cell(r["virtual_per_wall"], ".1f"),
        ]
        for size, r in gossip["sizes"].items()
    ]
    return "\n\n".join(
        [
            f"**Gossip simulator** (bench_gossip, profile {gossip['profile']}, core "
            f"{gossip['implementation']}): one member killed; until every other declares it "
            "dead.",
            table(
                "members | detection p50 | detection max | packets per member per s | simulated "
                "s per wall s",
                rows,
            ),
        ]
    )


def tuning_section(report: Row, img: Image) -> str:
    tuning = one(report, "gossip-tuning")
    if tuning is None:
        return ""
    rows = [
        [
            name,
            f"{r['loss']:.0%}",
            cell(r["detect_p50_s"], ".2f", " s"),
            cell(r["detect_p99_s"], ".2f", " s"),
            str(r["false_healthy"]),
            str(r["false_starved"]),
        ]
        for name, profile_rows in tuning["profiles"].items()
        for r in profile_rows
    ]
    parts = [
        "**Failure detector tuning** (bench_gossip_tuning, simulator): detection against "
        "false failures of healthy and CPU-starved members, per profile and packet loss.",
        table(
            "profile | loss | detection p50 | detection p99 | false (healthy) | false (starved)",
            rows,
        ),
    ]
    if report["mode"] == "full":
        parts += [
            img("gossip_tradeoff.png", "detection against false failures"),
            img("gossip_detection_cdf.png", "detection time CDFs"),
        ]
    return "\n\n".join(parts)


def serf_section(report: Row, img: Image) -> str:
    serf = one(report, "gossip-serf")
    if serf is None:
        return ""
    rows = []
    for size, row in serf["sizes"].items():
        for kind in ("serf", "pysyncer", "mixed"):
            if kind not in row:
                continue
            s = row[kind]["summary"]
            rows.append(
                [
                    size,
                    kind,
                    cell(s["join_convergence_s"], ".2f", " s"),
                    cell(s["kill_detect_p50_s"], ".2f")
                    + f" / {cell(s['kill_detect_max_s'], '.2f', ' s')}",
                    cell(s["return_p99_s"], ".2f", " s"),
                    cell(s["event_p99_s"], ".3f", " s"),
                    cell(s["bytes_per_member_s"], ".0f", " B"),
                    str(s["false_failures"]),
                ]
            )
    parts = [
        "**Gossip against Serf** (bench_gossip_vs_serf, real agents and members on loopback; "
        "medians of the trials):",
        table(
            "N | pool | join convergence | kill -9 detection p50 / max | return after SIGSTOP "
            "p99 | user event p99 | bytes / member / s | false failures",
            rows,
        ),
    ]
    if report["mode"] == "full":
        parts += [
            img("gossip_vs_serf_detection.png", "kill -9 detection CDF, pysyncer vs Serf"),
            img("gossip_vs_serf_events.png", "user event delivery CDF, pysyncer vs Serf"),
        ]
    return "\n\n".join(parts)


SECTIONS: tuple[Callable[[Row, Image], str], ...] = (
    full_sync_section,
    rate_section,
    mesh_section,
    cost_section,
    gossip_section,
    tuning_section,
    serf_section,
)


BLOCK_PATTERN = re.compile(re.escape(BEGIN) + r"\n?(.*?)\n?" + re.escape(END), re.DOTALL)


def _block(text: str, page: Path) -> re.Match[str]:
    """The one generated block of ``page``: its markers once each, in order."""
    found = BLOCK_PATTERN.search(text)
    if found is None or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise BlockMarkersError(f"{page}: needs one {BEGIN!r}, then one {END!r}")
    return found


def read_block(page: Path) -> str:
    """The text between the markers of ``page`` (without the newlines around it)."""
    return _block(page.read_text(), page).group(1)


def write_block(page: Path, rendered: str) -> bool:
    """Put ``rendered`` between the markers of ``page``; True when the page changed."""
    text = page.read_text()
    found = _block(text, page)
    updated = f"{text[: found.start()]}{BEGIN}\n{rendered}\n{END}{text[found.end() :]}"
    if updated == text:
        return False
    page.write_text(updated)
    return True


# -- the PNGs -----------------------------------------------------------------------------


def draw(report: Row, img_dir: Path) -> list[Path]:
    """Every figure the results have data for, written into ``img_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    caption = (
        f"run_all --{report['mode']}, {report['started_utc']}, load avg "
        f"{report.get('load_avg_start', [0.0])[0]:.0f} on {report['cpus']} cores"
    )
    written = []
    for name, painter in (
        (FULLSYNC_PNG, paint_full_sync),
        (RATE_PNG, paint_rate),
        (MESH_PNG, paint_mesh),
        (COST_PNG, paint_cost),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
        if not painter(report, axes):
            plt.close(fig)
            continue
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.text(0.99, 0.01, caption, ha="right", va="bottom", fontsize=7, color="grey")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = img_dir / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def paint_full_sync(report: Row, axes: Any) -> bool:
    rows = [r for r in full_sync_rows(report) if "sync_s" in r]
    if not rows:
        return False
    xs = [r["instances"] for r in rows]
    left, right = axes
    left.plot(xs, [r["sync_s"] for r in rows], "o-", label="spawn -> all mapped")
    left.plot(xs, [r["cpu_s"] for r in rows], "s--", label="importing daemon's CPU")
    left.plot(xs, [full_sync_target_s(x) for x in xs], ":", color="grey", label="target")
    left.set(xscale="log", yscale="log", xlabel="instances", ylabel="seconds")
    left.set_title("initial full sync")
    per_copy = [(r["instances"], r.get("renewal", {}).get("bytes_per_copy")) for r in rows]
    right.plot(
        [x for x, b in per_copy if b],
        [b for _, b in per_copy if b],
        "o-",
        label="RSS per copy (registry included)",
    )
    right.set(xscale="log", xlabel="instances", ylabel="bytes per copy")
    peak = right.twinx()
    peak.plot(xs, [r["peak_rss_bytes"] / MIB for r in rows], "s--", color="C1")
    peak.set_ylabel("peak RSS, MiB")
    right.set_ylim(bottom=0)
    peak.set_ylim(bottom=0)
    (per_copy_line,), (peak_line,) = right.get_lines(), peak.get_lines()
    right.legend(
        [per_copy_line, peak_line],
        [per_copy_line.get_label(), "peak RSS"],
        fontsize=8,
        loc="lower right",
    )
    right.set_title("importing daemon's memory")
    return True


def paint_rate(report: Row, axes: Any) -> bool:
    rows = [r for _, r in rate_rows(report) if r["offered_rate_per_s"] and r["visible"]["count"]]
    if not rows:
        return False
    xs = [r["offered_rate_per_s"] for r in rows]
    for ax, key, title in zip(
        axes, ("visible", "gone"), ("register->visible", "delete->gone"), strict=True
    ):
        ax.plot(xs, [r[key]["p50_ms"] for r in rows], "o-", label="p50")
        ax.plot(xs, [r[key]["p99_ms"] for r in rows], "s-", label="p99")
        ax.axhline(SYNC_TARGET_P50_MS, ls=":", color="C0", label="target p50")
        ax.axhline(SYNC_TARGET_P99_MS, ls=":", color="C1", label="target p99")
        ax.set(
            xscale="log", xlabel="registrations offered per second (3 data centers)", ylabel="ms"
        )
        ax.set_title(f"{title}, against offered rate")
    return True


def paint_mesh(report: Row, axes: Any) -> bool:
    mesh = one(report, "mesh")
    if mesh is None:
        return False
    dcs = counts(mesh, "dcs")
    for ax, key, title in zip(
        axes, ("visible", "gone"), ("register->visible", "delete->gone"), strict=True
    ):
        ax.plot(dcs, [mesh[f"n{n}_{key}_p50_ms"] for n in dcs], "o-", label="p50")
        ax.plot(dcs, [mesh[f"n{n}_{key}_p99_ms"] for n in dcs], "s-", label="p99")
        ax.axhline(mesh["target_p50_ms"], ls=":", color="C0", label="target p50")
        ax.axhline(mesh["target_p99_ms"], ls=":", color="C1", label="target p99")
        ax.set(xlabel="data centers (full mesh)", ylabel="ms", xticks=dcs)
        ax.set_title(f"{title}, {mesh['rate_per_dc']:.0f}/s offered per dc")
    return True


def paint_cost(report: Row, axes: Any) -> bool:
    cost = one(report, "cost")
    if cost is None:
        return False
    ks = counts(cost, "remotes")
    left, right = axes
    for w, marker in (("steady", "o"), ("churn", "s")):
        left.plot(
            ks,
            [100 * cost[f"k{k}_{w}_cpu_share"] for k in ks],
            marker + "-",
            label=f"{w}: {100 * cost[f'{w}_cpu_share_per_remote']:.3f} % per remote",
        )
        right.plot(
            ks,
            [cost[f"k{k}_{w}_rss_mib"] for k in ks],
            marker + "-",
            label=f"{w}: {cost[f'{w}_rss_mib_per_remote']:.2f} MiB per remote",
        )
    left.set(xlabel="remote data centers", ylabel="% of one core", xticks=ks)
    left.set_title(f"syncer CPU (goal {100 * cost['goal_cpu_share_per_remote']:.1f} % per remote)")
    right.set(xlabel="remote data centers", ylabel="MiB", xticks=ks)
    for ax in axes:
        ax.set_ylim(bottom=0)
    right.set_title(f"syncer RSS (goal {cost['goal_rss_mib_per_remote']:.0f} MiB per remote)")
    return True
