"""The operator's pool commands, as Serf and Consul operators know them: ``members``,
``info``, ``monitor``, ``leave``, ``force-leave`` and ``reachability``.

Owns what each prints (``--format text``: aligned columns and Serf-like lines;
``--format json``: one JSON document, NDJSON for ``monitor``) and the exit statuses
(``reachability``: 1 when some live member did not answer). Talks to the daemon only
through :class:`pysyncer.admin.client.AdminClient`; the parser and the dispatch are
:mod:`pysyncer.cli`'s. Must not import gossip, sync or the admin server.

Imports: _core, admin, sync.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pysyncer._version import __version__
from pysyncer.admin.client import AdminUnavailableError
from pysyncer.admin.payloads import MEMBER_STATUSES
from pysyncer.sync.tags import DC

if TYPE_CHECKING:
    from pysyncer.admin.client import AdminClient
    from pysyncer.admin.payloads import Member, QueryRequest

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "FORMATS",
    "REACHABILITY_QUERY",
    "add_format",
    "admin_client",
    "columns",
    "filter_members",
    "force_leave",
    "info",
    "leave",
    "members",
    "monitor",
    "parse_tag_filters",
    "print_json",
    "reachability",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's status for bad arguments
REACHABILITY_QUERY = "pysyncer-reachability"  # a query nobody answers: only acks count
LIVE = ("alive", "suspect")
FORMATS = ("text", "json")  # every printing command takes --format text|json


def add_format(
    parser: argparse.ArgumentParser,
    help_text: str = "json: one JSON document",
    *,
    json_alias: bool = False,
    dest: str = "format",
) -> None:
    """``--format text|json`` (``json_alias``: and ``--json``, as the command had before)."""
    parser.add_argument("--format", dest=dest, choices=FORMATS, default="text", help=help_text)
    if json_alias:
        parser.add_argument(
            "--json", dest=dest, action="store_const", const="json", help="alias of --format json"
        )


def admin_client(args: argparse.Namespace) -> AdminClient:
    """The admin API client of a command's ``--admin-addr`` and token file."""
    from pysyncer.admin.client import AdminClient, token_from_file  # noqa: PLC0415

    return AdminClient(args.admin_addr, token=token_from_file(args.admin_token_file))


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


# -- members ---------------------------------------------------------------------------


def parse_tag_filters(given: Sequence[str]) -> dict[str, re.Pattern[str]]:
    """``--tag k=v`` (repeatable; ``v`` a regular expression matching the whole value, as
    ``serf members -tag`` takes it). ValueError naming the bad one."""
    wanted: dict[str, re.Pattern[str]] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag {item!r}: expected KEY=VALUE")
        try:
            wanted[key] = re.compile(value)
        except re.error as exc:
            raise ValueError(f"--tag {item!r}: {exc}") from None
    return wanted


def filter_members(
    members: Sequence[Member],
    *,
    status: str | None = None,
    tags: dict[str, re.Pattern[str]] | None = None,
    dc: str | None = None,
) -> list[Member]:
    """The members with this status, every tag matching and in data center ``dc``."""
    chosen = []
    for m in members:
        if status and m["status"] != status:
            continue
        if dc and m["tags"].get(DC) != dc:
            continue
        if any(
            key not in m["tags"] or not pattern.fullmatch(m["tags"][key])
            for key, pattern in (tags or {}).items()
        ):
            continue
        chosen.append(m)
    return chosen


def members(client: AdminClient, args: argparse.Namespace) -> int:
    found = filter_members(
        client.members()["members"],
        status=args.status,
        tags=parse_tag_filters(args.tag or ()),
        dc=args.dc,
    )
    if args.format == "json":
        print_json(found)
        return EXIT_OK
    # as `serf members`: name, address, status, tags; --detailed puts one tag per line
    rows = []
    for m in found:
        tags = [f"{k}={v}" for k, v in sorted(m["tags"].items())]
        rows.append([m["name"], f"{m['addr']}:{m['port']}", m["status"], ",".join(tags)])
    for line, m in zip(columns(rows), found, strict=True):
        print(line)
        if args.detailed:
            for key, value in sorted(m["tags"].items()):
                print(f"    {key}: {value}")
    return EXIT_OK


# -- info ------------------------------------------------------------------------------


