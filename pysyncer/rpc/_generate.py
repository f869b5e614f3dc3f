"""Regenerates the protobuf and gRPC stubs of :mod:`pysyncer.rpc` from ``sync.proto``.

Development tool (needs ``grpcio-tools``, not a runtime dependency)::

    python -m pysyncer.rpc._generate

It runs ``python -m grpc_tools.protoc -I pysyncer/rpc --python_out=pysyncer/rpc
--pyi_out=pysyncer/rpc --grpc_python_out=pysyncer/rpc pysyncer/rpc/sync.proto``, makes the
import in ``sync_pb2_grpc.py`` package-relative, puts lint/type exemption headers on the
generated files (they are not written by hand) and formats them with ruff, so that
``ci/lint.sh`` passes with or without the type stubs of grpcio and protobuf installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

HEADERS = {
    "sync_pb2.py": "# ruff: noqa\n# mypy: ignore-errors\n",
    "sync_pb2_grpc.py": "# ruff: noqa\n# mypy: ignore-errors\n",
    # the stub is what mypy reads for sync_pb2: keep it checked, but let it subclass
    # protobuf's Message when types-protobuf is not installed (and take the bare Mapping
    # protoc writes for a repeated message field)
    "sync_pb2.pyi": (
        "# ruff: noqa\n# mypy: allow-subclassing-any, "
        'disable-error-code="import-untyped, type-arg"\n'
    ),
}


def main() -> int:
    out = str(HERE)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(HERE / "sync.proto"),
        ],
        check=True,
    )
    grpc_file = HERE / "sync_pb2_grpc.py"
    grpc_file.write_text(
        grpc_file.read_text().replace("\nimport sync_pb2 as", "\nfrom . import sync_pb2 as")
    )
    for name, header in HEADERS.items():
        path = HERE / name
        path.write_text(header + path.read_text())
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", *(str(HERE / n) for n in HEADERS)],
        check=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
