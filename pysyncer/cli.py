"""The ``pysyncer`` command line: parses arguments and dispatches to one command.

Every command of the design contract is listed in ``--help``. Commands that talk to a
running daemon use its admin API (``--admin-addr``). Every command takes ``--format
text|json`` (:data:`pysyncer.cliops.FORMATS`): ``json`` prints one JSON document (NDJSON for the
streaming ones: ``monitor``, ``status --watch``), and for the long-running ``daemon``
and ``registry`` it is their log format. The pool commands Serf and Consul operators
know (members, info, monitor, leave, force-leave, reachability) are
:mod:`pysyncer.cliops` (which also holds the output helpers, the exit statuses and the
admin client every command shares), the commands for keys and TLS material
:mod:`pysyncer.clikeys`, the ones that read the sync state (status, diff, filters)
:mod:`pysyncer.clisync`; completion and ``docs/cli.md`` are generated from
:func:`build_parser` by :mod:`pysyncer.clidoc`.

Imports: _core, admin, clidoc, clikeys, cliops, clisync, config, daemon, demo, errors, gossip,
hostport, logs, redact, rpc, servicecenter, tlsgen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from pysyncer import clikeys, clisync
from pysyncer._version import __version__
from pysyncer.cliops import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    FORMATS,
    add_format,
    admin_client,
    print_json,
)
from pysyncer.errors import PysyncerError
from pysyncer.hostport import REGISTRY_PORT, parse_host_port
from pysyncer.logs import LOG_LEVELS
from pysyncer.redact import redact

if TYPE_CHECKING:
    from pysyncer.admin.client import AdminClient
    from pysyncer.admin.payloads import QueryRequest

Runner = Callable[[argparse.Namespace], int]


def _version_text() -> str:
    from pysyncer import _core  # noqa: PLC0415 - loads compiled modules only when asked

    return f"pysyncer {__version__} (core: {_core.IMPLEMENTATION})"


# -- commands ----------------------------------------------------------------------


def _daemon_config(args: argparse.Namespace) -> Any:
    """The daemon's configuration from these arguments, its file and the environment."""
    from pysyncer.config import SETTINGS, load_config  # noqa: PLC0415

    flags = {name: getattr(args, name.replace("-", "_")) for s in SETTINGS for name in s.names}
    return load_config(flags, config_file=args.config)


def _cmd_daemon(args: argparse.Namespace) -> int:
    from pysyncer import logs  # noqa: PLC0415
    from pysyncer.daemon import run_daemon  # noqa: PLC0415

    config = _daemon_config(args)
    logs.configure(config.log_level, config.log_format)
    run_event_loop(run_daemon(config, reload=lambda: _daemon_config(args)))
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from pysyncer.daemon import check_config  # noqa: PLC0415

    config = _daemon_config(args)
    check_config(config, ports=False)
    if args.output_format == "json":
        config_file = str(config.config_file) if config.config_file else None
        print_json({"valid": True, "config_file": config_file, "node": config.node,
                     "dc": config.dc})  # fmt: skip
        return EXIT_OK
    where = f"config file {config.config_file}" if config.config_file else "no config file"
    print(f"configuration valid ({where}; node {config.node}, dc {config.dc})")
    return EXIT_OK


def run_event_loop(coroutine: Any) -> None:
    """Run on uvloop when it is installed, on asyncio's loop otherwise."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def _operator(name: str) -> Runner:
    """The :mod:`pysyncer.cliops` command ``name``, called with this daemon's client."""

    def run(args: argparse.Namespace) -> int:
        from pysyncer import cliops  # noqa: PLC0415

        command: Callable[[AdminClient, argparse.Namespace], int] = getattr(cliops, name)
        return command(admin_client(args), args)

    return run


def _cmd_rtt(args: argparse.Namespace) -> int:
    from pysyncer.gossip.vivaldi import Coordinate  # noqa: PLC0415

    answer = admin_client(args).coordinates()
    nodes = [args.node, args.other or answer["node"]]
    found = []
    for name in nodes:
        raw = answer["coordinates"].get(name)
        if raw is None:
            print(f"Could not find a coordinate for node {name!r}", file=sys.stderr)
            return EXIT_ERROR
        found.append(Coordinate(tuple(raw["vec"]), raw["error"], raw["adjustment"], raw["height"]))
    rtt_ms = found[0].distance(found[1]) * 1000.0
    if args.format == "json":
        print_json({"nodes": nodes, "rtt_ms": rtt_ms})
        return EXIT_OK
    print(f"Estimated {nodes[0]} <-> {nodes[1]} rtt: {rtt_ms:.3f} ms")
    return EXIT_OK


