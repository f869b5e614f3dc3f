"""Several syncers in one data center on a real etcd: slots split, kill -9, takeover.

Data center A has one syncer (embedded registry); data center B has one registry
(``pysyncer registry``) and three syncers sharing an etcd prefix. Every instance of A
gets exactly one copy in B's registry; when a B syncer is killed its slots move to the
other two within the member lease plus a few seconds, no copy lapses or doubles, and
changes keep flowing; when it comes back the slots rebalance, still without duplicates.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.etcd_helpers import EtcdServer, etcd_server
from tests.sync_helpers import (
    ORIGIN_DC,
    RegistryClient,
    RegistryProcess,
    SyncDaemon,
    eventually,
)
from tests.test_sync_e2e import Cluster, cluster

__all__ = ["cluster", "etcd_server"]

pytestmark = [pytest.mark.needs_server("etcd"), pytest.mark.timeout(240)]

INSTANCES = 1000
SERVICES = 100
MEMBER_TTL = "3"
SLOTS = 16384


def copies(client: RegistryClient) -> Counter[str]:
    """origin id -> number of copies in the registry (a duplicate shows as 2)."""
    return Counter(
        f"{i['properties'][ORIGIN_DC]}/{i['properties']['pysyncer.origin.id']}"
        for i in client.copies()
    )


def ownership(daemon: SyncDaemon) -> dict[str, Any]:
    return dict(daemon.status()["ownership"])


def split_evenly(members: list[SyncDaemon]) -> bool:
    views = [ownership(d) for d in members]
    owned = [v["slots_owned"] for v in views]
    return (
        len({v["epoch"] for v in views}) == 1
        and sum(owned) == SLOTS
        and max(owned) - min(owned) <= 1
        and not any(v["slots_pending"] for v in views)
    )


def test_three_syncers_share_a_data_center_and_survive_a_kill(
    cluster: Cluster, etcd_server: EtcdServer
) -> None:
    registry_b = cluster.registry("registry-b")
    a = cluster.daemon("sa", "127.0.0.71")
    eventually(a.ready, 20, "a up", a)
    store = f"etcd://{etcd_server.endpoint}?prefix=/pysyncer-test/{uuid.uuid4().hex[:8]}/"
    shared = ("--dc", "dc-sb", "--sc-addr", registry_b.url, "--store", store)
    b = [
        cluster.daemon(f"sb{n}", f"127.0.0.7{n + 2}", "--join", a.bind, *shared,
                    "--member-ttl", MEMBER_TTL)
        for n in range(3)
    ]  # fmt: skip
    eventually(lambda: all(d.ready() for d in b), 30, "b syncers up", *b)

    eventually(lambda: split_evenly(b), 30, "slots split over three syncers", *b)

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
            client.call("PUT", "/registry/heartbeats", {"Instances": list(alive)})


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
