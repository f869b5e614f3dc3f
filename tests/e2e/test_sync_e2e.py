"""The sync engine end to end: real ``pysyncer daemon`` subprocesses, design section 2.

Every daemon, registry and Serf agent is started by the test and stopped by its pid;
every wait is bounded. Registries are driven through their REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc import sync_pb2_grpc as pb_grpc
from pysyncer.sync.tags import syncer_tags
from tests.conftest import require_program
from tests.support.gossip import SerfAgent, free_port
from tests.support.sync import (
    ORIGIN_DC,
    ORIGIN_ID,
    Cluster,
    RegistryClient,
    SyncDaemon,
    cluster,
    eventually,
    view,
)

__all__ = ["cluster"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

Expected = dict[str, dict[str, tuple[Any, ...]]]  # dc -> origin instance id -> view


def copies_by_origin(client: RegistryClient) -> dict[str, dict[str, tuple[Any, ...]]]:
    """origin dc -> origin id -> view; a duplicate copy fails the assertion."""
    found: dict[str, dict[str, tuple[Any, ...]]] = {}
    for copy in client.copies():
        properties = copy["properties"]
        per_dc = found.setdefault(properties[ORIGIN_DC], {})
        origin_id = properties[ORIGIN_ID]
        assert origin_id not in per_dc, f"duplicate copy of {properties}"
        per_dc[origin_id] = view(copy)
    return found


def converged(clients: dict[str, RegistryClient], expected: Expected) -> bool:
    """Each registry: its originals exactly, and exactly one copy of every other's."""
    for dc, client in clients.items():
        originals = {i["instanceId"]: view(i) for i in client.originals()}
        if originals != expected[dc]:
            return False
        want = {other: ids for other, ids in expected.items() if other != dc and ids}
        if copies_by_origin(client) != want:
            return False
    return True


def assert_converged(
    clients: dict[str, RegistryClient], expected: Expected, timeout: float, *logs: Any
) -> None:
    eventually(lambda: converged(clients, expected), timeout, "convergence", *logs)
    for dc, client in clients.items():
        for copy in client.copies():  # never a copy of a copy, nor of itself
            assert copy["properties"][ORIGIN_DC] != dc
            assert copy["instanceId"].startswith("px")


# -- 1. three data centers -------------------------------------------------------------


def test_three_dcs_converge_on_register_update_delete(cluster: Cluster) -> None:
    a = cluster.daemon("a", "127.0.0.51")
    b = cluster.daemon("b", "127.0.0.52", "--join", a.bind)
    c = cluster.daemon("c", "127.0.0.53", "--join", a.bind)
    daemons = [a, b, c]
    eventually(lambda: all(d.ready() for d in daemons), 20, "daemons up", *daemons)
    eventually(lambda: all(len(d.members()) == 3 for d in daemons), 20, "pool of 3", *daemons)
    clients = {d.dc: d.client for d in daemons}
    expected: Expected = {}
    sids: dict[str, dict[str, str]] = {}
    for n, d in enumerate(daemons):
        shared = d.client.create_service("shop", "orders")  # the same service everywhere
        own = d.client.create_service("shop", f"only-{d.name}")
        sids[d.dc] = {}
        for k in range(4):
            sid = shared if k % 2 else own
            iid = d.client.register(
                sid, f"{d.name}-h{k}", [f"rest://10.0.{n}.{k}:80"], properties={"k": str(k)}
            )
            sids[d.dc][iid] = sid

    def snapshot() -> Expected:
        return {d.dc: {i["instanceId"]: view(i) for i in d.client.originals()} for d in daemons}

    expected = snapshot()
    assert all(len(v) == 4 for v in expected.values())
    assert_converged(clients, expected, 30, *daemons)

    # Update status, properties and endpoints; delete one, in every data center.
    for n, d in enumerate(daemons):
        ids = sorted(sids[d.dc])
        d.client.set_status(sids[d.dc][ids[0]], ids[0], "DOWN")
        d.client.set_properties(sids[d.dc][ids[1]], ids[1], {"color": "blue", "k": "x"})
        d.client.register(
            sids[d.dc][ids[2]], f"{d.name}-h2", [f"rest://10.9.{n}.2:81"], instance_id=ids[2]
        )
        d.client.unregister(sids[d.dc][ids[3]], ids[3])
    expected = snapshot()
    assert all(len(v) == 3 for v in expected.values())
    statuses = {v[3] for per in expected.values() for v in per.values()}
    assert "DOWN" in statuses
    assert_converged(clients, expected, 30, *daemons)
    for d in daemons:
        exported = d.status()["exported"]
        assert exported == 3, d.status()  # copies are never exported back


