# mypy: disable-error-code="import-untyped"
"""The ZooKeeper adapter's digest auth, ACLs on its copies, and TLS, on a real ZooKeeper.

Digest auth and ACLs: the adapter (``adapter.username`` and ``adapter.password-file``)
registers a copy; another client without credentials (kazoo, an independent
implementation) reads it but can neither delete it, change its data nor its ACL, while
a Dubbo provider without credentials can still add its own node beside it. The
credentials are sent again on every new connection (a copy is removed after the
connection broke). TLS: Debian's ZooKeeper 3.8 with a ``secureClientPort`` (Netty, PEM
key and trust stores) accepts pysyncer's client with a client certificate and refuses
one without, one trusting another CA, and a plain connection.
"""

from __future__ import annotations

import asyncio
import hashlib
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.adapters import UnavailableError, load_adapter
from pysyncer.adapters.zookeeper import ZookeeperAdapter
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey
from pysyncer.procs import free_port
from tests.conftest import IN_CI
from tests.support.secure import Pki, make_pki, secret_file
from tests.support.zk import ZkServer, zk_server, zookeeper_available

__all__ = ["zk_server"]

pytestmark = pytest.mark.needs_server("zookeeper")

kazoo_client = pytest.importorskip("kazoo.client")
kazoo_exceptions = pytest.importorskip("kazoo.exceptions")
kazoo_security = pytest.importorskip("kazoo.security")

USER, PASSWORD = "syncer", "zk-Secret-9"
NETTY_JARS = (
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-resolver.jar",
    "/usr/share/java/netty-transport-native-unix-common.jar",
)


def digest_id(user: str, password: str) -> str:
    """ZooKeeper's digest ACL id: ``user:base64(sha1(user:password))``."""
    digest = hashlib.sha1(f"{user}:{password}".encode()).digest()
    return f"{user}:{b64encode(digest).decode()}"


def instance(name: str, host: str) -> Instance:
    return Instance(
        service=ServiceKey("demo-app", f"com.example.{name}", "1.0.0"),
        instance_id=f"dubbo://{host}:20880/com.example.{name}",
        host_name=host,
        endpoints=(f"dubbo://{host}:20880",),
    )


def kazoo(server: str, **options: Any) -> Any:
    client = kazoo_client.KazooClient(hosts=server, timeout=10, **options)
    client.start(timeout=15)
    return client


async def test_copies_are_world_readable_but_only_the_creator_changes_them(
    zk_server: ZkServer, tmp_path: Path
) -> None:
    root = "/dubbo-acl"
    settings = {"root": root, "username": USER, "password-file": secret_file(tmp_path, PASSWORD)}
    adapter = load_adapter("zookeeper", [zk_server.address], settings)
    assert isinstance(adapter, ZookeeperAdapter)
    await adapter.start()
    stranger = await asyncio.to_thread(kazoo, zk_server.address)
    try:
        ref = await adapter.register(instance("Orders", "10.0.0.1"))
        providers = f"{root}/com.example.Orders/providers"
        (node,) = await asyncio.to_thread(stranger.get_children, providers)
        path = f"{providers}/{node}"

        data, _stat = await asyncio.to_thread(stranger.get, path)  # world: read
        assert data == b""
        for attempt in (
            lambda: stranger.delete(path),
            lambda: stranger.set(path, b"changed"),
            lambda: stranger.set_acls(path, kazoo_security.OPEN_ACL_UNSAFE),
            lambda: stranger.delete(providers, recursive=True),
        ):
            with pytest.raises(kazoo_exceptions.NoAuthError):
                await asyncio.to_thread(attempt)

        # ZooKeeper hides the digest's hash from clients without ADMIN on the node.
        acls, _ = await asyncio.to_thread(stranger.get_acls, path)
        entries = {(a.id.scheme, a.id.id, a.perms) for a in acls}
        assert entries == {("digest", f"{USER}:x", 31), ("world", "anyone", 1)}

        # A Dubbo provider without credentials still registers beside the copy.
        native = f"{providers}/dubbo%3A%2F%2F10.0.0.2%3A20880%2Fcom.example.Orders"
        await asyncio.to_thread(stranger.create, native, b"", ephemeral=True)

        # After a broken connection the session authenticates again: it may delete.
        adapter.client.drop_connection()
        for _ in range(500):
            if not adapter.client.connected:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the dropped connection was not noticed")
        await adapter.client.wait_connected(10)
        await adapter.unregister(ref)
        remaining = await asyncio.to_thread(stranger.get_children, providers)
        assert remaining == [native.rsplit("/", 1)[1]]
    finally:
        await asyncio.to_thread(stranger.stop)
        await asyncio.to_thread(stranger.close)
        await adapter.close()


