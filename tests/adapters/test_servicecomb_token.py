"""The ServiceComb adapter logs in with Service-Center's token API (RBAC).

The server is pysyncer's embedded registry behind a small RBAC front written here from
the documented token API (``POST /v4/token`` with ``{"name", "password"}`` answers
``{"token"}``; every other request needs ``Authorization: Bearer <token>``, else 401
with an SC error body). The adapter logs in at start, sends the token on every request,
logs in again once when a token is refused (expired), and a wrong password fails
``start()`` with one line naming the settings and never the password.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from pysyncer.adapters import AdapterError, load_adapter
from pysyncer.adapters.servicecomb import ServiceCombAdapter, ServiceCombAuthError
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey
from pysyncer.servicecenter import EmbeddedRegistry
from pysyncer.servicecenter.app import build_app
from tests.support.secure import assert_login_refusal, secret_file

ACCOUNT = ("sync-user", "Sync-Passw0rd!")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RbacFront:
    """The embedded registry's app with the token API and a bearer-token check."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.logins: list[dict[str, str]] = []
        self.refused: list[str] = []  # paths answered 401
        self.authorizations: list[str] = []  # Authorization headers of API requests
        self.registry = EmbeddedRegistry()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.logins.append(body)
        if (body.get("name"), body.get("password")) != ACCOUNT:
            return web.json_response(
                {"errorCode": "401202", "errorMessage": "account name or password mismatch"},
                status=401,
            )
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response({"token": token})

    @web.middleware
    async def check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v4/token":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        self.authorizations.append(header)
        if not header.startswith("Bearer ") or header[len("Bearer ") :] not in self.tokens:
            self.refused.append(request.path)
            return web.json_response(
                {"errorCode": "401002", "errorMessage": "Request unauthorized"}, status=401
            )
        return await handler(request)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    async def start(self) -> None:
        app = build_app(self.registry)
        app.middlewares.append(self.check)
        app.router.add_post("/v4/token", self.token)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self.registry.close()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def front() -> AsyncIterator[RbacFront]:
    server = RbacFront()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def instance(name: str = "orders") -> Instance:
    return Instance(
        service=ServiceKey("shop", name, "1.0.0"),
        instance_id=f"{name}-1",
        host_name="10.0.0.1",
        endpoints=("rest://10.0.0.1:8080",),
    )


async def test_login_token_on_every_request_and_login_again(
    front: RbacFront, tmp_path: Path
) -> None:
    settings = {
        "username": ACCOUNT[0],
        "password-file": secret_file(tmp_path, ACCOUNT[1]),
        "feed": "false",
    }
    adapter = load_adapter("servicecomb", [front.url], settings)
    assert isinstance(adapter, ServiceCombAdapter)
    await adapter.start()
    try:
        ref = await adapter.register(instance())
        listed = await adapter.list_instances()
        assert [i.instance_id for i in listed.instances] == [ref.instance_id]
        assert front.logins == [{"name": ACCOUNT[0], "password": ACCOUNT[1]}]
        assert front.refused == []
        assert all(h.startswith("Bearer ") for h in front.authorizations)

        front.expire_tokens()  # e.g. past its 30 minutes
        results = await adapter.renew([ref])
        assert [r.status for r in results] == ["ok"]
        assert len(front.logins) == 2 and adapter.logins == 2
        assert len(front.refused) == 1  # the one request sent with the old token
    finally:
        await adapter.close()


async def test_password_from_env_setting(front: RbacFront) -> None:
    # PYSYNCER_ADAPTER_PASSWORD reaches the adapter as its ``password`` setting.
    adapter = load_adapter(
        "servicecomb", [front.url], {"username": ACCOUNT[0], "password": ACCOUNT[1]}
    )
    await adapter.start()
    await adapter.close()
    assert len(front.logins) == 1
    assert isinstance(adapter, ServiceCombAdapter)
    assert ACCOUNT[1] not in repr(adapter.settings)


async def test_wrong_password_is_one_line_naming_the_settings(
    front: RbacFront, tmp_path: Path
) -> None:
    wrong = "Not-The-Passw0rd"
    adapter = load_adapter(
        "servicecomb",
        [front.url],
        {"username": ACCOUNT[0], "password-file": secret_file(tmp_path, wrong)},
    )
    with pytest.raises(ServiceCombAuthError) as caught:
        await adapter.start()
    await adapter.close()
    assert_login_refusal(caught.value, wrong, "adapter.password-file", "401202")


async def test_without_login_the_server_refuses(front: RbacFront) -> None:
    adapter = load_adapter("servicecomb", [front.url], {})
    with pytest.raises(AdapterError, match="401"):
        await adapter.start()
    await adapter.close()


def test_user_without_password_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password-file"):
        load_adapter("servicecomb", ["127.0.0.1:30100"], {"username": "u"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_adapter(
            "servicecomb",
            ["127.0.0.1:30100"],
            {"username": "u", "password-file": str(tmp_path / "missing")},
        )
