"""Benchmark of the memberlist/Serf wire codec: compiled ``_wire_c`` against its twin.

Usage::

    python -m benchmarks.bench_wire [--repeats R] [--json]

Encode and decode rates (messages/s) of a typical ping, an alive with Serf tags, a
compound of 10 messages, and a push/pull body with 1000 node states, each through the
wire module's message-level functions (``encode_message``/``decode_message``,
``build_compound``/``split_compound`` + decode, ``encode_push_pull``/
``decode_push_pull``). Both implementations run in the same process on the same
inputs, alternating, after a warm-up; each figure is the median of R runs, with the
compiled/twin ratio. The msgpack package's C ``packb``/``unpackb`` is timed on the
same ping and alive maps as a reference. Exits 1 when the compiled module is absent.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

Run = Callable[[], object]
IP = b"\x7f\x00\x00\x01"
VSN = b"\x01\x05\x02\x02\x05\x05"


def _ping() -> dict[str, object]:
    return {"Node": "node-0042.example", "SeqNo": 123456, "SourceAddr": IP,
            "SourceNode": "node-0001.example", "SourcePort": 7946}  # fmt: skip


def _alive(wire: ModuleType, i: int = 7) -> dict[str, object]:
    meta = wire.encode_tags({"role": "registry", "dc": "eu-west-1", "id": f"{i:08x}"})
    return {"Addr": IP, "Incarnation": 17, "Meta": meta, "Node": f"node-{i:04d}.example",
            "Port": 7946, "Vsn": VSN}  # fmt: skip


def _node(wire: ModuleType, i: int) -> dict[str, object]:
    alive = _alive(wire, i)
    return {"Addr": IP, "Incarnation": 3, "Meta": alive["Meta"], "Name": alive["Node"],
            "Port": 7946, "State": 0, "Vsn": VSN}  # fmt: skip


def cases(wire: ModuleType) -> dict[str, tuple[int, Run, Run]]:
    """name -> (messages per run, encode run, decode run) for one implementation."""
    ping, alive = _ping(), _alive(wire)
    ping_bytes = wire.encode_message(0, ping)
    alive_bytes = wire.encode_message(4, alive)
    ten = [dict(alive, Node=f"node-{i}") for i in range(10)]
    compound = wire.build_compound([wire.encode_message(4, a) for a in ten])
    nodes = [_node(wire, i) for i in range(1000)]
    push = wire.encode_push_pull(nodes, b"\x02" + wire.pack({"LTime": 5}), False)
    encode, decode, pp_encode, pp_decode = (
        wire.encode_message,
        wire.decode_message,
        wire.encode_push_pull,
        wire.decode_push_pull,
    )
    n = 2000

    def compound_encode() -> None:
        for _ in range(100):
            wire.build_compound([encode(4, a) for a in ten])

    def compound_decode() -> None:
        for _ in range(100):
            parts, _ = wire.split_compound(compound)
            for part in parts:
                decode(part)

    return {
        "ping": (n, lambda: [encode(0, ping) for _ in range(n)],
                 lambda: [decode(ping_bytes) for _ in range(n)]),
        "alive with tags": (n, lambda: [encode(4, alive) for _ in range(n)],
                            lambda: [decode(alive_bytes) for _ in range(n)]),
        "compound of 10": (100, compound_encode, compound_decode),
        "push/pull 1000 nodes": (3, lambda: [pp_encode(nodes, b"", True) for _ in range(3)],
                                 lambda: [pp_decode(push) for _ in range(3)]),
    }  # fmt: skip


def _seconds(run: Run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(count: int, compiled: Run, twin: Run, repeats: int) -> dict[str, Any]:
    compiled()
    twin()
    times: dict[str, list[float]] = {"compiled": [], "twin": []}
    for _ in range(repeats):
        times["compiled"].append(_seconds(compiled))
        times["twin"].append(_seconds(twin))
    result: dict[str, Any] = {"messages": count}
    for name, seconds in times.items():
        result[name] = count / statistics.median(seconds)
    result["ratio"] = result["compiled"] / result["twin"]
    return result


def reference(repeats: int, wire: ModuleType) -> dict[str, float]:
    """messages/s of msgpack's own C packb/unpackb on the ping and alive maps."""
    import msgpack

    out: dict[str, float] = {}
    n = 2000
    for name, value in (("ping", _ping()), ("alive with tags", _alive(wire))):
        data = msgpack.packb(value, use_bin_type=False)

        def pack(v: object = value) -> None:
            for _ in range(n):
                msgpack.packb(v, use_bin_type=False)

        def unpack(d: bytes = data) -> None:
            for _ in range(n):
                msgpack.unpackb(d, raw=True)

        out[f"{name} encode"] = n / min(_seconds(pack) for _ in range(repeats))
        out[f"{name} decode"] = n / min(_seconds(unpack) for _ in range(repeats))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, or one JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from pysyncer._core import _wire_py as twin

    try:
        import pysyncer._core._wire_c as compiled
    except ImportError as exc:
        print(f"pysyncer._core._wire_c is not built ({exc})", file=sys.stderr)
        return 1

    compiled_cases, twin_cases = cases(compiled), cases(twin)
    results: dict[str, Any] = {}
    for name, (count, c_encode, c_decode) in compiled_cases.items():
        _, t_encode, t_decode = twin_cases[name]
        if c_encode() != t_encode() or repr(c_decode()) != repr(t_decode()):
            print(f"compiled and twin disagree on {name}: not benchmarking", file=sys.stderr)
            return 1
        results[f"{name} encode"] = measure(count, c_encode, t_encode, args.repeats)
        results[f"{name} decode"] = measure(count, c_decode, t_decode, args.repeats)
    ref = reference(args.repeats, twin)
    if args.json:
        report = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeats": args.repeats,
            "unit": "messages/s",
            "cases": results,
            "msgpack_package_reference": ref,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"Python {platform.python_version()} {platform.machine()}, median of "
          f"{args.repeats} runs, messages/s")  # fmt: skip
    print(f"{'case':32s}{'compiled':>14s}{'twin':>14s}{'ratio':>8s}")
    for name, case in results.items():
        print(f"{name:32s}{case['compiled']:14,.0f}{case['twin']:14,.0f}{case['ratio']:8.1f}")
    print("msgpack package (C) reference, plain packb/unpackb of the same maps:")
    for name, rate in ref.items():
        print(f"  {name:30s}{rate:14,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