def info(client: AdminClient, args: argparse.Namespace) -> int:
    """What the daemon is and how it is doing, from the health, members and sync routes."""
    from pysyncer import _core  # noqa: PLC0415 - loads compiled modules only when asked

    health = client.health()
    pool = client.members()["members"]
    try:
        sync: Any = client.sync_status()
    except AdminUnavailableError:  # 503: no sync engine (yet)
        sync = None
    statuses = Counter(m["status"] for m in pool)
    document: dict[str, dict[str, Any] | None] = {
        "agent": {
            "node": health["node"],
            "dc": health["dc"],
            "version": health["version"],
            "core": health["implementation"],
            "status": health["status"],
        },
        "gossip": {
            "members": len(pool),
            **{status: statuses.get(status, 0) for status in MEMBER_STATUSES},
            "health_score": health["health_score"],
            "data_centers": sorted({m["tags"][DC] for m in pool if DC in m["tags"]}),
        },
        "sync": None
        if sync is None
        else {
            "revision": sync["revision"],
            "exported": sync["exported"],
            "remote": {
                dc: {"state": link["state"], "lag": link["lag"], "copies": link["copies"]}
                for dc, link in sorted(sync["remote"].items())
            },
        },
        "client": {"version": __version__, "core": _core.IMPLEMENTATION},
    }
    if args.format == "json":
        print_json(document)
        return EXIT_OK
    for section, values in document.items():
        print(f"{section}:")
        if values is None:
            print("\tnot running")
            continue
        for key, value in values.items():
            if isinstance(value, dict):
                value = (
                    ", ".join(
                        f"{name} ({', '.join(f'{k}={v}' for k, v in link.items())})"
                        for name, link in value.items()
                    )
                    or "none"
                )
            elif isinstance(value, list):
                value = ", ".join(value) or "none"
            print(f"\t{key} = {value}")
    return EXIT_OK


# -- monitor, leave, force-leave ---------------------------------------------------------


def _text_line(entry: dict[str, Any]) -> str:
    if "dropped" in entry:
        return f"... {entry['dropped']} line(s) dropped: this terminal reads too slowly"
    line = (
        f"{entry.get('time', '')} [{str(entry.get('level', '')).upper()}] "
        f"{entry.get('logger', '')}: {entry.get('message', '')}"
    )
    return line + ("\n" + entry["exception"] if entry.get("exception") else "")


def monitor(client: AdminClient, args: argparse.Namespace) -> int:
    """Print the daemon's log records as they come until it stops or Ctrl-C."""
    for raw in client.monitor(args.log_level):
        if args.format == "json":
            sys.stdout.write(raw if raw.endswith("\n") else raw + "\n")
        else:
            print(_text_line(json.loads(raw)))
        sys.stdout.flush()
    return EXIT_OK


def leave(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.leave()
    if args.format == "json":
        print_json(answer)
    else:
        print(f"Graceful leave of {answer['node']} started: the daemon stops once it has left")
    return EXIT_OK


def force_leave(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.force_leave({"node": args.node, "prune": args.prune})
    if args.format == "json":
        print_json(answer)
    else:
        pruned = " and pruned" if answer["prune"] else ""
        print(f"Member {answer['node']} marked left{pruned}")
    return EXIT_OK


# -- reachability ------------------------------------------------------------------------


def reachability(client: AdminClient, args: argparse.Namespace) -> int:
    """Like ``serf reachability``: a query asking for acks; the live members that did not
    ack are listed (exit status 1 when there are any)."""
    pool = client.members()["members"]
    live = sorted(m["name"] for m in pool if m["status"] in LIVE)
    query: QueryRequest = {"name": REACHABILITY_QUERY, "payload": ""}
    if args.timeout_ms is not None:
        query["timeout_ms"] = args.timeout_ms
    answer = client.query(query)
    acks = set(answer["acks"])
    missing = [name for name in live if name not in acks]
    document = {
        "members": len(pool),
        "live": len(live),
        "acks": sorted(acks),
        "missing": missing,
    }
    if args.format == "json":
        print_json(document)
    else:
        print(f"Total members: {len(pool)}, live members: {len(live)}, acks: {len(acks)}")
        if missing:
            print("Missing acks from:")
            for name in missing:
                print(f"\t{name}")
        else:
            print("Successfully contacted all live nodes")
    return EXIT_ERROR if missing else EXIT_OK
