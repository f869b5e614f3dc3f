# mypy: disable-error-code="import-untyped"
"""An attacker against real daemons: the sync plane's mutual TLS and identities hold.

Every daemon runs with gossip encryption (``--encrypt-file``) and mutual TLS
(``--tls-ca``/``--tls-cert``/``--tls-key``, made with :mod:`pysyncer.tlsgen`) unless the
test says otherwise; each is started by the test and stopped by its pid, every wait is
bounded. Fails if any of these regress: a plaintext client, a client of another CA and a
client with an expired certificate are refused; a certificate of one data center never
serves as another, on either side; a spoofing syncer claiming a data center changes no
copy anywhere (not even while the real syncer restarts) and raises the alarm;
certificates and the CA rotate under live traffic without losing an instance; a
non-loopback address without security refuses to start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY
from pysyncer.procs import free_port
from pysyncer.rpc import SyncClient, UnavailableError
from pysyncer.rpc.identity import dns_name
from pysyncer.rpc.tls import TlsConfig
from pysyncer.tlsgen import create_ca, create_cert
from tests.support.sync import Cluster, SyncDaemon, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
START = 60  # seconds a daemon may take to answer after its start, on a loaded CI machine
OBSERVE = threading.Event()  # never set: a bounded wait while an attack has its chance


class Pool(Cluster):
    """A :class:`Cluster` with the secrets of one pool: a gossip key and a CA (plus an
    unrelated one); its daemons run with both unless a test says otherwise."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.secrets = workdir / "secrets"
        self.key_file = self.secrets / "gossip.key"
        self.secrets.mkdir(mode=0o700)
        self.key_file.write_text(base64.b64encode(os.urandom(32)).decode())
        self.key_file.chmod(0o600)
        create_ca(self.secrets / "ca")
        create_ca(self.secrets / "evil-ca")

    def cert(
        self, dc: str, node: str, *, ca: str = "ca", now: datetime.datetime | None = None
    ) -> tuple[Path, Path]:
        """(certificate, key) of ``node`` of ``dc``, signed by ``ca`` (made on first use)."""
        out = self.secrets / f"by-{ca}"
        cert, key = out / f"{dc}-{node}.pem", out / f"{dc}-{node}-key.pem"
        if not cert.exists():
            create_cert(dc, node, ca_dir=self.secrets / ca, out_dir=out, days=1, now=now)
        return cert, key

    def flags(self, dc: str, node: str) -> list[str]:
        cert, key = self.cert(dc, node)
        return [
            "--encrypt-file", str(self.key_file), "--tls-ca", str(self.secrets / "ca" / "ca.pem"),
            "--tls-cert", str(cert), "--tls-key", str(key),
        ]  # fmt: skip

    def daemon(self, name: str, host: str, *args: str, secure: bool = True) -> SyncDaemon:
        """With ``secure``, the pool's key and a certificate of dc-``name`` come first."""
        flags = self.flags(f"dc-{name}", name) if secure else []
        return super().daemon(name, host, *flags, *args)

    def client_tls(self, dc: str, node: str, server: SyncDaemon, *, ca: str = "ca") -> TlsConfig:
        """A client certificate of ``ca`` that verifies ``server`` against the pool's CA."""
        cert, key = self.cert(dc, node, ca=ca)
        return TlsConfig(
            str(self.secrets / "ca" / "ca.pem"),
            str(cert),
            str(key),
            server_name=dns_name(server.dc, server.name),
        )


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    with contextlib.closing(Pool(tmp_path)) as made:
        yield made


def health(daemon: SyncDaemon, tls: TlsConfig | None, server_name: str | None = None) -> str:
    """The data center a Health call to ``daemon``'s sync server answers."""

    async def call() -> str:
        async with SyncClient(daemon.rpc, tls=tls, server_name=server_name, timeout=3) as c:
            return (await c.health()).dc

    return asyncio.run(call())


