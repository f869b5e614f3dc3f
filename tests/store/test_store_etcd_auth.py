"""The etcd store against a real etcd with TLS (client certificates) and with auth.

Two members are started from the Debian etcd binary: one with ``--client-cert-auth``
and certificates from a throwaway CA (made here with ``cryptography``), one with auth
enabled (users root and pysyncer, the latter with a role on the test prefix). The store
is built from its ``--store`` URL as the daemon builds it (:func:`create_store`): a
cursor written through one store is read back by a second one, so it went through etcd.
Refused connections (no client certificate, another CA, a plain client) and a wrong
password fail ``open()`` with one line; after etcd restarts (its tokens are gone) the
client logs in again by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from pysyncer.errors import ConfigError
from pysyncer.etcdchannels import EtcdSecurity
from pysyncer.store import StoreError, create_store, parse_store_url
from pysyncer.store.etcd import EtcdStore
from pysyncer.store.etcd_client import EtcdAuthError, EtcdClient, Op
from tests.support.etcd import unique_prefix
from tests.support.secure import (
    Pki,
    SecureEtcd,
    assert_login_refusal,
    pki,
    running_secure_etcd,
    secret_file,
)

__all__ = ["pki"]  # the fixture

pytestmark = pytest.mark.needs_server("etcd")


@pytest.fixture(scope="module")
def tls_etcd(pki: Pki) -> Iterator[SecureEtcd]:
    with running_secure_etcd(pki, auth=False) as server:
        yield server


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[SecureEtcd]:
    with running_secure_etcd(None, auth=True) as server:
        yield server


def store_url(endpoint: str, **options: str | float) -> str:
    return f"etcd://{endpoint}?" + urlencode({"open_timeout": 3, "request_timeout": 2, **options})


@contextlib.asynccontextmanager
async def opened(url: str, member: str = "node-a") -> AsyncIterator[EtcdStore]:
    store = create_store(url, "/nonexistent", node=member)
    assert isinstance(store, EtcdStore)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def round_trip(url: str) -> None:
    """A cursor written by one store is read by another: it went through etcd."""
    async with opened(url) as writer:
        await writer.set_cursor("dc-b", 42, "epoch-1")
    async with opened(url) as reader:
        cursor = await reader.get_cursor("dc-b")
    assert cursor is not None
    assert (cursor.revision, cursor.epoch) == (42, "epoch-1")


# -- TLS ---------------------------------------------------------------------------------


async def test_tls_with_client_certificate_works(tls_etcd: SecureEtcd, pki: Pki) -> None:
    url = store_url(
        tls_etcd.endpoint,
        prefix=unique_prefix(),
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
    )
    await round_trip(url)


async def test_tls_options_also_take_dashes(tls_etcd: SecureEtcd, pki: Pki) -> None:
    url = store_url(tls_etcd.endpoint, prefix=unique_prefix())
    url += f"&tls-ca={pki.ca}&tls-cert={pki.client_cert}&tls-key={pki.client_key}"
    await round_trip(url)


@pytest.mark.parametrize(
    "case",
    ["no client certificate", "another CA", "client certificate of another CA", "plain"],
)
async def test_tls_refusals(tls_etcd: SecureEtcd, pki: Pki, case: str) -> None:
    options: dict[str, str] = {
        "no client certificate": {"tls_ca": str(pki.ca)},
        "another CA": {
            "tls_ca": str(pki.other_ca),
            "tls_cert": str(pki.client_cert),
            "tls_key": str(pki.client_key),
        },
        "client certificate of another CA": {
            "tls_ca": str(pki.ca),
            "tls_cert": str(pki.other_client_cert),
            "tls_key": str(pki.other_client_key),
        },
        "plain": {},
    }[case]
    url = store_url(tls_etcd.endpoint, prefix=unique_prefix(), open_timeout=1.5, **options)
    with pytest.raises(StoreError) as caught:
        async with opened(url):
            pass
    assert "\n" not in str(caught.value)
    assert tls_etcd.endpoint in str(caught.value)


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    with pytest.raises(ConfigError, match="tls-ca"):
        create_store(f"etcd://127.0.0.1:2379?tls_ca={missing}", tmp_path, dc="a")
    with pytest.raises(ConfigError, match="tls-cert needs tls-key"):
        EtcdSecurity(tls_cert="c.pem").check()


# -- auth --------------------------------------------------------------------------------


async def test_auth_with_password_file(auth_etcd: SecureEtcd, tmp_path: Path) -> None:
    secret = secret_file(tmp_path, auth_etcd.PASSWORD)
    url = store_url(
        auth_etcd.endpoint, prefix=unique_prefix(), user="pysyncer", password_file=secret
    )
    await round_trip(url)


async def test_auth_with_password_from_env(
    auth_etcd: SecureEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSYNCER_STORE_PASSWORD", auth_etcd.PASSWORD)
    await round_trip(store_url(auth_etcd.endpoint, prefix=unique_prefix(), user="pysyncer"))


async def test_without_login_auth_refuses(auth_etcd: SecureEtcd) -> None:
    with pytest.raises(EtcdAuthError):
        async with opened(store_url(auth_etcd.endpoint, prefix=unique_prefix())):
            pass


async def test_wrong_password_is_one_line_naming_the_setting(
    auth_etcd: SecureEtcd, tmp_path: Path
) -> None:
    wrong = "not-the-password-123"
    url = store_url(
        auth_etcd.endpoint,
        prefix=unique_prefix(),
        user="pysyncer",
        password_file=secret_file(tmp_path, wrong),
    )
    with pytest.raises(EtcdAuthError) as caught:
        async with opened(url):
            pass
    assert_login_refusal(
        caught.value, wrong, "password_file", "PYSYNCER_STORE_PASSWORD", "'pysyncer'"
    )


def test_user_without_password_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSYNCER_STORE_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="password_file"):
        create_store("etcd://127.0.0.1:2379?user=pysyncer", "/nonexistent", dc="a")


@pytest.mark.parametrize(
    "url", ["etcd://127.0.0.1:2379?password=x", "etcd://pysyncer:x@127.0.0.1:2379"]
)
def test_a_password_in_the_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="password_file") as caught:
        parse_store_url(url)
    assert ":x@" not in str(caught.value) and "=x" not in str(caught.value)


async def test_login_again_after_etcd_restarts(auth_etcd: SecureEtcd) -> None:
    """etcd forgets its tokens when it restarts: the next call is refused once, the
    client logs in again and sends it once more."""
    security = EtcdSecurity(user="pysyncer", password=auth_etcd.PASSWORD)
    client = EtcdClient([("127.0.0.1", auth_etcd.client_port)], 3.0, security)
    key = (unique_prefix() + "k").encode()
    try:
        await client.txn([], [Op("put", key, b"before")])
        endpoint = await client._channels.client(0)
        assert endpoint.login is not None
        first_token = endpoint.login.token
        assert first_token
        auth_etcd.stop()
        auth_etcd.start()
        await client.wait_ready(10)
        kv = await client.get(key)
        assert kv is not None and kv.value == b"before"
        assert endpoint.login.token not in (None, first_token)
    finally:
        await client.close()
