"""Benchmark of export/import filter decisions: compiled rules against plain fnmatch.

Usage::

    python -m benchmarks.bench_filters [--instances N] [--services S] [--repeats R] [--json]

Ten rules (four include, six exclude; three with metadata selectors) decide N instances
spread over S services: ``Filters.exports`` (local data center) and ``Filters.imports``
(three origin data centers), then the cold case where every instance is of a service
never seen before (no cached plan). The comparison runs the same rules with
``fnmatch.fnmatchcase`` per field and a hand-written selector check per decision, in the
same process, after checking that both decide alike. Each figure is the median of R runs
in decisions/s, with min and max; the target is >= 500k decisions/s for ten rules.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import re
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.twins import add_common_options, measure, print_cases, print_json, system

if TYPE_CHECKING:
    from pysyncer.model import Instance
    from pysyncer.sync.filters import Filters

TARGET = 500_000

RULES: dict[str, list[dict[str, Any]]] = {
    "include": [
        {"app": "shop", "name": "order*"},
        {"app": "shop", "name": ["cart*", "pay*"]},
        {"app": "crm*", "project": "default/*"},
        {"environment": "production", "metadata": "expose=true"},
    ],
    "exclude": [
        {"metadata": "internal=true"},
        {"name": "*-canary"},
        {"dc": "dc-test*"},
        {"version": "0.*"},
        {"app": "shop", "metadata": "tier in (cache,batch),zone"},
        {"name": "debug-*"},
    ],
}
_TERM = re.compile(r"\s*([^,(]+?)(?:\s+in\s+\(([^)]*)\))?\s*(?:,|$)")

APPS = ("shop", "crm-core", "billing", "logistics")
NAMES = ("order-api", "cart", "payment", "orders-canary", "debug-tool", "catalog", "users")
DCS = ("dc-east", "dc-west", "dc-test-1")


def instances(count: int, services: int) -> list[Instance]:
    from pysyncer.model import Instance, ServiceKey

    keys = [
        ServiceKey(
            APPS[i % len(APPS)],
            f"{NAMES[i % len(NAMES)]}-{i}" if i % 3 else NAMES[i % len(NAMES)],
            f"{i % 3}.{i % 5}.0",
            "production" if i % 2 else "",
        )
        for i in range(services)
    ]
    out = []
    for i in range(count):
        properties = {"zone": f"z{i % 3}", "tier": ("web", "cache", "batch")[i % 3]}
        if i % 7 == 0:
            properties["internal"] = "true"
        if i % 5 == 0:
            properties["expose"] = "true"
        out.append(Instance(keys[i % services], f"inst-{i}", f"host-{i}", (), "UP", properties))
    return out


def _naive_selector(text: str, properties: Mapping[str, str]) -> bool:
    for term, listed in _TERM.findall(text):
        if listed:
            value = properties.get(term)
            if value is None or value not in listed.split(","):
                return False
        elif "=" in term:
            key, glob = term.split("=", 1)
            value = properties.get(key)
            if value is None or not fnmatch.fnmatchcase(value, glob):
                return False
        elif term not in properties:
            return False
    return True


def _naive_rule(rule: Mapping[str, Any], dc: str, instance: Instance) -> bool:
    for field, globs in rule.items():
        if field == "metadata":
            if not _naive_selector(globs, instance.properties):
                return False
            continue
        value = dc if field == "dc" else getattr(instance.service, field)
        if not any(fnmatch.fnmatchcase(value, glob) for glob in _listed(globs)):
            return False
    return True


def _listed(globs: str | list[str]) -> list[str]:
    return [globs] if isinstance(globs, str) else globs


def naive(dc: str, instance: Instance) -> bool:
    included = any(_naive_rule(rule, dc, instance) for rule in RULES["include"])
    return included and not any(_naive_rule(rule, dc, instance) for rule in RULES["exclude"])


def make_filters() -> Filters:
    from pysyncer.sync.filters import filters_from_config

    return filters_from_config(RULES, RULES, dc="dc-east")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, or one JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000, help="decisions per run")
    parser.add_argument("--services", type=int, default=2_000, help="distinct services")
    add_common_options(parser, repeats=5)
    args = parser.parse_args(argv)
    if args.instances < 1 or args.services < 1 or args.repeats < 1:
        parser.error("--instances, --services and --repeats must be at least 1")

    batch = instances(args.instances, args.services)
    origins = [DCS[i % len(DCS)] for i in range(len(batch))]
    cold = instances(args.instances, args.instances)
    filters = make_filters()
    for dc, instance in zip(origins, batch, strict=True):
        if filters.imports(dc, instance) != naive(dc, instance):
            print(f"filters and fnmatch disagree on {dc} {instance}", file=sys.stderr)
            return 1
        if filters.exports(instance) != naive("dc-east", instance):
            print(f"filters and fnmatch disagree on export of {instance}", file=sys.stderr)
            return 1
    passed = sum(map(filters.exports, batch))

    def cold_run() -> None:
        fresh = make_filters()
        collections.deque(map(fresh.exports, cold), maxlen=0)

    cases = {
        "exports": measure(
            {
                "filters": lambda: collections.deque(map(filters.exports, batch), maxlen=0),
                "fnmatch": lambda: collections.deque(
                    map(naive, ["dc-east"] * len(batch), batch), maxlen=0
                ),
            },
            "decisions",
            len(batch),
            args.repeats,
        ),
        "imports": measure(
            {
                "filters": lambda: collections.deque(
                    map(filters.imports, origins, batch), maxlen=0
                ),
                "fnmatch": lambda: collections.deque(map(naive, origins, batch), maxlen=0),
            },
            "decisions",
            len(batch),
            args.repeats,
        ),
        "exports, every service new": measure(
            {
                "filters": cold_run,
                "fnmatch": lambda: collections.deque(
                    map(naive, ["dc-east"] * len(cold), cold), maxlen=0
                ),
            },
            "decisions",
            len(cold),
            args.repeats,
        ),
    }
    if args.json:
        extra = {"rules": 10, "services": args.services, "passed": passed, "target": TARGET}
        print_json(args.repeats, "decisions/s", cases, **extra)
        return 0
    print(
        f"{system()}, 10 rules, "
        f"{args.services:,} services, {passed:,} of {len(batch):,} exported; "
        f"median of {args.repeats} runs, decisions/s (min-max); target {TARGET:,}/s"
    )
    print_cases(cases, "decisions", ("filters", "fnmatch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
