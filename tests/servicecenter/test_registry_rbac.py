"""The embedded registry's optional RBAC, after Service-Center's.

``POST /v4/token`` with ``{"name", "password"}`` answers ``{"token"}``; every v4 API call
then needs ``Authorization: Bearer <token>``: 401 with cari's codes without one (401204),
with a bad one (401201) or an expired one (401205); 403 (403205) when no role of the
account allows the verb on the route's resource. Accounts and roles come from a JSON or
TOML file holding password hashes only. The ServiceComb adapter logs in against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pysyncer.adapters import AdapterError, load_adapter
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey
from pysyncer.servicecenter import (
    EmbeddedRegistry,
    Rbac,
    RegistryServer,
    ServiceCenterSettings,
    hash_password,
    load_rbac,
)
from pysyncer.servicecenter.errors import RegistryError
from pysyncer.servicecenter.rbac import VERIFIED_TOKENS, Account, verify_password
from tests.support.servicecenter import request_json, session

__all__ = ["session"]  # the fixture

pytestmark = pytest.mark.timeout(60)

PASSWORDS = {"root": "Root-Passw0rd!", "dev": "Dev-Passw0rd!", "viewer": "View-Passw0rd!"}
SERVICE = {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}
SERVICES = "/v4/default/registry/microservices"


def accounts_file(tmp_path: Path, suffix: str = ".json") -> Path:
    hashes = {name: hash_password(password) for name, password in PASSWORDS.items()}
    path = tmp_path / f"rbac{suffix}"
    if suffix == ".toml":
        lines = []
        for name, roles in (
            ("root", '["admin"]'),
            ("dev", '["developer"]'),
            ("viewer", '["viewer"]'),
        ):
            lines += ["[[accounts]]", f'name = "{name}"', f'password_hash = "{hashes[name]}"']
            lines += [f"roles = {roles}", ""]
        lines += ["[[roles]]", 'name = "viewer"', "[[roles.perms]]"]
        lines += ['resources = [{type = "service"}, {type = "governance"}]', 'verbs = ["get"]']
        path.write_text("\n".join(lines) + "\n")
        return path
    data = {
        "accounts": [
            {"name": "root", "password_hash": hashes["root"], "roles": ["admin"]},
            {"name": "dev", "password_hash": hashes["dev"], "roles": ["developer"]},
            {"name": "viewer", "password_hash": hashes["viewer"], "roles": ["viewer"]},
        ],
        "roles": [
            {
                "name": "viewer",
                "perms": [
                    {"resources": [{"type": "service"}, {"type": "governance"}], "verbs": ["get"]}
                ],
            }
        ],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def rbac_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return accounts_file(tmp_path_factory.mktemp("rbac"))


@pytest.fixture
async def server(rbac_path: Path) -> AsyncIterator[RegistryServer]:
    settings = ServiceCenterSettings(rbac_file=rbac_path)
    async with RegistryServer(settings=settings) as running:
        yield running


async def call(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    authorization: str | None = None,
) -> tuple[int, Any]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    return await request_json(session, method, url + path, body, headers)


async def login(session: aiohttp.ClientSession, url: str, name: str) -> str:
    status, body = await call(
        session, url, "POST", "/v4/token", {"name": name, "password": PASSWORDS[name]}
    )
    assert status == 200, body
    assert set(body) == {"token"}
    return str(body["token"])


async def test_token_then_bearer(server: RegistryServer, session: aiohttp.ClientSession) -> None:
    url = server.url
    status, body = await call(session, url, "GET", SERVICES)
    assert (status, body["errorCode"]) == (401, "401204")
    assert body["errorMessage"] == "No authorization header"
    token = await login(session, url, "root")
    status, body = await call(session, url, "POST", SERVICES, {"service": SERVICE}, token=token)
    assert status == 200, body
    status, body = await call(session, url, "GET", SERVICES, token=token)
    assert status == 200 and len(body["services"]) == 1
    # Version and health stay open (probes), like Service-Center's.
    for path in ("/v4/default/registry/version", "/v4/default/registry/health"):
        assert (await call(session, url, "GET", path))[0] == 200


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Bearer not-a-token", "401201"),
        ("Basic cm9vdDpSb290", "401201"),
        ("Bearer a.b.c", "401201"),
        ("Bearer ", "401201"),
    ],
)
async def test_bad_tokens_are_401(
    server: RegistryServer, session: aiohttp.ClientSession, authorization: str, code: str
) -> None:
    status, body = await call(session, server.url, "GET", SERVICES, authorization=authorization)
    assert (status, body["errorCode"]) == (401, code)


async def test_forged_token_is_401(
    server: RegistryServer, session: aiohttp.ClientSession, rbac_path: Path
) -> None:
    token = await login(session, server.url, "viewer")
    head, _, signature = token.split(".")
    # A token of another registry (another key), and the viewer's signature on root's claims.
    forged = load_rbac(rbac_path).login("root", PASSWORDS["root"])
    for bad in (forged, f"{head}.{forged.split('.')[1]}.{signature}"):
        status, body = await call(session, server.url, "GET", SERVICES, token=bad)
        assert (status, body["errorCode"]) == (401, "401201")


async def test_wrong_password_is_401202(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    for body in (
        {"name": "root", "password": "nope"},
        {"name": "nobody", "password": "nope"},
        {"name": "root"},
    ):
        status, answer = await call(session, server.url, "POST", "/v4/token", body)
        assert (status, answer["errorCode"]) == (401, "401202")
        assert answer["errorMessage"] == "User name or password is wrong"


async def test_roles_limit_verbs_and_resources(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    url = server.url
    viewer = await login(session, url, "viewer")
    dev = await login(session, url, "dev")
    status, body = await call(session, url, "POST", SERVICES, {"service": SERVICE}, token=viewer)
    assert (status, body["errorCode"]) == (403, "403205")
    assert body["errorMessage"] == "No permission(s)"
    status, body = await call(session, url, "POST", SERVICES, {"service": SERVICE}, token=dev)
    assert status == 200
    sid = body["serviceId"]
    assert (await call(session, url, "GET", f"{SERVICES}/{sid}", token=viewer))[0] == 200
    assert (await call(session, url, "GET", "/v4/default/govern/microservices", token=viewer))[
        0
    ] == 200
    status, body = await call(session, url, "DELETE", f"{SERVICES}/{sid}", token=viewer)
    assert (status, body["errorCode"]) == (403, "403205")
    status, body = await call(session, url, "DELETE", SERVICES, {"serviceIds": [sid]}, token=viewer)
    assert (status, body["errorCode"]) == (403, "403205")
    assert (await call(session, url, "DELETE", f"{SERVICES}/{sid}", token=dev))[0] == 200


async def test_expired_token_is_401205(rbac_path: Path) -> None:
    now = [1_000_000.0]
    accounts = load_rbac(rbac_path).accounts
    rbac = Rbac(accounts, token_ttl=60, clock=lambda: now[0])
    token = rbac.login("dev", PASSWORDS["dev"])
    assert rbac.authorize(f"Bearer {token}", "service", "create").name == "dev"
    now[0] += 61
    async with (
        RegistryServer(EmbeddedRegistry(), rbac=rbac) as running,
        aiohttp.ClientSession() as session,
    ):
        status, body = await call(session, running.url, "GET", SERVICES, token=token)
    assert (status, body["errorCode"]) == (401, "401205")


def test_deleted_account_token_is_401206(rbac_path: Path) -> None:
    rbac = load_rbac(rbac_path)
    token = rbac.login("dev", PASSWORDS["dev"])
    del rbac.accounts["dev"]
    with pytest.raises(Exception, match="401206"):
        rbac.account_of(f"Bearer {token}")


def test_a_token_is_verified_once_and_checked_every_time(
    rbac_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    rbac = Rbac(load_rbac(rbac_path).accounts, token_ttl=60, clock=lambda: now[0])
    dev, root = (f"Bearer {rbac.login(n, PASSWORDS[n])}" for n in ("dev", "root"))
    signed: list[str] = []
    sign = rbac._sign

    def counted(signing: str) -> bytes:
        signed.append(signing)
        return sign(signing)

    monkeypatch.setattr(rbac, "_sign", counted)
    for _ in range(3):
        assert rbac.authorize(dev, "service", "create").name == "dev"
    assert len(signed) == 1  # the signature checked on first use only
    head, claims, signature = dev.removeprefix("Bearer ").split(".")
    with pytest.raises(RegistryError, match="401201"):  # a tampered copy is not the token
        rbac.account_of(f"Bearer {head}.{claims}x.{signature}")
    assert rbac.authorize(root, "service", "delete").name == "root"
    del rbac.accounts["dev"]  # known tokens still meet their account's fate...
    with pytest.raises(RegistryError, match="401206"):
        rbac.account_of(dev)
    now[0] += 61  # ...and their expiry
    with pytest.raises(RegistryError, match="401205"):
        rbac.account_of(root)


def test_verified_tokens_are_bounded(rbac_path: Path) -> None:
    rbac = load_rbac(rbac_path)
    tokens = [f"Bearer {rbac.login('dev', PASSWORDS['dev'])}"]
    signing = tokens[0].removeprefix("Bearer ").rpartition(".")[0]
    head, _, _ = signing.partition(".")
    for n in range(VERIFIED_TOKENS + 5):  # distinct signed tokens, as logins would make
        body = base64.urlsafe_b64encode(
            json.dumps({"sub": "dev", "iat": n, "exp": 2**40}).encode()
        ).rstrip(b"=")
        payload = f"{head}.{body.decode()}"
        mac = base64.urlsafe_b64encode(rbac._sign(payload)).rstrip(b"=").decode()
        tokens.append(f"Bearer {payload}.{mac}")
    for token in tokens:
        assert rbac.account_of(token).name == "dev"
    assert len(rbac._verified) == VERIFIED_TOKENS


def test_toml_file_and_password_hashes(tmp_path: Path) -> None:
    rbac = load_rbac(accounts_file(tmp_path, ".toml"))
    assert rbac.accounts["viewer"].roles == ("viewer",)
    token = rbac.login("viewer", PASSWORDS["viewer"])
    rbac.authorize(f"Bearer {token}", "governance", "get")
    with pytest.raises(Exception, match="403205"):
        rbac.authorize(f"Bearer {token}", "service", "update")
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored) and not verify_password("s3cret!", stored)
    # pbkdf2-sha256$iterations$salt$hash, as another tool would write it
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)
    pbkdf2 = (
        f"pbkdf2-sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )
    assert verify_password("pw", pbkdf2) and not verify_password("pw2", pbkdf2)
    assert Account("a", pbkdf2, ("admin",)).roles == ("admin",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"accounts": [{"name": "a", "password_hash": "plain", "roles": ["admin"]}]}, "hash"),
        ({"accounts": [{"name": "a", "password": "x", "roles": ["admin"]}]}, "password_hash"),
        ({"accounts": []}, "accounts"),
        (
            {"accounts": [{"name": "a", "password_hash": "scrypt$3$8$1$AA==$AA==", "roles": []}]},
            "power of 2",
        ),
        ({"accounts": [{"name": "a", "password_hash": "H", "roles": ["boss"]}]}, "boss"),
        (
            {
                "accounts": [{"name": "a", "password_hash": "H", "roles": ["r"]}],
                "roles": [
                    {
                        "name": "r",
                        "perms": [
                            {
                                "resources": [{"type": "service", "labels": {"a": "b"}}],
                                "verbs": ["get"],
                            }
                        ],
                    }
                ],
            },
            "labels",
        ),
        (
            {
                "accounts": [{"name": "a", "password_hash": "H", "roles": ["r"]}],
                "roles": [
                    {"name": "r", "perms": [{"resources": [{"type": "x"}], "verbs": ["get"]}]}
                ],
            },
            "type",
        ),
        (
            {
                "accounts": [{"name": "a", "password_hash": "H", "roles": ["admin"]}],
                "roles": [{"name": "admin", "perms": []}],
            },
            "twice",
        ),
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    good_hash = hash_password("x")
    text = json.dumps(data).replace('"H"', json.dumps(good_hash))
    path = tmp_path / "rbac.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_rbac(path)
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------- the adapter


def instance() -> Instance:
    return Instance(
        service=ServiceKey("shop", "orders", "1.0.0"),
        instance_id="orders-1",
        host_name="10.0.0.1",
        endpoints=("rest://10.0.0.1:8080",),
    )


async def test_servicecomb_adapter_against_rbac(server: RegistryServer, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORDS["dev"] + "\n")
    settings = {"username": "dev", "password-file": str(password_file)}
    adapter = load_adapter("servicecomb", [server.url], settings)
    await adapter.start()
    try:
        ref = await adapter.register(instance())
        listed = await adapter.list_instances()
        assert [i.instance_id for i in listed.instances] == [ref.instance_id]
        assert [r.status for r in await adapter.renew([ref])] == ["ok"]
    finally:
        await adapter.close()
    assert server.registry.instance_count() == 1

    anonymous = load_adapter("servicecomb", [server.url], {})
    try:
        await anonymous.start()  # version and health are open
        with pytest.raises(AdapterError, match="401204"):
            await anonymous.list_instances()
    finally:
        await anonymous.close()