# -- 2/3. kill -9 during a burst ------------------------------------------------------


def burst(client: RegistryClient, sid: str, count: int, prefix: str) -> list[str]:
    """``count`` changes: registrations, then updates and deletes of some of them."""
    ids: list[str] = []
    done = 0
    while done < count:
        step = done % 5
        if step in (0, 1, 2) or len(ids) < 3:
            ids.append(client.register(sid, f"{prefix}-{done}", [f"rest://{prefix}-{done}.test:1"]))
        elif step == 3:
            client.set_status(sid, ids[len(ids) // 2], "DOWN")
        else:
            client.unregister(sid, ids.pop(0))
        done += 1
    return ids


def external_pair(cluster: Cluster, tag: str) -> tuple[SyncDaemon, SyncDaemon]:
    """dc a and dc b, each with its own registry process (so a syncer kill keeps them)."""
    reg_a = cluster.registry(f"reg-{tag}a")
    reg_b = cluster.registry(f"reg-{tag}b")
    a = cluster.daemon(f"{tag}a", "127.0.0.61", "--sc-addr", reg_a.url)
    b = cluster.daemon(f"{tag}b", "127.0.0.62", "--sc-addr", reg_b.url, "--join", a.bind)
    eventually(lambda: a.ready() and b.ready(), 20, "daemons up", a, b)
    eventually(lambda: len(a.members()) == 2, 20, "pool", a, b)
    return a, b


def two_dc_expected(a: SyncDaemon, b: SyncDaemon) -> Expected:
    return {d.dc: {i["instanceId"]: view(i) for i in d.client.originals()} for d in (a, b)}


def test_kill_exporting_syncer_during_burst_loses_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    a, b = external_pair(cluster, "x")
    sid = a.client.create_service("shop", "burst")
    burst(a.client, sid, 300, "pre")
    killed = threading.Timer(0.3, a.kill)  # mid-burst
    killed.start()
    burst(a.client, sid, 700, "mid")
    killed.join()
    assert a.process.poll() is not None
    a = cluster.restart(a)
    eventually(a.ready, 20, "a back", a)
    clients = {a.dc: a.client, b.dc: b.client}
    expected = two_dc_expected(a, b)
    assert len(expected[a.dc]) == 400
    assert_converged(clients, expected, 60, a, b)


def test_kill_importing_syncer_during_burst_leaves_exact_copies(cluster: Cluster) -> None:
    a, b = external_pair(cluster, "y")
    sid = a.client.create_service("shop", "burst")
    burst(a.client, sid, 200, "pre")
    killed = threading.Timer(0.5, b.kill)
    killed.start()
    burst(a.client, sid, 800, "mid")
    killed.join()
    b = cluster.restart(b)
    eventually(b.ready, 20, "b back", b)
    clients = {a.dc: a.client, b.dc: b.client}
    assert_converged(clients, two_dc_expected(a, b), 60, a, b)
    assert len(b.client.copies()) == len(a.client.originals())


# -- 4. local registry restarted empty -------------------------------------------------


def test_registry_restart_with_empty_state_gets_copies_back(cluster: Cluster) -> None:
    reg = cluster.registry("reg-z")
    a = cluster.daemon("za", "127.0.0.71")
    b = cluster.daemon("zb", "127.0.0.72", "--sc-addr", reg.url, "--join", a.bind)
    b.client = reg.client
    eventually(lambda: a.ready() and b.ready(), 20, "daemons up", a, b)
    eventually(lambda: len(a.members()) == 2, 20, "pool", a, b)
    sid_a = a.client.create_service("shop", "fast")
    fast = a.client.register(sid_a, "fast", ["rest://10.2.0.1:1"], interval=2, times=1)
    slow = a.client.register(sid_a, "slow", ["rest://10.2.0.2:1"])
    stop = threading.Event()

    def beat() -> None:  # keep a's short-lived original alive (TTL 4 s)
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):
                a.client.heartbeat(sid_a, fast)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        sid_b = b.client.create_service("shop", "local")
        local = b.client.register(sid_b, "local", ["rest://10.3.0.1:1"], instance_id="b-local-1")
        clients = {a.dc: a.client, b.dc: b.client}
        assert_converged(clients, two_dc_expected(a, b), 20, a, b)
        reg.kill()
        time.sleep(1.0)
        reg = cluster.registry("reg-z", reg.port)  # same address, empty state
        b.client = reg.client
        clients[b.dc] = reg.client
        # The test client re-registers its original, as an application would.
        sid_b = reg.client.create_service("shop", "local")
        reg.client.register(sid_b, "local", ["rest://10.3.0.1:1"], instance_id=local)
        expected = two_dc_expected(a, b)
        assert set(expected[a.dc]) == {fast, slow}
        # Observed: ~30 s (one change-feed long-poll) before b notices the empty registry.
        assert_converged(clients, expected, 45, a, b)
    finally:
        stop.set()
        beater.join(timeout=5)


# -- 5. a late joiner ----------------------------------------------------------------


def test_late_joiner_gets_a_full_view(cluster: Cluster) -> None:
    a = cluster.daemon("la", "127.0.0.81")
    eventually(a.ready, 20, "a up", a)
    sid = a.client.create_service("shop", "early")
    for k in range(20):
        a.client.register(sid, f"early-{k}", [f"rest://10.4.0.{k}:1"])
    b = cluster.daemon("lb", "127.0.0.82", "--join", a.bind)
    eventually(b.ready, 20, "b up", b)
    sid_b = b.client.create_service("shop", "late")
    b.client.register(sid_b, "late-0", ["rest://10.5.0.1:1"])
    assert_converged({a.dc: a.client, b.dc: b.client}, two_dc_expected(a, b), 30, a, b)


# -- 6. bad input ---------------------------------------------------------------------


class FakeServiceCenter:
    """A Service-Center on loopback: valid answers, but garbage on some listings."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.listings = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v4/{p}/registry/version", self._version)
        app.router.add_get("/v4/{p}/govern/microservices", self._listing)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "2.1.0", "apiVersion": "4"})

    async def _listing(self, request: web.Request) -> web.StreamResponse:
        self.listings += 1
        headers = {"X-Resource-Revision": str(self.listings)}
        if self.listings == 1:
            return web.Response(body=b"{not json\x00\xff", headers=headers)
        if self.listings == 2:
            big = b'{"allServicesDetail": [' + b" " * (17 * 1024 * 1024) + b"]}"
            return web.Response(body=big, headers=headers, content_type="application/json")
        if self.listings == 3:
            return web.json_response({"allServicesDetail": "nope"}, headers=headers)
        service = {"serviceId": "s1", "appId": "shop", "serviceName": "fake", "version": "1.0.0"}
        instance = {
            "instanceId": "i1",
            "serviceId": "s1",
            "hostName": "fake-1",
            "endpoints": ["rest://10.6.0.1:1"],
            "status": "UP",
            "healthCheck": {"mode": "push", "interval": 30, "times": 3},
        }
        body = {"allServicesDetail": [{"microService": service, "instances": [instance]}]}
        return web.json_response(body, headers=headers)

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class GarbagePeer(pb_grpc.SyncServicer):
    """A 'syncer' answering every call with malformed data."""

    async def Health(self, request: Any, context: Any) -> Any:
        return pb.HealthReply(dc="dc-evil", node="evil", revision=5, epoch="e1", version="0")

    async def GetDigests(self, request: Any, context: Any) -> Any:
        return pb.DigestTable(dc="dc-evil", revision=5, epoch="e1", table=b"\x01\x02\x03")

    async def Watch(self, request: Any, context: Any) -> Any:
        yield pb.PeerBatch(dc="dc-evil", epoch="e1", revision=6, records=b"\xc1garbage\xff")

    async def PullSlots(self, request: Any, context: Any) -> Any:
        yield pb.SlotBatch(dc="dc-evil", last=True, records=b"\xc1\xc1")


class GarbageRpcServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: Any = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> Any:
        server = grpc.aio.server()
        pb_grpc.add_SyncServicer_to_server(GarbagePeer(), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        return server

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def test_garbage_registry_answers_are_counted_and_survived(cluster: Cluster) -> None:
    fake = FakeServiceCenter()
    try:
        a = cluster.daemon("ga", "127.0.0.91", "--sc-addr", fake.url)
        eventually(lambda: a.get("/v1/sync/status")["exported"] == 1, 30, "export", a)
        status = a.status()
        # the importer's check of held copies at start lists the registry first, then the
        # exporter: between them, every garbage answer is counted
        counted = sum(
            status[part]["errors"].get("BadResponseError", 0) for part in ("importer", "exporter")
        )
        assert counted >= 3, status
        assert a.process.poll() is None
        assert fake.listings >= 4
    finally:
        fake.close()


def test_malformed_rpc_peer_is_counted_and_survived(cluster: Cluster, tmp_path: Path) -> None:
    serf = require_program("serf", "serf")
    evil = GarbageRpcServer()
    agent: SerfAgent | None = None
    try:
        a = cluster.daemon("ma", "127.0.0.101")
        b = cluster.daemon("mb", "127.0.0.102", "--join", a.bind)
        eventually(lambda: a.ready() and b.ready(), 20, "daemons up", a, b)
        tags = syncer_tags("dc-evil", f"127.0.0.1:{evil.port}")
        agent = SerfAgent(serf, "evil", tmp_path, tags=tags, profile="lan")
        agent.wait_ready()
        agent.cli("join", a.bind)

        def evil_errors() -> int:
            remote = a.status()["remote"].get("dc-evil", {})
            return sum(remote.get("errors", {}).values())

        eventually(lambda: evil_errors() >= 2, 30, "errors from the evil peer", a)
        # The real peers keep syncing meanwhile.
        sid = b.client.create_service("shop", "alive")
        b.client.register(sid, "alive-1", ["rest://10.7.0.1:1"])
        eventually(lambda: len(a.client.copies()) == 1, 20, "copy despite the evil peer", a, b)
        assert a.process.poll() is None and b.process.poll() is None
        assert json.dumps(a.status())  # status still answers
        assert a.status()["remote"]["dc-evil"]["copies"] == 0
    finally:
        if agent is not None:
            agent.stop()
        evil.close()


# -- 7. filters and directions ----------------------------------------------------------


def test_filters_and_directions_end_to_end(cluster: Cluster) -> None:
    """An export exclude rule keeps a service home (and takes back what it had sent); a
    receive-only syncer imports but exports nothing; an import rule refuses an origin, which
    is then not followed at all (no link)."""
    config_a = cluster.workdir / "fa.toml"
    config_a.write_text('[[export.exclude]]\nname = "secret*"\n')
    config_c = cluster.workdir / "fc.toml"
    config_c.write_text('direction = "receive"\n[[import.exclude]]\ndc = "dc-fb"\n')
    a = cluster.daemon("fa", "127.0.0.91", "--config", str(config_a))
    eventually(a.ready, 20, "a up", a)
    b = cluster.daemon("fb", "127.0.0.92", "--join", a.bind)
    c = cluster.daemon("fc", "127.0.0.93", "--join", a.bind, "--config", str(config_c))
    eventually(lambda: b.ready() and c.ready(), 20, "b and c up", b, c)
    public = a.client.create_service("shop", "public")
    secret = a.client.create_service("shop", "secret-keys")
    a.client.register(public, "pub-1", ["rest://10.6.0.1:1"])
    a.client.register(secret, "sec-1", ["rest://10.6.0.2:1"])
    b.client.register(b.client.create_service("shop", "from-b"), "b-1", ["rest://10.6.0.3:1"])
    c.client.register(c.client.create_service("shop", "from-c"), "c-1", ["rest://10.6.0.4:1"])

    def origins(client: RegistryClient) -> dict[str, list[str]]:
        """origin dc -> names of the services copied from it."""
        found: dict[str, list[str]] = {}
        for copy in client.copies():
            found.setdefault(copy["properties"][ORIGIN_DC], []).append(copy["_service"])
        return found

    want_b = {"dc-fa": ["shop/public/1.0.0"]}  # not the secret service, nothing from receive-only c
    want_c = {"dc-fa": ["shop/public/1.0.0"]}  # nothing from dc-fb: its import rule refuses it
    want_a = {"dc-fb": ["shop/from-b/1.0.0"]}  # nothing from receive-only c
    seen: dict[str, dict[str, list[str]]] = {}

    def filtered() -> bool:
        seen.update(a=origins(a.client), b=origins(b.client), c=origins(c.client))
        return seen["a"] == want_a and seen["b"] == want_b and seen["c"] == want_c

    try:
        eventually(filtered, 30, "filtered convergence", a, b, c)
    except AssertionError:
        raise AssertionError(f"copies seen: {seen}") from None
    status = c.status()
    assert status["exported"] == 0  # c sends nothing (not only: nothing arrived yet)
    assert status["filters"]["direction"] == "receive"
    assert "dc-fb" not in status["remote"]  # c imports nothing of dc-fb: no link to it
    assert status["filters"]["not_followed"] == {
        "dc-fb": "import.exclude[1] (dc='dc-fb') refuses all of it"
    }
    # the secret instance's event may reach a's exporter after the copies converged
    eventually(lambda: a.status()["exporter"]["filtered"] >= 1, 20, "a filters secret", a)
    assert c.status()["importer"]["filtered"] == 0  # no record of dc-fb even reaches c


def test_a_new_import_rule_removes_held_copies_after_a_restart(cluster: Cluster) -> None:
    """Copies held before a restart that a new import rule refuses go though their origin
    changed nothing: a service rule's at start, a metadata rule's at the first repair."""
    reg = cluster.registry("reg-ib")
    config_b = cluster.workdir / "ib.toml"
    config_b.write_text('direction = "both"\n')
    a = cluster.daemon("ia", "127.0.0.97")
    b = cluster.daemon(
        "ib", "127.0.0.98", "--sc-addr", reg.url, "--join", a.bind, "--config", str(config_b)
    )
    eventually(lambda: a.ready() and b.ready(), 20, "daemons up", a, b)
    eventually(lambda: len(a.members()) == 2, 20, "pool", a, b)
    keep = a.client.create_service("shop", "keep")
    drop = a.client.create_service("shop", "drop-me")
    mixed = a.client.create_service("shop", "mixed")
    a.client.register(keep, "keep-1", ["rest://10.7.0.1:1"])
    a.client.register(drop, "drop-1", ["rest://10.7.0.2:1"])
    a.client.register(drop, "drop-2", ["rest://10.7.0.3:1"])
    a.client.register(mixed, "cache-1", ["rest://10.7.0.4:1"], properties={"tier": "cache"})
    a.client.register(mixed, "web-1", ["rest://10.7.0.5:1"], properties={"tier": "web"})

    def copies() -> set[tuple[str, str]]:
        return {(c["_service"], c["hostName"]) for c in b.client.copies()}

    everything = {
        ("shop/keep/1.0.0", "keep-1"),
        ("shop/drop-me/1.0.0", "drop-1"),
        ("shop/drop-me/1.0.0", "drop-2"),
        ("shop/mixed/1.0.0", "cache-1"),
        ("shop/mixed/1.0.0", "web-1"),
    }
    eventually(lambda: copies() == everything, 30, "all copied", a, b)
    config_b.write_text(
        '[[import.exclude]]\nname = "drop*"\n'
        '[[import.exclude]]\nname = "mixed"\nmetadata = "tier=cache"\n'
    )
    b = cluster.restart(b)  # a changes nothing: its digests still match b's mapping
    eventually(b.ready, 20, "b back", b)
    want = {("shop/keep/1.0.0", "keep-1"), ("shop/mixed/1.0.0", "web-1")}
    # The service rule at start; the metadata rule at the first repair (within a
    # heartbeat of the link, 5 s), not at the next anti-entropy round (60 s).
    eventually(lambda: copies() == want, 20, "refused copies removed", a, b)
    assert "import filter: 2 held copies removed" in b.log()
    assert b.status()["importer"]["filtered"] >= 3
    assert copies() == want  # the kept ones stay
