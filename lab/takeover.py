"""The leader-kill lapse experiment of issue 15, in the lab: who held what, what lapsed.

    python -m lab.takeover [--instances 2000] [--services 100] [--member-ttl 10] [--ttl 10]

``dc-a`` (one syncer) holds ``--instances`` instances over ``--services`` services, kept
alive by their applications (TTL ``--ttl`` s); ``dc-b`` has three syncers sharing a
3-member etcd (``--member-ttl``). Once every instance has one copy in ``dc-b``, each
round reads every ``dc-b`` syncer's held copies from its status (``remote.dc-a.copies``),
kills the leader with kill -9, samples ``dc-b``'s registry every 0.2 s until every copy
is back, and prints: copies the victim held, copies that lapsed (ids gone at some sample
while their original lived), how many of those were in services the victim held, and
the fewest copies listed. Owns no checks of the chaos runner; stops everything it starts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from lab.churn import Applications
from lab.cluster import DcSpec, Lab, Timing, wait
from lab.invariants import registry_view
from lab.net import LabError, Network, lab_unavailable

__all__ = ["main"]


def copies_in(lab: Lab) -> set[str]:
    view = registry_view("dc-b", lab.dcs[1].client.instances(timeout=10))
    return {c.origin_id for c in view.copies}


def services_of(lab: Lab) -> dict[str, str]:
    """origin id -> service name, from dc-a's registry."""
    view = registry_view("dc-a", lab.dcs[0].client.instances(timeout=10))
    return {iid: str(v[0]) for iid, v in view.originals.items()}


def held_by(lab: Lab) -> dict[str, int]:
    return {s.name: int(s.status()["remote"].get("dc-a", {}).get("copies", 0))
            for s in lab.dcs[1].syncers}  # fmt: skip


def leader_of(lab: Lab) -> str:
    return str(lab.dcs[1].syncers[0].status()["ownership"]["leader"])


def round_once(lab: Lab, expected: int, limit: float) -> dict[str, object]:
    dc_b = lab.dcs[1]
    held = held_by(lab)
    leader = leader_of(lab)
    victim = next(s for s in dc_b.syncers if s.name == leader)
    before = copies_in(lab)
    services = services_of(lab)
    killed = time.monotonic()
    victim.process.kill()
    lapsed: set[str] = set()
    fewest = len(before)
    back_at = None
    while time.monotonic() - killed < limit:
        now = copies_in(lab)
        fewest = min(fewest, len(now))
        lapsed |= before - now
        if len(now) == expected and lapsed and back_at is None:
            back_at = time.monotonic() - killed
            break
        if not lapsed and time.monotonic() - killed > limit / 2:
            break
        time.sleep(0.2)
    lab.restart_syncer(dc_b, victim)
    wait(victim.ready, 60, f"{victim.name} back", victim.process)
    lapsed &= set(services)  # the original still lives
    lapsed_services = {services[i] for i in lapsed}
    return {
        "victim": victim.name,
        "victim_held": held.get(victim.name, 0),
        "held": held,
        "lapsed": len(lapsed),
        "lapsed_services": len(lapsed_services),
        "fewest_listed": fewest,
        "back_after": back_at,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.takeover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--member-ttl", type=int, default=10)
    parser.add_argument("--ttl", type=int, default=10, help="instance TTL: interval 5 x 2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    reason = lab_unavailable()
    if reason:
        print(f"lab: {reason}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pysyncer-takeover-"))
    workdir.mkdir(parents=True, exist_ok=True)
    interval = args.ttl // 2
    timing = Timing(interval, 1, member_ttl=args.member_ttl, anti_entropy=60, origin_grace=3600)
    network = Network(workdir, 2)
    lab = Lab(network, [DcSpec("dc-a"), DcSpec("dc-b", syncers=3, etcd=True)], timing)
    app = None
    try:
        network.open()
        network.start_delays({(1, 2): (20.0, 2.0), (2, 1): (20.0, 2.0)}, seed=1)
        lab.start()
        app = Applications("dc-a", lab.dcs[0].client, seed=1, target=args.instances,
                           services=args.services, interval=interval, times=1)  # fmt: skip
        app.paused.set()  # no churn: registrations and heartbeats only
        app.start()
        wait(lambda: len(copies_in(lab)) == args.instances, 180, "every instance copied")
        for n in range(args.rounds):
            time.sleep(3 * args.member_ttl)  # rebalanced after the last rejoin
            result = round_once(lab, args.instances, limit=6.0 * args.member_ttl + 30)
            print(f"round {n + 1}: {result}", flush=True)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    finally:
        if app is not None:
            app.stopped.set()
        network.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