def _cmd_event(args: argparse.Namespace) -> int:
    sent = admin_client(args).send_event(
        {"name": args.name, "payload": args.payload, "coalesce": args.coalesce}
    )
    if args.format == "json":
        print_json({**sent, "coalesce": args.coalesce})
        return EXIT_OK
    print(f"Event '{args.name}' dispatched! Coalescing enabled: {args.coalesce}")
    return EXIT_OK


def _cmd_query(args: argparse.Namespace) -> int:
    query: QueryRequest = {"name": args.name, "payload": args.payload}
    if args.timeout_ms is not None:
        query["timeout_ms"] = args.timeout_ms
    result = admin_client(args).query(query)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for node in result["acks"]:
        print(f"Ack from '{node}'")
    for node, text in result["responses"].items():
        print(f"Response from '{node}': {text}")
    print(f"Total Acks: {len(result['acks'])}")
    print(f"Total Responses: {len(result['responses'])}")
    return EXIT_OK


def _cmd_registry(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from pysyncer.servicecenter import ServiceCenterSettings, load_rbac, run_registry  # noqa: PLC0415

    listen = parse_host_port(args.listen, REGISTRY_PORT)
    from pysyncer import logs  # noqa: PLC0415

    logs.configure(args.log_level, args.format)
    try:
        settings = ServiceCenterSettings(
            max_tenants=args.max_tenants,
            max_services=args.max_services,
            max_instances=args.max_instances,
            max_ttl=args.max_ttl,
            rbac_file=Path(args.rbac_file) if args.rbac_file else None,
        )
        if settings.rbac_file is not None:
            load_rbac(settings.rbac_file)  # a bad file fails here, in one line
    except ValueError as exc:  # ConfigError included
        print(f"pysyncer registry: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):
        run_event_loop(run_registry(listen.host, listen.port, settings=settings))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from pysyncer.demo import run_demo  # noqa: PLC0415

    if args.format == "text":
        return run_demo(args.dcs, args.services, args.instances, args.workdir, quick=args.quick)
    with contextlib.redirect_stdout(sys.stderr):  # the progress; stdout gets the outcome
        status = run_demo(args.dcs, args.services, args.instances, args.workdir, quick=args.quick)
    print_json({"ok": status == EXIT_OK, "exit_status": status})
    return status


def _cmd_slot(args: argparse.Namespace) -> int:
    from pysyncer._core import slots  # noqa: PLC0415

    if args.format == "json":
        print_json({"slots": [{"key": key, "slot": slots.key_slot(key)} for key in args.keys]})
        return EXIT_OK
    for key in args.keys:
        print(f"{slots.key_slot(key)}\t{key}")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from pysyncer.clidoc import completion_script  # noqa: PLC0415

    script = completion_script(build_parser(), args.shell)
    if args.format == "json":
        print_json({"shell": args.shell, "script": script})
        return EXIT_OK
    sys.stdout.write(script)
    return EXIT_OK


# -- parser ------------------------------------------------------------------------


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(_version_text())
        parser.exit()


def _add_daemon(commands: Any) -> None:
    daemon = commands.add_parser(
        "daemon",
        help="run a syncer: gossip pool member, sync engine and admin API",
        description="Run a syncer. Settings: defaults < --config file < PYSYNCER_* env < flags.",
    )
    _add_settings(daemon)
    daemon.add_argument(
        "--format", dest="log_format", choices=FORMATS, help="the log format (--log-format)"
    )
    daemon.set_defaults(run=_cmd_daemon)
    validate = commands.add_parser(
        "validate",
        help="check the daemon's settings and adapter settings, binding and contacting nothing",
        description="Check what 'pysyncer daemon' with the same arguments would run with.",
    )
    _add_settings(validate)
    add_format(validate, dest="output_format")
    validate.set_defaults(run=_cmd_validate)


def _add_settings(daemon: argparse.ArgumentParser) -> None:
    from pysyncer.config import SETTINGS  # noqa: PLC0415

    for setting in SETTINGS:
        if isinstance(setting.default, bool):  # a switch: --insecure, not --insecure true
            daemon.add_argument(
                setting.flag, dest=setting.attr, action="store_const", const=True,
                help=setting.meaning,
            )  # fmt: skip
            continue
        daemon.add_argument(
            setting.flag, dest=setting.attr, metavar=setting.metavar, help=setting.meaning
        )
        for alias in setting.aliases:
            daemon.add_argument(
                f"--{alias}",
                dest=alias.replace("-", "_"),
                metavar=setting.metavar,
                help=f"alias of {setting.flag}",
            )
    daemon.add_argument("--config", metavar="FILE", help="TOML config file (or PYSYNCER_CONFIG)")


def _admin_parser(
    commands: Any,
    name: str,
    help_text: str,
    *,
    format_help: str = "json: one JSON document",
    json_alias: bool = False,
) -> argparse.ArgumentParser:
    from pysyncer.config import setting  # noqa: PLC0415

    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    add_format(parser, format_help, json_alias=json_alias)
    address, token_file = setting("admin-addr"), setting("admin-token-file")
    parser.add_argument(
        address.flag,
        default=os.environ.get(address.env, address.default),
        metavar=address.metavar,
        help=f"the daemon's admin API (default {address.default})",
    )
    parser.add_argument(
        token_file.flag,
        metavar=token_file.metavar,
        help=f"file holding the daemon's admin token (default: {token_file.env})",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysyncer",
        description="Keep microservice instances in sync across service registries.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_daemon(commands)
    registry = commands.add_parser(
        "registry", help="run the embedded ServiceComb-compatible service center alone"
    )
    from pysyncer.config import setting  # noqa: PLC0415

    listen = setting("registry-addr").default
    registry.add_argument("--listen", default=listen, metavar="HOST:PORT", help=f"({listen})")
    registry.add_argument(
        "--log-level", default=setting("log-level").default, type=str.lower, choices=LOG_LEVELS
    )
    add_format(registry, "the log format (one JSON object per line)")
    from pysyncer.servicecenter.settings import DEFAULT_SETTINGS as SC  # noqa: PLC0415 - no aiohttp

    registry.add_argument(
        "--rbac-file",
        metavar="FILE",
        help="accounts and roles (JSON or TOML): the v4 API then needs a token from "
        "POST /v4/token (docs/registry.md)",
    )
    for flag, default, what in (
        ("max-tenants", SC.max_tenants, "domain/project pairs (only writes create one)"),
        ("max-services", SC.max_services, "services per project"),
        ("max-instances", SC.max_instances, "instances per service"),
        ("max-ttl", SC.max_ttl, "longest lease, healthCheck interval x (times + 1), seconds"),
    ):
        registry.add_argument(
            f"--{flag}", type=int, default=default, metavar="N", help=f"{what} ({default})"
        )
    registry.set_defaults(run=_cmd_registry)

    demo = commands.add_parser(
        "demo", help="run three data centers on loopback and show instances syncing"
    )
    from pysyncer.demo import FULL, QUICK  # noqa: PLC0415 - sizes only, no aiohttp

    for flag, what in (("dcs", "data centers"), ("services", "services per data center"),
                       ("instances", "instances per service")):  # fmt: skip
        full, quick = getattr(FULL, flag), getattr(QUICK, flag)
        demo.add_argument(f"--{flag}", type=int, help=f"{what} ({full}; --quick: {quick})")
    demo.add_argument(
        "--quick", action="store_true", help="a smaller run without the restart step (smoke test)"
    )
    demo.add_argument("--workdir", help="keep logs and data here (default: a temp dir)")
    add_format(demo, "json: the progress on stderr, the outcome as one JSON document")
    demo.set_defaults(run=_cmd_demo)

    members = _admin_parser(
        commands, "members", "list the gossip pool members (like `serf members`)",
        format_help="json: the members, tags included", json_alias=True,
    )  # fmt: skip
    members.add_argument(
        "--detailed", action="store_true", help="text: every tag of each member too"
    )
    members.add_argument("--status", help="only members with this status (alive, failed...)")
    members.add_argument(
        "--tag", action="append", metavar="KEY=REGEX",
        help="only members whose tag KEY matches REGEX in full (repeat: all must match)",
    )  # fmt: skip
    members.add_argument("--dc", help="only the syncers of this data center (their dc tag)")
    members.set_defaults(run=_operator("members"))

    info = _admin_parser(
        commands, "info", "the daemon's version, core, gossip and sync figures (like `serf info`)"
    )
    info.set_defaults(run=_operator("info"))

    monitor = _admin_parser(
        commands, "monitor", "stream the daemon's logs until it stops or Ctrl-C",
        format_help="json: one JSON log line per record (NDJSON)",
    )  # fmt: skip
    monitor.add_argument(
        "--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
        help="the lowest level shown (the daemon's own --log-level still applies)",
    )  # fmt: skip
    monitor.set_defaults(run=_operator("monitor"))

    leave = _admin_parser(
        commands, "leave", "make the daemon leave the pool gracefully and stop (like SIGTERM)"
    )
    leave.set_defaults(run=_operator("leave"))

    force_leave = _admin_parser(
        commands, "force-leave", "mark a failed member left pool-wide (like `serf force-leave`)"
    )
    force_leave.add_argument("node", help="the member's name")
    force_leave.add_argument(
        "--prune", action="store_true", help="forget it at once instead of keeping a tombstone"
    )
    force_leave.set_defaults(run=_operator("force_leave"))

    reach = _admin_parser(
        commands, "reachability",
        "ask every member to ack a query; list live ones that did not (exit 1 if any)",
    )  # fmt: skip
    reach.add_argument("--timeout-ms", type=int, help="default: Serf's, scaled by pool size")
    reach.set_defaults(run=_operator("reachability"))

    rtt = _admin_parser(
        commands, "rtt", "estimate the round trip between two members (like `serf rtt`)"
    )
    rtt.add_argument("node")
    rtt.add_argument("other", nargs="?", help="the second member (default: the daemon's own)")
    rtt.set_defaults(run=_cmd_rtt)

    status = _admin_parser(
        commands, "status", "show the sync status per remote data center",
        format_help="json: the status (with --watch: one object per line per update)",
        json_alias=True,
    )  # fmt: skip
    status.add_argument(
        "--full-sync", action="store_true", help="first start a digest repair with every peer"
    )
    status.add_argument(
        "--watch", action="store_true",
        help="refresh in place (links, lag, progress bars) until interrupted",
    )  # fmt: skip
    status.add_argument("--interval", type=float, default=1.0, help="--watch: seconds (1)")
    status.set_defaults(run=clisync.status)

    diff = _admin_parser(
        commands, "diff", "compare every data center's registry (originals and copies)"
    )
    diff.add_argument("--service", help="one service name (default: the whole pool, bounded)")
    diff.add_argument("--limit", type=int, default=2000, help="instances per registry (2000)")
    diff.set_defaults(run=clisync.diff)

    filters = _admin_parser(
        commands, "filters", "what the current export/import rules let through, and why"
    )
    filters.add_argument(
        "--dry-run", action="store_true", help="judge every service seen; change nothing"
    )
    filters.set_defaults(run=clisync.filters)

    event = _admin_parser(commands, "event", "send a user event to the pool")
    event.add_argument("name")
    event.add_argument("payload", nargs="?", default="")
    event.add_argument("--coalesce", action="store_true", help="let receivers coalesce it")
    event.set_defaults(run=_cmd_event)

    query = _admin_parser(
        commands, "query", "send a query and print acks and responses", json_alias=True
    )
    query.add_argument("name")
    query.add_argument("payload", nargs="?", default="")
    query.add_argument("--timeout-ms", type=int, help="default: Serf's, scaled by pool size")
    query.set_defaults(run=_cmd_query)

    keygen = commands.add_parser("keygen", help="print a new Serf-compatible encryption key")
    add_format(keygen)
    keygen.set_defaults(run=clikeys.keygen)

    keys = _admin_parser(
        commands, "keys", "install, use, remove or list gossip encryption keys across the pool",
        format_help="json: the admin API's answer", json_alias=True,
    )  # fmt: skip
    key_ops = keys.add_mutually_exclusive_group(required=True)
    key_ops.add_argument("--install", metavar="KEY", help="install a key on every member")
    key_ops.add_argument("--use", metavar="KEY", help="make an installed key the primary one")
    key_ops.add_argument("--remove", metavar="KEY", help="remove a (non-primary) key")
    key_ops.add_argument("--list", action="store_true", help="list the keys of every member")
    keys.set_defaults(run=clikeys.keys)

    clikeys.add_tls(commands)

    slot = commands.add_parser("slot", help="print the hash slot (0-16383) of service keys")
    slot.add_argument("keys", nargs="+", metavar="KEY")
    add_format(slot)
    slot.set_defaults(run=_cmd_slot)

    from pysyncer.clidoc import SHELLS  # noqa: PLC0415 - a constant, no import cost

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script generated from this parser",
        description="bash: source <(pysyncer completion bash); zsh: put the output in a "
        "file named _pysyncer on $fpath (it uses zsh's bash completion support).",
    )
    completion.add_argument("shell", choices=SHELLS)
    add_format(completion, "json: the script inside a JSON document")
    completion.set_defaults(run=_cmd_completion)
    return parser


def render_reference() -> str:
    """Every command as Markdown, the reference ``docs/cli.md`` carries."""
    from pysyncer.clidoc import render_markdown  # noqa: PLC0415
    from pysyncer.config import SETTINGS  # noqa: PLC0415

    link = "every setting of [the configuration](configuration.md) as a flag (`--FLAG VALUE`)"
    flags = {f"--{name}" for setting in SETTINGS for name in setting.names}
    flags |= {f"--{alias}" for setting in SETTINGS for alias in setting.aliases}
    documented = dict.fromkeys(flags, link)
    return render_markdown(
        build_parser(), elsewhere={("daemon",): documented, ("validate",): documented}
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error ends as one line on stderr and exit status 1 (2 for
    bad arguments); a reader that closed the pipe (``| head``) ends it quietly."""
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    try:
        status = run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_ERROR
    except (PysyncerError, OSError, ValueError, HTTPException) as exc:  # a bad address or value
        print(f"pysyncer {args.command}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line, the traceback on demand
        if os.environ.get("PYSYNCER_DEBUG"):
            raise
        print(
            f"pysyncer {args.command}: internal error: {type(exc).__name__}: "
            f"{redact(str(exc))} (PYSYNCER_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
