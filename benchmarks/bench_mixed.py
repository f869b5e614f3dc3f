"""Propagation latency between registries of different kinds, through real daemons.

Usage::

    python -m benchmarks.bench_mixed [--count N] [--sources KIND[,KIND]] [--new-services]
                                     [--json]

Two data centers of different registry kinds, each a real ``pysyncer daemon``
subprocess (on 127.0.0.121 and .122), with registries that run for real here:

* ``servicecomb``: the daemon's embedded registry, driven through the Service-Center
  REST API (:class:`pysyncer.procs.RegistryClient`);
* ``etcd``: a real etcd (Debian ``etcd-server``, :class:`pysyncer.procs.EtcdServer`)
  read by the daemon's ``etcd`` adapter in the Kratos layout, driven as a Kratos
  application would write it (JSON values under ``/microservices/<name>/<id>``), here
  through etcd's own JSON gateway (``/v3/kv/*``).

For each source kind it registers N instances one after the other (instances of one
service; ``--new-services``: each under a service of its own), natively, and measures
from just before the registration call until the other registry shows the copy (polled
as that registry's client, every few ms); then it unregisters the instance and measures
until the copy is gone. Prints, per source -> destination pair, the median, min and max
in ms for "appear" and "remove". Registries the tests only have as fakes (Eureka,
Consul, Nacos) are not measured here: a figure would measure the fake.

Resolution: one polling round of the destination registry (a few ms on the 2-core
machine). Every process is started here and stopped by its pid; every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncer import procs
from pysyncer._core import IMPLEMENTATION
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY
from pysyncer.procs import DaemonProcess, EtcdServer, RegistryClient, find_etcd

HOSTS = ("127.0.0.121", "127.0.0.122")
KINDS = ("servicecomb", "etcd")
KRATOS_PREFIX = "/microservices/"
LABEL = {"servicecomb": "embedded"}
POLL = 0.003  # s between polling rounds
BOUND = 30.0  # s: a copy not seen by then is an error


@dataclass(frozen=True)
class Native:
    """One instance registered natively in its own registry."""

    dc: str
    native_id: str  # the id the copies carry as their origin id
    handle: tuple[str, str]  # what unregisters it (service id and instance id, or the key)

    @property
    def origin(self) -> str:
        return f"{self.dc}/{self.native_id}"


class ScSide:
    """The embedded registry, as a Service-Center application sees it."""

    kind = "servicecomb"

    def __init__(self, daemon: DaemonProcess) -> None:
        self.dc = daemon.dc
        self.client = RegistryClient(daemon.registry)
        self._services: dict[str, str] = {}

    def register(self, tag: str, ip: str, port: int, props: dict[str, str]) -> Native:
        sid = self._services.get(tag)
        if sid is None:
            sid = self._services[tag] = self.client.create_service("bench", f"stock-{tag}")
        iid = self.client.register(sid, f"host-{ip}", [f"rest://{ip}:{port}"], properties=props)
        return Native(self.dc, iid, (sid, iid))

    def unregister(self, native: Native) -> None:
        self.client.unregister(*native.handle)

    def copies(self) -> set[str]:
        return set(self.client.copy_origins(timeout=5))


class EtcdSide:
    """A real etcd in the Kratos layout, as a Kratos application writes and reads it."""

    kind = "etcd"

    def __init__(self, dc: str, server: EtcdServer) -> None:
        self.dc = dc
        self.base = f"http://{server.endpoint}/v3/kv"

    def _call(self, op: str, body: dict[str, str]) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}/{op}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def register(self, tag: str, ip: str, port: int, props: dict[str, str]) -> Native:
        iid = uuid.uuid4().hex
        name = f"stock-{tag}"
        value = {
            "id": iid,
            "name": name,
            "version": "1.0.0",
            "metadata": props,
            "endpoints": [f"grpc://{ip}:{port}"],
        }
        key = f"{KRATOS_PREFIX}{name}/{iid}"
        self._call("put", {"key": _b64(key), "value": _b64(json.dumps(value))})
        return Native(self.dc, iid, (key, ""))

    def unregister(self, native: Native) -> None:
        self._call("deleterange", {"key": _b64(native.handle[0])})

    def copies(self) -> set[str]:
        prefix = KRATOS_PREFIX.encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        answer = self._call("range", {"key": _b64(prefix), "range_end": _b64(end)})
        found = set()
        for kv in answer.get("kvs") or ():
            meta = json.loads(base64.b64decode(kv["value"])).get("metadata") or {}
            if ORIGIN_DC_PROPERTY in meta:
                found.add(f"{meta[ORIGIN_DC_PROPERTY]}/{meta.get(ORIGIN_ID_PROPERTY, '')}")
        return found


Side = ScSide | EtcdSide


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def label(kind: str) -> str:
    return LABEL.get(kind, kind)


def wait_all(targets: list[Side], native: Native, present: bool, start: float) -> dict[str, float]:
    """Seconds from ``start`` until each target shows (``present``) or lost the copy."""
    done: dict[str, float] = {}
    deadline = start + BOUND
    while len(done) < len(targets):
        for side in targets:
            if side.kind not in done and (native.origin in side.copies()) == present:
                done[side.kind] = time.perf_counter() - start
        if time.perf_counter() > deadline:
            missing = sorted({s.kind for s in targets} - set(done))
            raise SystemExit(f"{native.origin}: not seen in {missing}")
        time.sleep(POLL)
    return done


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *logged: Any) -> float:
    return procs.eventually(condition, timeout, what, *logged, interval=0.05, error=TimeoutError)


def streaming(daemons: list[DaemonProcess]) -> bool:
    """Every daemon streams from every other data center."""
    for daemon in daemons:
        remote = daemon.status().get("remote") or {}
        others = {d.dc for d in daemons} - {daemon.dc}
        if any(remote.get(dc, {}).get("state") != "streaming" for dc in others):
            return False
    return True


def start_pool(workdir: Path, etcd: EtcdServer) -> tuple[list[DaemonProcess], dict[str, Side]]:
    """The two daemons (appended to the list as they start, so the caller stops them)."""
    daemons: list[DaemonProcess] = []
    a = DaemonProcess("ma", HOSTS[0], workdir, "dc-ma")
    daemons.append(a)
    config = workdir / "mb.toml"
    config.write_text('[adapter]\nlayout = "kratos"\nrequest-timeout = 3\n')
    b = DaemonProcess(
        "mb", HOSTS[1], workdir, "dc-mb", "--plugin", "etcd", "--sc-addr", etcd.endpoint,
        "--config", str(config), "--join", a.bind,
    )  # fmt: skip
    daemons.append(b)
    return daemons, {"servicecomb": ScSide(a), "etcd": EtcdSide(b.dc, etcd)}


def run(count: int, sources: list[str], new_services: bool, binary: str) -> dict[str, Any]:
    appear: dict[str, list[float]] = {}
    remove: dict[str, list[float]] = {}
    tags = itertools.count(1)
    with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp, EtcdServer(binary) as etcd:
        daemons: list[DaemonProcess] = []
        try:
            daemons, sides = start_pool(Path(tmp), etcd)
            wait_until(lambda: all(d.ready() for d in daemons), 40, "daemons up", *daemons)
            wait_until(lambda: streaming(daemons), 40, "every link streaming", *daemons)
            for n, source in enumerate(sources):
                side = sides[source]
                targets = [s for kind, s in sides.items() if kind != source]
                for k in range(count):
                    tag = f"t{next(tags)}" if new_services else "bench"
                    start = time.perf_counter()
                    native = side.register(tag, f"10.30.{n}.{k + 1}", 7000 + k, {"bench": str(k)})
                    for kind, seconds in wait_all(targets, native, True, start).items():
                        appear.setdefault(f"{label(source)} -> {label(kind)}", []).append(seconds)
                    start = time.perf_counter()
                    side.unregister(native)
                    for kind, seconds in wait_all(targets, native, False, start).items():
                        remove.setdefault(f"{label(source)} -> {label(kind)}", []).append(seconds)
        finally:
            for daemon in daemons:
                daemon.stop()

    def summary(values: list[float]) -> dict[str, float]:
        ms = [v * 1000 for v in values]
        return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}

    return {
        "implementation": IMPLEMENTATION,
        "python": platform.python_version(),
        "count": count,
        "new_services": new_services,
        "appear": {pair: summary(v) for pair, v in appear.items()},
        "remove": {pair: summary(v) for pair, v in remove.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=20, help="registrations per source kind")
    parser.add_argument(
        "--sources", default=",".join(KINDS), help="source kinds (servicecomb = embedded, etcd)"
    )
    parser.add_argument(
        "--new-services",
        action="store_true",
        help="register each instance under a new service (default: one service per source)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = set(sources) - set(KINDS)
    if unknown or args.count < 1:
        parser.error(f"--count >= 1; source kinds among {', '.join(KINDS)} (not {unknown})")
    binary = find_etcd()
    if binary is None:
        print("etcd not installed (apt-get install etcd-server)", file=sys.stderr)
        return 2
    result = run(args.count, sources, args.new_services, binary)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"propagation between registry kinds ({result['implementation']} core, "
        f"Python {result['python']}, {args.count} registrations per source, "
        + ("a new service per registration)" if args.new_services else "one service per source)")
    )
    print(
        f"{'source -> destination':32} {'appear median (min-max) ms':>30} {'remove median ms':>18}"
    )
    for pair, fig in result["appear"].items():
        gone = result["remove"][pair]
        span = f"{fig['median_ms']:.0f} ({fig['min_ms']:.0f}-{fig['max_ms']:.0f})"
        print(f"{pair:32} {span:>30} {gone['median_ms']:>18.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
