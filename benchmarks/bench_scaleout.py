"""Scale-out figures: several syncers of one data center on a real etcd, kill -9, rejoin.

Data center A: one ``pysyncer daemon`` with its embedded registry, filled with
``--instances`` instances (TTL 10 s, kept alive by a heartbeat thread, as applications
do). Data center B: one registry (``pysyncer registry``) and ``--members`` syncers
sharing an etcd prefix (``--store etcd://...?prefix=``, ``--member-ttl``). etcd, the
registry and the daemons are real processes started here and stopped by pid.

Once every instance has exactly one copy in B, ``--kills`` rounds each kill -9 one B
syncer (round robin, the leader included) and then start it again:

* **takeover**: kill -9 to the survivors owning all 16384 slots with none pending
  (``slots``), and to the survivors holding (adopted and renewed) every copy while B's
  registry shows each exactly once (``copies``); p50 / p99 / max over the rounds;
* **slots moved**: slots gained by the survivors on a kill, slots gained by the
  rejoining member (and lost by the others) on a rejoin;
* **playback rate**: copies adopted per second of playback (from the daemons'
  ``playback of N slot(s): M copies adopted`` log lines and ``playback_seconds`` in
  ``/v1/sync/status``);
* **lapses**: the fewest copies B's registry showed while a takeover ran (must be all).

    python -m benchmarks.bench_scaleout [--instances 2000] [--members 3] [--kills 5]
                                        [--member-ttl 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncer import procs
from pysyncer.procs import (
    DaemonProcess,
    EtcdServer,
    RegistryClient,
    RegistryProcess,
    find_etcd,
    ownership,
    split_evenly,
)

SERVICES = 100
ADOPTED = re.compile(r"playback of (\d+) slot\(s\): (\d+) copies adopted")


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, *logged: procs.Logged
) -> float:
    """Poll ``condition`` (errors count as false) every 50 ms; the seconds it took."""
    return procs.eventually(condition, timeout, what, *logged, interval=0.05, error=TimeoutError)


def held(members: list[DaemonProcess]) -> int:
    """Copies the members hold (adopted or applied, renewed by them)."""
    return sum(
        int(r.get("copies", 0)) for d in members for r in d.status().get("remote", {}).values()
    )


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {"p50": statistics.median(ordered), "p99": pick(0.99), "max": ordered[-1]}


HEARTBEAT_BATCH = 1000  # instances per batch heartbeat (the registry caps request bodies)


class Heartbeats:
    """The applications of A: heartbeat every registered instance every 2 s."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.targets: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            targets = list(self.targets)
            for start in range(0, len(targets), HEARTBEAT_BATCH):
                with contextlib.suppress(OSError, ValueError):
                    self.client.heartbeat_set(targets[start : start + HEARTBEAT_BATCH], timeout=30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run(args: argparse.Namespace, etcd_binary: str, workdir: Path) -> dict[str, Any]:
    started_here: list[Any] = []
    beats: Heartbeats | None = None
    try:
        etcd = EtcdServer(etcd_binary, workdir / "etcd")
        started_here.append(etcd)
        etcd.start()
        registry_b = RegistryProcess(workdir, "registry-b")
        started_here.append(registry_b)
        wait_until(registry_b.ready, 20, "registry-b up", registry_b)
        a = DaemonProcess("sa", "127.0.0.91", workdir, "dc-sa")
        started_here.append(a)
        wait_until(a.ready, 30, "A up", a)
        store = f"etcd://{etcd.endpoint}?prefix=/pysyncer-bench/{uuid.uuid4().hex[:8]}/"
        flags = ("--join", a.bind, "--sc-addr", registry_b.url, "--store", store,
                 "--member-ttl", str(args.member_ttl))  # fmt: skip
        b = [DaemonProcess(f"sb{n}", f"127.0.0.{92 + n}", workdir, "dc-sb", *flags)
             for n in range(args.members)]  # fmt: skip
        started_here.extend(b)
        wait_until(lambda: all(d.ready() for d in b), 60, "B up", *b)
        wait_until(lambda: split_evenly(b), 60, "slots split", *b)

        client = RegistryClient(a.registry)
        beats = Heartbeats(client)
        services = [client.create_service("shop", f"bench-{k}") for k in range(SERVICES)]
        started = time.monotonic()
        for n in range(args.instances):
            sid = services[n % SERVICES]
            host = f"10.7.{n // 250}.{n % 250}"
            iid = client.register(sid, host, [f"rest://{host}:80"], interval=5, times=1)
            beats.targets.append({"serviceId": sid, "instanceId": iid})
        want = args.instances

        def exactly_once() -> bool:
            seen = Counter(registry_b.client.copy_origins(timeout=30))
            return len(seen) == want and set(seen.values()) == {1}

        wait_until(exactly_once, 300, "every instance copied once", a, *b)
        initial_sync = time.monotonic() - started
        rounds: list[dict[str, Any]] = []
        for k in range(args.kills):
            rounds.append(one_round(b, k % len(b), registry_b, want))
            print(
                f"  round {k + 1}: kill {rounds[-1]['victim']}: slots "
                f"{rounds[-1]['takeover_slots_s']:.2f} s, copies "
                f"{rounds[-1]['takeover_copies_s']:.2f} s, moved {rounds[-1]['moved_kill']}, "
                f"rejoin {rounds[-1]['rejoin_s']:.2f} s moved {rounds[-1]['moved_rejoin']}",
                flush=True,
            )
        return summarize(args, rounds, initial_sync)
    finally:
        if beats is not None:
            beats.stop()
        for proc in reversed(started_here):
            with contextlib.suppress(Exception):
                proc.stop()


def one_round(
    b: list[DaemonProcess], index: int, registry_b: RegistryProcess, want: int
) -> dict[str, Any]:
    victim = b[index]
    survivors = [d for d in b if d is not victim]
    was_leader = ownership(victim)["leader"] == victim.name
    before = {d.name: ownership(d) for d in survivors}
    offsets = {d.name: d.log_size() for d in survivors}
    fewest = [want]

    def copies_back() -> bool:
        seen = Counter(registry_b.client.copy_origins(timeout=30))
        fewest[0] = min(fewest[0], len(seen))
        return held(survivors) == want and len(seen) == want and set(seen.values()) == {1}

    victim.kill()
    killed = time.monotonic()
    takeover_slots = wait_until(lambda: split_evenly(survivors), 120, "takeover", *survivors)
    wait_until(copies_back, 120, "copies held by the survivors", *survivors)
    takeover_copies = time.monotonic() - killed
    after = {d.name: ownership(d) for d in survivors}
    moved_kill = sum(after[n]["slots_gained"] - before[n]["slots_gained"] for n in after)
    adopted = sum(
        int(m.group(2)) for d in survivors for m in ADOPTED.finditer(d.log_since(offsets[d.name]))
    )
    playback_s = sum(after[n]["playback_seconds"] - before[n]["playback_seconds"] for n in after)

    offset = victim.log_size()
    victim.start()
    restarted = time.monotonic()
    wait_until(victim.ready, 60, "restarted", victim)
    wait_until(lambda: split_evenly(b), 120, "rebalanced", *b)
    rejoin = time.monotonic() - restarted
    wait_until(lambda: held(b) == want, 120, "copies held after the rejoin", *b)
    back = ownership(victim)
    final = {d.name: ownership(d) for d in survivors}
    moved_lost = sum(final[n]["slots_lost"] - after[n]["slots_lost"] for n in final)
    rejoin_adopted = sum(int(m.group(2)) for m in ADOPTED.finditer(victim.log_since(offset)))
    return {
        "victim": victim.name + (" (leader)" if was_leader else ""),
        "takeover_slots_s": takeover_slots,
        "takeover_copies_s": takeover_copies,
        "moved_kill": moved_kill,
        "adopted_kill": adopted,
        "playback_s_kill": playback_s,
        "fewest_copies": fewest[0],
        "rejoin_s": rejoin,
        "moved_rejoin": back["slots_gained"],
        "lost_by_others_rejoin": moved_lost,
        "adopted_rejoin": rejoin_adopted,
        "playback_s_rejoin": back["playback_seconds"],
    }


def summarize(
    args: argparse.Namespace, rounds: list[dict[str, Any]], initial: float
) -> dict[str, Any]:
    adopted = sum(r["adopted_kill"] + r["adopted_rejoin"] for r in rounds)
    playback = sum(r["playback_s_kill"] + r["playback_s_rejoin"] for r in rounds)
    return {
        "instances": args.instances,
        "members": args.members,
        "kills": args.kills,
        "member_ttl_s": args.member_ttl,
        "initial_sync_s": initial,
        "takeover_slots_s": percentiles([r["takeover_slots_s"] for r in rounds]),
        "takeover_copies_s": percentiles([r["takeover_copies_s"] for r in rounds]),
        "rejoin_s": percentiles([r["rejoin_s"] for r in rounds]),
        "slots_moved_kill": sorted({r["moved_kill"] for r in rounds}),
        "slots_moved_rejoin": sorted({r["moved_rejoin"] for r in rounds}),
        "slots_lost_by_others_rejoin": sorted({r["lost_by_others_rejoin"] for r in rounds}),
        "copies_adopted": adopted,
        "playback_seconds": playback,
        "playback_copies_per_s": adopted / playback if playback else 0.0,
        "fewest_copies_during_takeover": min(r["fewest_copies"] for r in rounds),
        "rounds": rounds,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--member-ttl", type=float, default=3.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    binary = find_etcd()
    if binary is None:
        print("etcd not installed (apt-get install etcd-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pysyncer-scaleout-") as tmp:
        report = run(args, binary, Path(tmp))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"scale-out: {args.members} syncers of dc B on etcd, {args.instances} instances "
          f"of dc A, member TTL {args.member_ttl:g} s, {args.kills} kill -9 rounds")  # fmt: skip
    print(f"  initial sync (every copy once)  {report['initial_sync_s']:.1f} s")
    for key, label in (
        ("takeover_slots_s", "takeover, slots owned"),
        ("takeover_copies_s", "takeover, copies held"),
        ("rejoin_s", "rejoin, slots rebalanced"),
    ):
        p = report[key]
        print(f"  {label:<32} p50 {p['p50']:.2f} s  p99 {p['p99']:.2f} s  max {p['max']:.2f} s")
    print(f"  slots moved per kill            {report['slots_moved_kill']}")
    print(f"  slots moved per rejoin          {report['slots_moved_rejoin']} "
          f"(lost by the others: {report['slots_lost_by_others_rejoin']})")  # fmt: skip
    rate = report["playback_copies_per_s"]
    print(f"  playback                        {report['copies_adopted']} copies adopted in "
          f"{report['playback_seconds']:.2f} s: {rate:,.0f} copies/s")  # fmt: skip
    print(f"  fewest copies during takeovers  {report['fewest_copies_during_takeover']} "
          f"of {args.instances}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