def copies(daemon: SyncDaemon) -> dict[str, tuple[str, ...]]:
    """origin id -> (origin dc, endpoints) of every copy in ``daemon``'s registry."""
    found = {}
    for copy in daemon.client.copies():
        properties = copy["properties"]
        found[properties[ORIGIN_ID_PROPERTY]] = (
            properties[ORIGIN_DC_PROPERTY],
            *sorted(copy.get("endpoints") or []),
        )
    return found


def originals(daemon: SyncDaemon) -> dict[str, tuple[str, ...]]:
    return {
        i["instanceId"]: (daemon.dc, *sorted(i.get("endpoints") or []))
        for i in daemon.client.originals()
    }


def metric(daemon: SyncDaemon, name: str) -> float:
    with urllib.request.urlopen(f"http://{daemon.admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def up(*daemons: SyncDaemon) -> None:
    eventually(lambda: all(d.ready() for d in daemons), START, "daemons up", *daemons)
    n = len(daemons)
    eventually(
        lambda: all(list(d.members().values()).count("alive") >= n for d in daemons),
        30,
        "the pool",
        *daemons,
    )


def synced(a: SyncDaemon, b: SyncDaemon) -> bool:
    return copies(a) == originals(b) and copies(b) == originals(a)


# -- who may talk to a daemon -------------------------------------------------------------


def test_plaintext_foreign_ca_and_expired_clients_are_refused(pool: Pool) -> None:
    a = pool.daemon("a", "127.0.0.71")
    eventually(a.ready, START, "daemon up", a)
    name = dns_name(a.dc, a.name)
    assert health(a, pool.client_tls("dc-x", "x1", a)) == a.dc  # the pool's own: served
    with pytest.raises(UnavailableError):
        health(a, None)  # plaintext
    with pytest.raises(UnavailableError):
        health(a, pool.client_tls("dc-x", "x1", a, ca="evil-ca"))  # another CA
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    cert, key = pool.cert("dc-x", "old", now=long_ago)  # valid for one day, ten days ago
    expired = TlsConfig(str(pool.secrets / "ca" / "ca.pem"), str(cert), str(key))
    with pytest.raises(UnavailableError):
        health(a, expired, name)
    assert "Traceback" not in a.log()


def test_a_certificate_of_one_data_center_never_serves_as_another(pool: Pool) -> None:
    a = pool.daemon("a", "127.0.0.72")
    eventually(a.ready, START, "daemon up", a)
    client = pool.client_tls("dc-x", "x1", a)
    # client side: gossip says the syncer at a's address serves dc-y: its certificate
    # names dc-a, so the handshake fails
    with pytest.raises(UnavailableError):
        health(a, client, dns_name("dc-y", "a"))
    with pytest.raises(UnavailableError):
        health(a, client, dns_name("dc-a", "someone-else"))
    # server side: a daemon told it is dc-y with a certificate of dc-a does not start
    cert, key = pool.cert("dc-a", "a")
    run = subprocess.run(
        [sys.executable, "-m", "pysyncer", "daemon", "--node", "a", "--dc", "dc-y",
         "--bind", f"127.0.0.72:{free_port('127.0.0.72')}",
         "--rpc-addr", f"127.0.0.1:{free_port()}", "--admin-addr", f"127.0.0.1:{free_port()}",
         "--data-dir", str(pool.workdir / "ay"), "--tls-ca", str(pool.secrets / "ca" / "ca.pem"),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYSYNCER_CONFIG": ""},
    )  # fmt: skip
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert "names node a of data center dc-a" in line and "dc-y" in line


# -- a spoofing syncer in the pool ----------------------------------------------------------


def test_a_spoofing_syncer_changes_no_copy_and_raises_the_alarm(pool: Pool) -> None:
    """The attacker holds the gossip key but no certificate of dc-b: it joins the pool
    claiming dc-b with its own registry. The real dc-b syncer then restarts."""
    a = pool.daemon("a", "127.0.0.73", "--sc-addr", pool.registry("reg-a").url)
    b = pool.daemon("b", "127.0.0.74", "--sc-addr", pool.registry("reg-b").url, "--join", a.bind)
    up(a, b)
    # Each data center's own addresses: a registration that repeats the endpoints of a
    # copy already in the registry (same service, no instance id) takes over the copy's
    # id, as in Service-Center, and is then never exported (a race with a's copies).
    for net, (daemon, count) in enumerate(((a, 2), (b, 3)), 2):
        sid = daemon.client.create_service("shop", "orders")
        for k in range(count):
            daemon.client.register(sid, f"{daemon.name}-h{k}", [f"rest://10.{net}.0.{k}:80"])
    eventually(lambda: synced(a, b), 60, "a and b in sync", a, b)
    want_a, want_b = copies(a), copies(b)

    # SyncDaemon's own --dc comes first; the last one given wins
    evil = pool.daemon(
        "evil", "127.0.0.75", "--dc", "dc-b", "--join", a.bind,
        "--encrypt-file", str(pool.key_file), secure=False,
    )  # fmt: skip
    eventually(evil.ready, START, "the spoofer up", evil)
    sid = evil.client.create_service("shop", "orders")
    evil.client.register(sid, "evil-h", ["rest://6.6.6.6:80"])

    def alarm_raised() -> bool:
        identity = a.status()["identity"]
        return "evil" in identity["claimants"].get("dc-b", {}) and identity["conflicts"] >= 1

    eventually(alarm_raised, 30, "the identity alarm on a", a, evil)
    assert metric(a, "pysyncer_identity_conflicts_total") >= 1
    assert "identity conflict: syncer evil" in a.log()
    assert a.status()["identity"]["established"]["dc-b"] == "node:b"

    b.stop()  # the real dc-b syncer goes away: only the spoofer claims dc-b now
    eventually(lambda: a.members().get("b") != "alive", 30, "b gone from a's view", a)
    eventually(lambda: a.status()["remote"]["dc-b"]["state"] == "gone", 30, "a follows nobody", a)
    OBSERVE.wait(6.0)  # the spoofer's window: a's link looks for a syncer of dc-b meanwhile
    assert copies(a) == want_a  # nothing removed, nothing of the spoofer's applied

    b = pool.restart(b)  # same data, ports and flags
    eventually(b.ready, START, "b back", b)
    b.client.register(b.client.create_service("shop", "orders"), "b-new", ["rest://10.0.1.1:80"])
    eventually(lambda: copies(a) == originals(b), 60, "a mirrors the real b", a, b)
    assert len(copies(a)) == len(want_a) + 1
    for daemon in (a, b):
        endpoints = {e for v in copies(daemon).values() for e in v[1:]}
        assert not any("6.6.6.6" in e for e in endpoints), daemon.name
    assert copies(b) == want_b == {k: (a.dc, *v[1:]) for k, v in originals(a).items()}


# -- rotation under traffic -----------------------------------------------------------------


def _swap(path: Path, data: bytes) -> None:
    staging = path.with_suffix(".new")
    staging.write_bytes(data)
    os.chmod(staging, 0o600)
    os.replace(staging, path)


def test_rotation_to_a_new_ca_under_live_traffic_loses_nothing(pool: Pool) -> None:
    """CA bundle (old + new), then certificates of the new CA, then the new CA alone;
    meanwhile a registers instances without pause. Nothing is restarted."""
    live = pool.workdir / "live"
    live.mkdir()
    files: dict[str, dict[str, Path]] = {}
    args: dict[str, list[str]] = {}
    for name in ("a", "b"):
        cert, key = pool.cert(f"dc-{name}", name)
        files[name] = {"ca": live / f"{name}-ca.pem", "cert": live / f"{name}.pem",
                       "key": live / f"{name}-key.pem"}  # fmt: skip
        files[name]["ca"].write_bytes((pool.secrets / "ca" / "ca.pem").read_bytes())
        files[name]["cert"].write_bytes(cert.read_bytes())
        files[name]["key"].write_bytes(key.read_bytes())
        args[name] = [
            "--encrypt-file", str(pool.key_file), "--tls-ca", str(files[name]["ca"]),
            "--tls-cert", str(files[name]["cert"]), "--tls-key", str(files[name]["key"]),
        ]  # fmt: skip
    a = pool.daemon("a", "127.0.0.76", *args["a"], secure=False)
    b = pool.daemon("b", "127.0.0.77", *args["b"], "--join", a.bind, secure=False)
    up(a, b)

    stop = threading.Event()
    registered: list[str] = []
    sid = a.client.create_service("shop", "orders")

    def traffic() -> None:
        k = 0
        while not stop.is_set():
            endpoint = f"rest://10.1.{k // 250}.{k % 250}:80"
            registered.append(a.client.register(sid, f"t{k}", [endpoint]))
            k += 1
            stop.wait(0.05)

    writer = threading.Thread(target=traffic, daemon=True)
    writer.start()
    try:
        create_ca(pool.secrets / "new-ca")
        old_ca = (pool.secrets / "ca" / "ca.pem").read_bytes()
        new_ca = (pool.secrets / "new-ca" / "ca.pem").read_bytes()

        daemons = {"a": a, "b": b}

        def step(label: str, change: dict[str, bytes]) -> None:
            """Write the changed files of both daemons; wait until both took them."""
            before = {n: metric(d, "pysyncer_tls_reloads_total") for n, d in daemons.items()}
            for name in daemons:
                if "ca" in change:
                    _swap(files[name]["ca"], change["ca"])
                for part in ("cert", "key"):
                    if f"{part}:{name}" in change:
                        _swap(files[name][part], change[f"{part}:{name}"])

            def taken() -> bool:
                return all(
                    metric(d, "pysyncer_tls_reloads_total") > before[n] for n, d in daemons.items()
                )

            eventually(taken, 30, f"both daemons took {label}", a, b)
            so_far = len(registered)  # traffic goes on between the steps
            eventually(lambda: len(registered) > so_far, 30, f"traffic after {label}", a)

        step("the CA bundle", {"ca": old_ca + new_ca})
        fresh = {}
        for name in ("a", "b"):
            cert, key = pool.cert(f"dc-{name}", name, ca="new-ca")
            fresh[f"cert:{name}"], fresh[f"key:{name}"] = cert.read_bytes(), key.read_bytes()
        step("certificates of the new CA", fresh)
        step("the new CA alone", {"ca": new_ca})
        OBSERVE.wait(1.0)  # a little more traffic after the last step
    finally:
        stop.set()
        writer.join(10)
    eventually(lambda: set(registered) <= set(copies(b)), 60, "every instance copied", a, b)
    assert set(copies(b)) == set(originals(a))
    # the servers now present certificates of the new CA and trust only it
    new_client = pool.client_tls("dc-x", "x2", a, ca="new-ca")
    new_client = TlsConfig(
        str(pool.secrets / "new-ca" / "ca.pem"), new_client.cert_file, new_client.key_file,
        server_name=new_client.server_name,
    )  # fmt: skip
    assert health(a, new_client) == a.dc
    with pytest.raises(UnavailableError):
        health(a, pool.client_tls("dc-x", "x1", a))  # a client of the old CA
    for daemon in (a, b):
        assert "Traceback" not in daemon.log()


# -- secure by default ---------------------------------------------------------------------


def test_a_network_address_without_security_refuses_to_start(tmp_path: Path) -> None:
    for flags in (["--bind", f"0.0.0.0:{free_port()}"], ["--rpc-addr", f"0.0.0.0:{free_port()}"]):
        run = subprocess.run(
            [sys.executable, "-m", "pysyncer", "daemon", "--node", "n",
             "--admin-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "n"),
             *flags],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYSYNCER_CONFIG": ""},
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert "is not a loopback address" in line
        assert "'encrypt-file'" in line and "'tls-ca'" in line and "'insecure'" in line
