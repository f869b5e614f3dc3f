"""The ``pysyncer`` command line: parses arguments and dispatches to one command.

Every command of the design contract is listed in ``--help``. Commands whose
implementation has not landed yet say so and exit with status 2; none pretends to work.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable, Sequence

from pysyncer._version import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_AVAILABLE = 2

# Commands of the design contract that a later release delivers, with what they will do.
PLANNED_COMMANDS: dict[str, str] = {
    "daemon": "run a syncer: gossip pool member, registry adapter, sync engine, admin API",
    "registry": "run the embedded ServiceComb-compatible service center alone",
    "demo": "run several data centers on loopback and show instances syncing",
    "members": "list the gossip pool members known to a running daemon",
    "status": "show a running daemon's sync status per remote data center",
    "event": "send a user event through a running daemon",
    "query": "send a query through a running daemon and print the responses",
    "keys": "install, use, remove or list gossip encryption keys across the pool",
}

# The order `pysyncer --help` lists commands in.
COMMAND_ORDER = (
    "daemon",
    "registry",
    "demo",
    "members",
    "status",
    "event",
    "query",
    "keygen",
    "keys",
    "slot",
)

SERF_KEY_BYTES = 32  # AES-256, the size `serf keygen` produces


def _version_text() -> str:
    from pysyncer import _core  # noqa: PLC0415 - loads compiled modules only when asked

    return f"pysyncer {__version__} (core: {_core.IMPLEMENTATION})"


def _cmd_keygen(args: argparse.Namespace) -> int:
    print(base64.b64encode(os.urandom(SERF_KEY_BYTES)).decode("ascii"))
    return EXIT_OK


def _cmd_slot(args: argparse.Namespace) -> int:
    from pysyncer._core import slots  # noqa: PLC0415

    for key in args.keys:
        print(f"{slots.key_slot(key)}\t{key}")
    return EXIT_OK


def _planned(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(
            f"pysyncer {name}: not available in pysyncer {__version__} yet "
            f"({PLANNED_COMMANDS[name]}); see the README's status section",
            file=sys.stderr,
        )
        return EXIT_NOT_AVAILABLE

    return run


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(_version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysyncer",
        description="Keep microservice instances in sync across service registries.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name in COMMAND_ORDER:
        if name == "keygen":
            keygen = commands.add_parser(name, help="print a new Serf-compatible encryption key")
            keygen.set_defaults(run=_cmd_keygen)
        elif name == "slot":
            slot = commands.add_parser(name, help="print the hash slot (0-16383) of service keys")
            slot.add_argument("keys", nargs="+", metavar="KEY")
            slot.set_defaults(run=_cmd_slot)
        else:
            sub = commands.add_parser(name, help=f"{PLANNED_COMMANDS[name]} (not available yet)")
            sub.set_defaults(run=_planned(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PLANNED_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
