"""The commands for the pool's secrets: gossip keys (``keygen``, ``keys``) and TLS material
(``tls ca create``, ``tls cert create``).

Owns their parsers' additions and their output; the keyring rotation itself runs in the
daemon (:mod:`pysyncer.gossip.keymanager`) and the certificates are made by
:mod:`pysyncer.tlsgen`. Must not hold any other command.

Imports: admin, cliops, rpc, tlsgen.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from typing import TYPE_CHECKING, Any, cast

from pysyncer.cliops import EXIT_ERROR, EXIT_OK, add_format, admin_client, columns, print_json

if TYPE_CHECKING:
    from pysyncer.admin.payloads import KeyOperation, KeyRequest

__all__ = ["SERF_KEY_BYTES", "add_tls", "keygen", "keys"]

SERF_KEY_BYTES = 32  # AES-256, the size `serf keygen` produces


def keygen(args: argparse.Namespace) -> int:
    key = base64.b64encode(os.urandom(SERF_KEY_BYTES)).decode("ascii")
    if args.format == "json":
        print_json({"key": key})
        return EXIT_OK
    print(key)
    return EXIT_OK


# operation -> (banner, success line, failure text), as `serf keys` prints them
_KEY_OPS = {
    "install": (
        "Installing key on all members...",
        "Successfully installed key!",
        "Error installing key",
    ),
    "use": (
        "Changing primary key on all members...",
        "Successfully changed primary key!",
        "Error changing primary key",
    ),
    "remove": (
        "Removing key on all members...",
        "Successfully removed key!",
        "Error removing key",
    ),
    "list": (
        "Asking all members for installed keys...",
        "Keys gathered, listing cluster keys...",
        "Failed to gather member keys",
    ),
}


def keys(args: argparse.Namespace) -> int:
    chosen = [(op, getattr(args, op)) for op in ("install", "use", "remove") if getattr(args, op)]
    if args.list:
        chosen.append(("list", None))
    if len(chosen) != 1:
        print(
            "pysyncer keys: give exactly one of --install, --use, --remove, --list", file=sys.stderr
        )
        return EXIT_ERROR
    op, key = chosen[0]
    banner, success, failure = _KEY_OPS[op]
    as_json = args.format == "json"
    if not as_json:
        print(f"==> {banner}")
    from pysyncer.admin.client import KeysRefusedError  # noqa: PLC0415

    request: KeyRequest | None = (
        None if key is None else {"op": cast("KeyOperation", op), "key": key}
    )
    try:
        answer = admin_client(args).keys(request)
    except KeysRefusedError as exc:
        refused = exc.answer
        if as_json:
            print_json(refused)
            return EXIT_ERROR
        rows: list[tuple[str, str, str]] = []
        if "messages" in refused:  # members failed or did not answer
            rows += [("failed:", node, text) for node, text in sorted(refused["messages"].items())]
            rows += [("no response:", node, "") for node in refused["no_response"]]
        for line in columns(rows):
            print(line, file=sys.stderr)
        print("", file=sys.stderr)
        print(f"{failure}: {refused['error']}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print_json(answer)
        return EXIT_OK
    for node, text in sorted(answer["messages"].items()):
        print(f"warning: {node}: {text}")
    if op != "list":
        print(f"==> {success}")
        return EXIT_OK
    print(f"==> {success}")
    print("")
    total = answer["num_nodes"]
    primaries = answer["primary_keys"]
    listing = [
        (name, f"[{count}/{total}]", f"primary on {primaries[name]}" if name in primaries else "")
        for name, count in sorted(answer["keys"].items())
    ]
    for line in columns(listing):
        print(line)
    return EXIT_OK


def _tls_ca_create(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from pysyncer.tlsgen import create_ca  # noqa: PLC0415

    made = create_ca(Path(args.dir), days=args.days)
    if args.format == "json":
        print_json({"cert": str(made.cert), "key": str(made.key)})
        return EXIT_OK
    print(f"==> CA certificate {made.cert}")
    print(f"==> CA key {made.key} (mode 0600: keep it off the syncers)")
    return EXIT_OK


def _tls_cert_create(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from pysyncer.rpc.identity import dns_name, spiffe_uri  # noqa: PLC0415
    from pysyncer.tlsgen import create_cert  # noqa: PLC0415

    try:
        made = create_cert(
            args.dc,
            args.node,
            ca_dir=Path(args.ca_dir),
            out_dir=Path(args.out_dir),
            days=args.days,
            extra_sans=args.san or (),
        )
    except ValueError as exc:
        print(f"pysyncer tls cert create: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        identity = [spiffe_uri(args.dc, args.node), dns_name(args.dc, args.node)]
        print_json({"cert": str(made.cert), "key": str(made.key), "identity": identity})
        return EXIT_OK
    print(f"==> certificate {made.cert}")
    print(f"==> key {made.key} (mode 0600)")
    print(f"    identity {spiffe_uri(args.dc, args.node)}, {dns_name(args.dc, args.node)}")
    return EXIT_OK


def add_tls(commands: Any) -> None:
    from pysyncer.tlsgen import CA_DAYS, CERT_DAYS  # noqa: PLC0415 - constants only

    tls = commands.add_parser(
        "tls", help="make a CA and syncer certificates for the sync plane's mutual TLS"
    )
    kinds = tls.add_subparsers(dest="tls_kind", metavar="ca|cert", required=True)
    ca = kinds.add_parser("ca", help="the pool's certificate authority")
    ca_ops = ca.add_subparsers(dest="tls_op", metavar="create", required=True)
    ca_create = ca_ops.add_parser("create", help="write ca.pem and ca-key.pem")
    ca_create.add_argument("--dir", default=".", help="where to write them (default .)")
    ca_create.add_argument("--days", type=int, default=CA_DAYS, help=f"validity ({CA_DAYS})")
    add_format(ca_create)
    ca_create.set_defaults(run=_tls_ca_create)
    cert = kinds.add_parser("cert", help="a syncer's certificate")
    cert_ops = cert.add_subparsers(dest="tls_op", metavar="create", required=True)
    cert_create = cert_ops.add_parser(
        "create",
        help="write DC-NODE.pem and DC-NODE-key.pem naming the syncer",
        description="A certificate for server and client use whose subject alternative "
        "names are spiffe://pysyncer/dc/DC/node/NODE and NODE.DC.pysyncer.",
    )
    cert_create.add_argument("--dc", required=True, help="the syncer's data center")
    cert_create.add_argument("--node", required=True, help="the syncer's node name")
    cert_create.add_argument("--ca-dir", default=".", help="where ca.pem and ca-key.pem are")
    cert_create.add_argument("--out-dir", default=".", help="where to write (default .)")
    cert_create.add_argument("--days", type=int, default=CERT_DAYS, help=f"validity ({CERT_DAYS})")
    cert_create.add_argument(
        "--san", action="append", metavar="NAME|IP", help="one more DNS name or IP (repeat)"
    )
    add_format(cert_create)
    cert_create.set_defaults(run=_tls_cert_create)
