"""The command line's views of the sync: status with progress bars, the diff, the dry run.

Owns turning the admin payloads into terminal text: ``pysyncer status --watch`` (one
screen per update: each link's state and lag, a bar per initial sync or repair with
slots and records done of total, rate and time left), ``pysyncer diff`` and
``pysyncer filters --dry-run`` tables, and the escape codes that redraw a screen in
place. Pure functions from payloads to lines: no HTTP, no printing (the CLI prints).
"""

from __future__ import annotations

from collections.abc import Sequence

from pysyncer.admin.payloads import DiffAnswer, DryRunAnswer, SyncProgress, SyncStatus

__all__ = [
    "EXPECTED_KINDS",
    "REDRAW",
    "bar",
    "diff_lines",
    "dry_run_lines",
    "not_followed_lines",
    "status_lines",
]

REDRAW = "\x1b[H\x1b[J"  # cursor home, clear to the end: the next screen replaces this one
BAR_WIDTH = 30
EXPECTED_KINDS = ("filtered_out", "origin_gone")  # differences the rules or the grace want


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########.........]`` for ``fraction`` in 0..1."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _seconds(value: float) -> str:
    if value < 0:
        return "?"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.0f} min"


def _progress_line(dc: str, progress: SyncProgress) -> str:
    done, total = progress["slots_done"], progress["slots_total"]
    fraction = done / total if total else (0.0 if progress["running"] else 1.0)
    kind = "initial sync" if progress["kind"] == "initial" else "repair"
    records = f"{progress['records_done']:,}"
    if progress["records_total"]:
        records += f"/{progress['records_total']:,}"
    if progress["running"]:
        tail = f"{progress['rate']:,.0f} rec/s, ETA {_seconds(progress['eta_seconds'])}"
    else:
        took = max(0.0, progress["finished_at"] - progress["started_at"])
        tail = f"done in {_seconds(took)}"
    return (
        f"  {kind:12} {dc:12} {bar(fraction)} {done:,}/{total:,} slots, {records} records, {tail}"
    )


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def status_lines(status: SyncStatus) -> list[str]:
    """One screen of ``pysyncer status --watch``."""
    lines = [
        f"data center {status['dc']} (node {status['node']}): revision {status['revision']:,}, "
        f"{status['exported']:,} instance(s) exported, store {status['store']['status']}"
    ]
    rows = [("REMOTE DC", "STATE", "APPLIED", "LAG", "", "COPIES", "REPAIRS")]
    worst = max((link["lag"] for link in status["remote"].values()), default=0) or 1
    for dc, link in sorted(status["remote"].items()):
        rows.append(
            (
                dc,
                link["state"],
                f"{link['applied_revision']:,}",
                f"{link['lag']:,}",
                bar(link["lag"] / worst, 12),
                f"{link['copies']:,}",
                str(link["repairs"]),
            )
        )
    lines += _columns(rows)
    lines += not_followed_lines(status)
    progress = [
        _progress_line(dc, link["progress"])
        for dc, link in sorted(status["remote"].items())
        if link["progress"]["kind"]
    ]
    if progress:
        lines += ["", "syncs:", *progress]
    return lines


def not_followed_lines(status: SyncStatus) -> list[str]:
    """One line per live remote data center followed by no link, and why."""
    filters = status.get("filters")
    reasons = filters.get("not_followed", {}) if filters else {}
    return [f"{dc}: not followed ({why})" for dc, why in sorted(reasons.items())]


def diff_lines(diff: DiffAnswer) -> list[str]:
    """``pysyncer diff``: the registries, then each discrepancy with its explanation."""
    what = f"service {diff['service']}" if diff["service"] else "the whole pool"
    lines = [f"diff of {what} ({diff['elapsed_seconds']:.2f} s)"]
    rows = [("DATA CENTER", "SYNCER", "ORIGINALS", "COPIES", "NOTE")]
    for dc, registry in sorted(diff["registries"].items()):
        note = registry["error"] if not registry["reached"] else ""
        if registry["truncated"]:
            note = f"listing cut at {diff['limit']:,}"
        rows.append(
            (dc, registry["node"] or "-", str(registry["originals"]), str(registry["copies"]), note)
        )
    lines += _columns(rows)
    problems = [d for d in diff["discrepancies"] if d["kind"] not in EXPECTED_KINDS]
    lines.append("")
    lines.append(f"{len(problems)} discrepancies" if problems else "no discrepancy")
    for item in diff["discrepancies"]:
        lines.append(
            f"  {item['kind']:13} {item['registry']:10} {item['service']} "
            f"{item['instance_id']}: {item['explanation']}"
        )
    return lines


def dry_run_lines(run: DryRunAnswer) -> list[str]:
    """``pysyncer filters --dry-run``: every service's verdict and why."""
    rows = [("SIDE", "DATA CENTER", "SERVICE", "PASSING", "VERDICT", "WHY")]
    for item in run["services"]:
        rows.append(
            (
                item["side"],
                item["dc"],
                item["service"],
                f"{item['passing']}/{item['instances']}",
                item["verdict"],
                item["reason"],
            )
        )
    lines = [f"direction {run['direction']}", *_columns(rows)]
    for dc, why in sorted(run["unreachable"].items()):
        lines.append(f"not listed: {dc}: {why}")
    if run["truncated"]:
        lines.append("some listings were cut at their bound: not every service is judged")
    for rule in run["unused_rules"]:
        lines.append(f"unused rule: {rule}")
    return lines
