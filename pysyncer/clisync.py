"""The commands that read a running daemon's sync state: ``status`` (``--watch``,
``--full-sync``), ``diff`` and ``filters --dry-run``.

Owns what each prints (``--format text``: a table per remote data center, a screen redrawn
in place, the terminal renderings of :mod:`pysyncer.admin.terminal`; ``--format json``:
the admin API's answer, one object per line for ``status --watch``) and their exit
statuses (``diff``: 1 when some discrepancy is not an expected one). Talks to the daemon
only through :class:`pysyncer.admin.client.AdminClient`; the parser and the dispatch are
:mod:`pysyncer.cli`'s. Must not import the sync engine or the admin server.

Imports: admin, cliops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from pysyncer.admin import paths
from pysyncer.cliops import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    admin_client,
    columns,
    print_json,
)

if TYPE_CHECKING:
    from pysyncer.admin.client import AdminClient

__all__ = ["diff", "filters", "status"]


def status(args: argparse.Namespace) -> int:
    """The sync status per remote data center (``--full-sync`` first starts a repair)."""
    client = admin_client(args)
    if args.full_sync:
        started = client.full_sync()
        print(
            f"full sync started with: {', '.join(started['remote']) or 'no peer yet'}",
            file=sys.stderr if args.format == "json" else sys.stdout,  # stdout: one document
        )
    if args.watch:
        return _watch(client, args.format == "json", args.interval)
    answer = client.sync_status()
    if args.format == "json":
        print_json(answer)
        return EXIT_OK
    print(
        f"data center {answer['dc']} (node {answer['node']}): revision "
        f"{answer['revision']}, {answer['exported']} instance(s) exported"
    )
    rows = [("REMOTE DC", "STATE", "SYNCER", "APPLIED", "LAG", "COPIES", "REPAIRS")]
    for dc, remote in sorted(answer["remote"].items()):
        rows.append(
            (
                dc,
                remote["state"],
                remote["syncer"],
                str(remote["applied_revision"]),
                str(remote["lag"]),
                str(remote["copies"]),
                str(remote["repairs"]),
            )
        )
    for line in columns(rows):
        print(line)
    from pysyncer.admin.terminal import not_followed_lines  # noqa: PLC0415

    for line in not_followed_lines(answer):
        print(line)
    return EXIT_OK


def _watch(client: AdminClient, as_json: bool, interval: float) -> int:
    """``status --watch``: the status again every ``interval`` s until interrupted; a
    terminal's screen is redrawn in place, JSON is one object per line per update."""
    from pysyncer.admin.terminal import REDRAW, status_lines  # noqa: PLC0415

    in_place = sys.stdout.isatty() and not as_json
    try:
        while True:
            answer = client.sync_status()
            if as_json:
                print(json.dumps(answer, separators=(",", ":")), flush=True)
            else:
                screen = "\n".join(status_lines(answer))
                frame = REDRAW + screen if in_place else screen + "\n"
                print(frame, flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:  # the way to stop watching
        return EXIT_OK


def diff(args: argparse.Namespace) -> int:
    """Every data center's registry compared; 1 when a discrepancy is not expected."""
    from urllib.parse import urlencode  # noqa: PLC0415

    from pysyncer.admin.terminal import EXPECTED_KINDS, diff_lines  # noqa: PLC0415

    query = urlencode({"service": args.service or "", "limit": args.limit})
    answer = admin_client(args).get(f"{paths.SYNC_DIFF}?{query}")
    if args.format == "json":
        print_json(answer)
    else:
        print("\n".join(diff_lines(answer)))
    problems = [d for d in answer["discrepancies"] if d["kind"] not in EXPECTED_KINDS]
    return EXIT_ERROR if problems else EXIT_OK


def filters(args: argparse.Namespace) -> int:
    """``--dry-run``: what the current export/import rules let through, and why."""
    from pysyncer.admin.terminal import dry_run_lines  # noqa: PLC0415

    if not args.dry_run:
        print("pysyncer filters: give --dry-run (nothing else is implemented)", file=sys.stderr)
        return EXIT_USAGE
    answer = admin_client(args).get(paths.SYNC_FILTERS_DRY_RUN)
    if args.format == "json":
        print_json(answer)
    else:
        print("\n".join(dry_run_lines(answer)))
    return EXIT_OK
