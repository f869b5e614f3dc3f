"""The ``etcd`` adapter against a real etcd that wants TLS client certificates and a login.

One etcd member (Debian binary) with ``--client-cert-auth`` and auth enabled; the
``pysyncer`` user's role covers only the test prefix. The adapter, configured through its
``[adapter]`` settings (TLS files, ``user``, ``password-file``), registers a copy, lists
it and follows the change feed; a wrong password fails ``start()`` with one line naming
the settings, without the password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysyncer.adapters import AdapterError, load_adapter
from pysyncer.adapters.etcd import EtcdAdapter
from pysyncer.model import Instance, ServiceKey
from tests.support.etcd import TEST_PREFIX
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
def etcd(pki: Pki) -> Iterator[SecureEtcd]:
    with running_secure_etcd(pki, auth=True) as server:
        yield server


def settings(pki: Pki, password_file: str) -> dict[str, str | float]:
    return {
        "prefix": TEST_PREFIX + "microservices/",
        "request-timeout": 2,
        "tls-ca": str(pki.ca),
        "tls-cert": str(pki.client_cert),
        "tls-key": str(pki.client_key),
        "user": "pysyncer",
        "password-file": password_file,
    }


async def test_copies_through_tls_and_login(etcd: SecureEtcd, pki: Pki, tmp_path: Path) -> None:
    adapter = load_adapter(
        "etcd", [etcd.endpoint], settings(pki, secret_file(tmp_path, etcd.PASSWORD))
    )
    assert isinstance(adapter, EtcdAdapter)
    instance = Instance(
        service=ServiceKey("", "orders", "1.0"),
        instance_id="orders-1",
        host_name="10.0.0.1",
        endpoints=("grpc://10.0.0.1:9000",),
    )
    await adapter.start()
    try:
        snapshot = await adapter.list_instances()
        assert snapshot.instances == ()
        feed = adapter.changes()  # watches from the listing's revision on
        ref = await adapter.register(instance)
        events = (await asyncio.wait_for(anext(feed), 5)).events
        assert [e.instance.instance_id for e in events] == ["orders-1"]
        listed = await adapter.list_instances()
        assert [i.instance_id for i in listed.instances] == ["orders-1"]
        assert (await adapter.get_instance(ref)).endpoints == instance.endpoints
    finally:
        await adapter.close()


async def test_wrong_password_is_one_line(etcd: SecureEtcd, pki: Pki, tmp_path: Path) -> None:
    wrong = "wrong-password-456"
    adapter = load_adapter("etcd", [etcd.endpoint], settings(pki, secret_file(tmp_path, wrong)))
    with pytest.raises(AdapterError) as caught:
        await adapter.start()
    await adapter.close()
    assert_login_refusal(caught.value, wrong, "adapter.password-file", "UNAUTHENTICATED")