async def test_the_same_credentials_in_another_client_may_delete(
    zk_server: ZkServer, tmp_path: Path
) -> None:
    """The ACL names the credentials (not one session): a second syncer of the data
    center with the same user takes a copy over; kazoo with them may delete it."""
    root = "/dubbo-acl-shared"
    settings = {"root": root, "username": USER, "password-file": secret_file(tmp_path, PASSWORD)}
    adapter = load_adapter("zookeeper", [zk_server.address], settings)
    await adapter.start()
    friend = await asyncio.to_thread(
        kazoo, zk_server.address, auth_data=[("digest", f"{USER}:{PASSWORD}")]
    )
    try:
        await adapter.register(instance("Stock", "10.0.0.3"))
        providers = f"{root}/com.example.Stock/providers"
        (node,) = await asyncio.to_thread(friend.get_children, providers)
        acls, _ = await asyncio.to_thread(friend.get_acls, f"{providers}/{node}")
        entries = {(a.id.scheme, a.id.id, a.perms) for a in acls}
        assert entries == {("digest", digest_id(USER, PASSWORD), 31), ("world", "anyone", 1)}
        acls, _ = await asyncio.to_thread(friend.get_acls, providers)  # a created parent
        entries = {(a.id.scheme, a.id.id, a.perms) for a in acls}
        assert entries == {("digest", digest_id(USER, PASSWORD), 31), ("world", "anyone", 5)}
        await asyncio.to_thread(friend.delete, f"{providers}/{node}")
        assert await asyncio.to_thread(friend.get_children, providers) == []
    finally:
        await asyncio.to_thread(friend.stop)
        await asyncio.to_thread(friend.close)
        await adapter.close()


def test_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password-file"):
        load_adapter("zookeeper", ["127.0.0.1:2181"], {"username": USER})
    with pytest.raises(ConfigError, match="dir-world-perms"):
        load_adapter("zookeeper", ["127.0.0.1:2181"], {"dir-world-perms": "rx"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_adapter(
            "zookeeper",
            ["127.0.0.1:2181"],
            {"username": USER, "password-file": str(tmp_path / "missing")},
        )
    adapter = load_adapter(
        "zookeeper", ["127.0.0.1:2181"], {"username": USER, "password": PASSWORD}
    )
    assert isinstance(adapter, ZookeeperAdapter)
    assert PASSWORD not in repr(adapter.settings)


# -- TLS ---------------------------------------------------------------------------------


class TlsZk:
    def __init__(self, server: ZkServer, secure_port: int, pki: Pki) -> None:
        self.server = server
        self.secure_address = f"127.0.0.1:{secure_port}"
        self.pki = pki


@pytest.fixture(scope="module")
def tls_zk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsZk]:
    reason = zookeeper_available()
    missing = [jar for jar in NETTY_JARS if not Path(jar).exists()]
    if missing and reason is None:
        reason = (
            f"Netty jars missing for the secure port: {missing} (apt-get install libnetty-java)"
        )
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("zk-pki")
    pki = make_pki(directory)
    keystore = directory / "server.pem"  # ZooKeeper's PEM key store: key and certificate
    keystore.write_bytes(pki.server_key.read_bytes() + pki.server_cert.read_bytes())
    secure_port = free_port()
    config = (
        f"secureClientPort={secure_port}\n"
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
        f"ssl.keyStore.location={keystore}\nssl.keyStore.type=PEM\n"
        f"ssl.trustStore.location={pki.ca}\nssl.trustStore.type=PEM\n"
        "ssl.clientAuth=need\n"
    )
    server = ZkServer(extra_config=config, extra_classpath=NETTY_JARS)
    server.start()
    try:
        yield TlsZk(server, secure_port, pki)
    finally:
        server.cleanup()


def tls_settings(tls_zk: TlsZk, **overrides: str) -> dict[str, Any]:
    pki = tls_zk.pki
    settings: dict[str, Any] = {
        "root": "/dubbo-tls",
        "connect-timeout": 2,
        "tls-ca": str(pki.ca),
        "tls-cert": str(pki.client_cert),
        "tls-key": str(pki.client_key),
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v != ""}


async def test_tls_with_client_certificate(tls_zk: TlsZk) -> None:
    adapter = load_adapter("zookeeper", [tls_zk.secure_address], tls_settings(tls_zk))
    await adapter.start()
    try:
        await adapter.register(instance("Payments", "10.0.0.4"))
        listed = await adapter.list_instances()
        assert [i.host_name for i in listed.instances] == ["10.0.0.4"]
    finally:
        await adapter.close()


@pytest.mark.parametrize("case", ["no client certificate", "another CA", "plain"])
async def test_tls_refusals(tls_zk: TlsZk, case: str) -> None:
    pki = tls_zk.pki
    overrides = {
        "no client certificate": {"tls-cert": "", "tls-key": ""},
        "another CA": {"tls-ca": str(pki.other_ca)},
        "plain": {"tls-ca": "", "tls-cert": "", "tls-key": ""},
    }[case]
    adapter = load_adapter("zookeeper", [tls_zk.secure_address], tls_settings(tls_zk, **overrides))
    with pytest.raises(UnavailableError) as caught:
        await adapter.start()
    await adapter.close()
    assert "\n" not in str(caught.value)
