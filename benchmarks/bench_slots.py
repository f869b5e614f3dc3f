"""Benchmark of Redis Cluster slot routing: compiled ``_slots_c`` against its twin.

Usage::

    python -m benchmarks.bench_slots [--keys N] [--repeats R] [--json]

Times ``key_slots`` on N plain keys (``default/app-7/service-123``) and on N keys with
a hash tag (``{default/app-7}/service-123``), and ``key_slot`` called once per key on
a smaller sample. Both implementations run in the same process, on the same keys,
alternating, after one warm-up each; each figure is the median of R runs in keys/s,
with min and max. Exits 1 when the compiled module is not built.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable, Sequence

from benchmarks.twins import Run, add_common_options, measure, print_cases, print_json, system


def plain_keys(count: int) -> list[str]:
    """Realistic registry keys of 25-35 bytes, without hash tags."""
    return [f"default/app-{i % 50}/service-{i}" for i in range(count)]


def tagged_keys(count: int) -> list[str]:
    """The same keys with the application as hash tag (one slot per application)."""
    return [f"{{default/app-{i % 50}}}/service-{i}" for i in range(count)]


def _consume(function: Callable[[str], int], keys: Sequence[str]) -> Run:
    return lambda: collections.deque(map(function, keys), maxlen=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, or one JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys per run")
    add_common_options(parser, repeats=7)
    args = parser.parse_args(argv)
    if args.keys < 1 or args.repeats < 1:
        parser.error("--keys and --repeats must be at least 1")

    from pysyncer._core import _slots_py as twin

    try:
        import pysyncer._core._slots_c as compiled
    except ImportError as exc:
        print(
            f"pysyncer._core._slots_c is not built ({exc}); build it with "
            "'cythonize -i -3 pysyncer/_core/_slots_c.pyx' or 'pip install -e .'",
            file=sys.stderr,
        )
        return 1

    plain, tagged = plain_keys(args.keys), tagged_keys(args.keys)
    sample = plain[: max(1, min(args.keys, 100_000))]
    for keys in (plain, tagged):
        if compiled.key_slots(keys) != twin.key_slots(keys):
            print("compiled and twin disagree: not benchmarking", file=sys.stderr)
            return 1

    cases = {
        "key_slots plain": measure(
            {"compiled": lambda: compiled.key_slots(plain), "twin": lambda: twin.key_slots(plain)},
            "keys",
            len(plain),
            args.repeats,
        ),
        "key_slots hash-tag": measure(
            {
                "compiled": lambda: compiled.key_slots(tagged),
                "twin": lambda: twin.key_slots(tagged),
            },
            "keys",
            len(tagged),
            args.repeats,
        ),
        "key_slot single calls": measure(
            {
                "compiled": _consume(compiled.key_slot, sample),
                "twin": _consume(twin.key_slot, sample),
            },
            "keys",
            len(sample),
            args.repeats,
        ),
    }
    if args.json:
        print_json(args.repeats, "keys/s", cases)
        return 0
    print(f"{system()}, median of {args.repeats} runs, keys/s (min-max)")
    print_cases(cases, "keys", ("compiled", "twin"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
