"""Several syncers in one data center on a real etcd: slots split, kill -9, takeover.

Data center A has one syncer (embedded registry); data center B has one registry
(``pysyncer registry``) and three syncers sharing an etcd prefix. Every instance of A
gets exactly one copy in B's registry; when a B syncer is killed its slots move to the
other two within the member lease plus a few seconds, no copy lapses or doubles, and
changes keep flowing; when it comes back the slots rebalance, still without duplicates.
Stopping etcd itself (for ``PYSYNCER_ETCD_OUTAGE`` seconds) loses nothing either.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pysyncer.procs import ownership, split_evenly
from tests.conftest import require_program
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix
from tests.support.sync import (
    Cluster,
    RegistryClient,
    RegistryProcess,
    SyncDaemon,
    cluster,
    eventually,
)

__all__ = ["cluster", "etcd_server"]

pytestmark = [pytest.mark.needs_server("etcd"), pytest.mark.timeout(240)]

INSTANCES = 1000
SERVICES = 100
MEMBER_TTL = "3"
SLOTS = 16384


def copies(client: RegistryClient) -> Counter[str]:
    """origin id -> number of copies in the registry (a duplicate shows as 2)."""
    return Counter(client.copy_origins())


def two_data_centers(
    cluster: Cluster, tag: str, registry: str, subnet: int, store: str, members: int
) -> tuple[RegistryProcess, SyncDaemon, list[SyncDaemon]]:
    """B's registry; A's syncer ``<tag>a`` on 127.0.0.<subnet>1; ``members`` syncers
    ``<tag>b<n>`` of dc ``dc-<tag>b`` on 127.0.0.<subnet><n + 2> sharing ``store``, up
    and with the slots split evenly."""
    registry_b = cluster.registry(registry)
    a = cluster.daemon(f"{tag}a", f"127.0.0.{subnet}1")
    eventually(a.ready, 20, "a up", a)
    shared = ("--dc", f"dc-{tag}b", "--sc-addr", registry_b.url, "--store", store)
    b = [
        cluster.daemon(f"{tag}b{n}", f"127.0.0.{subnet}{n + 2}", "--join", a.bind, *shared,
                    "--member-ttl", MEMBER_TTL)
        for n in range(members)
    ]  # fmt: skip
    eventually(lambda: all(d.ready() for d in b), 30, "b syncers up", *b)
    count = {2: "two", 3: "three"}.get(members, str(members))
    eventually(lambda: split_evenly(b), 30, f"slots split over {count} syncers", *b)
    return registry_b, a, b


def test_three_syncers_share_a_data_center_and_survive_a_kill(
    cluster: Cluster, etcd_server: EtcdServer
) -> None:
    store = f"etcd://{etcd_server.endpoint}?prefix={unique_prefix()}"
    registry_b, a, b = two_data_centers(cluster, "s", "registry-b", 7, store, 3)

    services = [a.client.create_service("shop", f"svc-{k}") for k in range(SERVICES)]
    # The applications heartbeat (their TTL, and their copies', is 10 s): a copy in B
    # lapses only if no syncer of B renews it, e.g. while its slot changes owner.
    alive: list[dict[str, str]] = []
    stop = threading.Event()
    beating = threading.Thread(target=heartbeat, args=(a.client, alive, stop), daemon=True)
    beating.start()
    try:
        for n in range(INSTANCES):
            sid = services[n % SERVICES]
            iid = a.client.register(
                sid, f"h{n}", [f"rest://10.9.{n // 250}.{n % 250}:80"], interval=5, times=1
            )
            alive.append({"serviceId": sid, "instanceId": iid})
        check_takeover(cluster, a, b, registry_b, services)
    finally:
        stop.set()
        beating.join(10)


def heartbeat(client: RegistryClient, alive: list[dict[str, str]], stop: threading.Event) -> None:
    while not stop.wait(2.0):
        with contextlib.suppress(OSError, ValueError):
            client.heartbeat_set(list(alive))


def check_takeover(
    cluster: Cluster,
    a: SyncDaemon,
    b: list[SyncDaemon],
    registry_b: RegistryProcess,
    services: list[str],
) -> None:
    def exactly_once(expected: int) -> bool:
        seen = copies(registry_b.client)
        return len(seen) == expected and set(seen.values()) == {1}

    eventually(lambda: exactly_once(INSTANCES), 90, "every instance copied once", a, *b)
    assert sum(ownership(d)["slots_owned"] for d in b) == SLOTS

    # kill -9 one syncer of B: its slots move, copies neither lapse nor double
    victim, survivors = b[1], [b[0], b[2]]
    epoch = ownership(b[0])["epoch"]
    victim.kill()
    killed_at = time.monotonic()
    eventually(lambda: split_evenly(survivors), 30, "slots taken over", *survivors)
    takeover = time.monotonic() - killed_at
    assert ownership(b[0])["epoch"] > epoch
    assert takeover < 20, takeover
    for _ in range(10):  # copies of the dead syncer's slots live on (TTL 10 s)
        seen = copies(registry_b.client)
        assert len(seen) == INSTANCES, (len(seen), [d.status()["importer"] for d in survivors])
        assert set(seen.values()) == {1}, [k for k, v in seen.items() if v > 1][:5]
        time.sleep(1)

    # changes keep flowing into the slots that moved
    for n in range(INSTANCES, INSTANCES + 50):
        a.client.register(services[n % SERVICES], f"h{n}", ["rest://10.10.0.1:80"])
    eventually(lambda: exactly_once(INSTANCES + 50), 60, "new instances copied", a, *survivors)

    # the killed syncer comes back: slots rebalance over three, still one copy each
    back = cluster.restart(victim)
    eventually(back.ready, 30, "syncer back", back)
    members = [b[0], back, b[2]]
    eventually(lambda: split_evenly(members), 30, "slots rebalanced over three", *members)
    for _ in range(5):
        seen = copies(registry_b.client)
        assert len(seen) == INSTANCES + 50, (len(seen), [d.log()[-3000:] for d in members])
        assert set(seen.values()) == {1}, [k for k, v in seen.items() if v > 1][:5]
        time.sleep(1)
    exporters = [d for d in members if ownership(d)["leader"] == d.name]
    assert len(exporters) == 1  # one leader exports dc-sb


# -- etcd outage ------------------------------------------------------------------------

OUTAGE = float(os.environ.get("PYSYNCER_ETCD_OUTAGE", "5"))
"""How long etcd is down. The suite uses 5 s; the issue's 30 s is run by hand:
``PYSYNCER_ETCD_OUTAGE=30 .venv/bin/pytest tests/test_scaleout_e2e.py -k outage``."""


@pytest.mark.timeout(200 + 3 * OUTAGE)
def test_an_etcd_outage_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    """Two B syncers on an etcd of their own, which is stopped for OUTAGE seconds: copies
    keep being renewed and changes keep flowing (store writes queue, status shows the
    store degraded); after etcd is back every queued write lands, nothing is lost or
    doubled (the changes made in A during the outage included), and sync goes on."""
    server = EtcdServer(require_program("etcd", "etcd-server"), tmp_path / "etcd")
    (tmp_path / "etcd").mkdir()
    server.start()
    try:
        check_outage(cluster, server)
    finally:
        server.close()


def check_outage(cluster: Cluster, server: EtcdServer) -> None:
    count, services_n = 200, 20
    store = f"{server.url}?prefix=/pysyncer-outage/{uuid.uuid4().hex[:8]}/"
    registry_b, a, b = two_data_centers(cluster, "o", "registry-ob", 8, store, 2)

    services = [a.client.create_service("shop", f"out-{k}") for k in range(services_n)]
    alive = Alive()  # the applications heartbeat: TTL 10 s, so are their copies'
    stop = threading.Event()
    beating = threading.Thread(target=alive.beat, args=(a.client, stop), daemon=True)
    beating.start()

    def register(n: int) -> None:
        sid = services[n % services_n]
        iid = a.client.register(sid, f"o{n}", [f"rest://10.8.0.{n % 250}:80"], interval=5, times=1)
        alive.add(sid, iid)

    def expected() -> set[str]:
        return {f"{a.dc}/{iid}" for iid in alive.ids()}

    def exactly(want: set[str]) -> bool:
        seen = copies(registry_b.client)
        return set(seen) == want and set(seen.values()) <= {1}

    try:
        for n in range(count):
            register(n)
        eventually(lambda: exactly(expected()), 60, "every instance copied once", a, *b)
        assert all(d.status()["store"]["status"] == "ok" for d in b)

        server.stop()  # the outage
        down_at = time.monotonic()
        kept = expected()  # copies that must stay all along (renewed without etcd)
        degraded: set[str] = set()
        changed = False
        while time.monotonic() - down_at < OUTAGE:
            if not changed and time.monotonic() - down_at > min(1.0, OUTAGE / 4):
                for n in range(count, count + 20):  # new instances while etcd is down
                    register(n)
                for sid, iid in alive.targets()[:10]:  # and deleted ones
                    alive.remove(iid)
                    kept.discard(f"{a.dc}/{iid}")
                    a.client.unregister(sid, iid)
                changed = True
            for d in b:
                if d.status()["store"]["status"] == "degraded":
                    degraded.add(d.name)
            seen = copies(registry_b.client)  # no copy lapses, none doubles
            assert set(seen.values()) <= {1}, [k for k, v in seen.items() if v > 1][:5]
            assert kept <= set(seen), sorted(kept - set(seen))[:5]
            time.sleep(0.5)
        assert degraded == {d.name for d in b}, degraded
        applied_during = exactly(expected())  # today yes (registry writes need no etcd)

        server.start()  # etcd is back: queued writes land, the stores are healthy again
        up_at = time.monotonic()

        def healthy() -> bool:
            stores = [d.status()["store"] for d in b]
            return all(s["status"] == "ok" and s["queued"] == 0 for s in stores)

        eventually(healthy, 60, "stores healthy after the outage", *b)
        recovered = time.monotonic() - up_at
        assert all(d.status()["store"]["dropped"] == 0 for d in b)
        eventually(lambda: split_evenly(b), 30, "slots still split", *b)
        for n in range(count + 20, count + 40):  # sync resumes
            register(n)
        eventually(lambda: exactly(expected()), 60, "sync resumes after the outage", a, *b)
        for _ in range(3):
            assert exactly(expected())
            time.sleep(1)
        print(
            f"etcd outage {OUTAGE:.0f} s: changes applied during it: {applied_during}; "
            f"stores healthy {recovered:.1f} s after etcd restarted"
        )
    finally:
        stop.set()
        beating.join(10)


class Alive:
    """Instances registered in A and their heartbeats (a thread beats while the test
    registers and deletes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, str] = {}  # instance id -> service id

    def add(self, sid: str, iid: str) -> None:
        with self._lock:
            self._targets[iid] = sid

    def remove(self, iid: str) -> None:
        with self._lock:
            self._targets.pop(iid, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    def targets(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(sid, iid) for iid, sid in self._targets.items()]

    def beat(self, client: RegistryClient, stop: threading.Event) -> None:
        while not stop.wait(2.0):
            body = [{"serviceId": sid, "instanceId": iid} for sid, iid in self.targets()]
            with contextlib.suppress(OSError, ValueError):
                client.heartbeat_set(body)
