"""Who may call the admin API: token per route, browser checks, token files, the settings.

Every route of ``ROUTES`` is called without a token, with a wrong one and with the right
one (the table is iterated, so a new route cannot be forgotten); browser-style requests
(a ``text/plain`` POST, a foreign ``Host``, a foreign ``Origin``) are refused; bodies
are read whole however slowly they come and over-deep JSON is a 400; a non-loopback
admin address without a token does not load; and one real ``pysyncer daemon`` with a
token file is called through the CLI with and without the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer.admin.app import ROUTES, Route, build_app
from pysyncer.admin.auth import TOKEN_FILE_ENV, AdminAuth, read_token_file
from pysyncer.admin.bodies import MAX_BODY_BYTES, MAX_JSON_DEPTH
from pysyncer.admin.client import AdminClient, AdminUnavailableError, token_from_file
from pysyncer.admin.payloads import (
    DiffAnswer,
    DryRunAnswer,
    KeyAnswer,
    LeaveAnswer,
    SlotRun,
    SyncStatus,
)
from pysyncer.config import SETTINGS, load_config
from pysyncer.errors import ConfigError
from pysyncer.procs import DaemonProcess, eventually, free_port
from pysyncer.readiness import LoopMonitor, Probes
from pysyncer.supervisor import Supervisor
from tests.admin.test_admin_app import InMemoryBackend

TOKEN = "s3cret-admin-token"
JSON = {"Content-Type": "application/json"}
KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # 32 zero bytes, base64


class FakeKeys:
    async def key_operation(self, op: str, key: str | None) -> KeyAnswer:
        return {
            "operation": op, "num_nodes": 1, "num_resp": 1, "num_err": 0, "messages": {},
            "keys": {KEY: 1}, "primary_keys": {KEY: 1}, "no_response": [],
        }  # fmt: skip


class FakeSync:
    def sync_status(self) -> SyncStatus:
        return cast(SyncStatus, {"dc": "dc1"})

    def full_sync(self) -> Sequence[str]:
        return ["dc2"]

    async def diff(self, service: str, limit: int) -> DiffAnswer:
        return cast(DiffAnswer, {"service": service, "limit": limit})

    async def dry_run(self) -> DryRunAnswer:
        return cast(DryRunAnswer, {"direction": "both"})

    def slot_runs(self) -> list[SlotRun]:
        return [(0, 16384, "node1", False)]


class LifecycleBackend(InMemoryBackend):
    """Also leaves and forces members out (the lifecycle routes answer 200)."""

    def leave(self) -> LeaveAnswer:
        return {"leaving": True, "node": "n1"}

    def force_leave(self, node: str, prune: bool) -> None:
        return None


def body_of(route: Route) -> dict[str, Any] | None:
    """A valid body for ``route`` (None for a GET)."""
    if route.method != "POST":
        return None
    if route.path == "/v1/keys":
        return {"op": "install", "key": KEY}
    if route.path in ("/v1/events", "/v1/queries"):
        return {"name": "x"}
    if route.path == "/v1/force-leave":
        return {"node": "n2"}
    return {}


Served = tuple[aiohttp.ClientSession, str, InMemoryBackend]


async def serve(auth: AdminAuth) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        build_app(
            LifecycleBackend(),
            CollectorRegistry(),
            FakeKeys(),
            FakeSync(),
            auth=auth,
            probes=Probes(LoopMonitor(), Supervisor(), lambda: None, list),  # live and ready
        )
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def api() -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    runner, base = await serve(AdminAuth(token=TOKEN))
    async with aiohttp.ClientSession() as session:
        yield session, base
    await runner.cleanup()


# -- the table's promises -----------------------------------------------------------------


def test_mutating_and_key_routes_need_the_token_and_health_is_open() -> None:
    for route in ROUTES:
        if route.method == "POST" or route.path == "/v1/keys":
            assert route.access == "token", route
    levels = {(r.method, r.path): r.access for r in ROUTES}
    assert levels[("GET", "/v1/health")] == "open"
    assert levels[("GET", "/metrics")] == "metrics"


@pytest.mark.parametrize(
    "policy",
    [
        AdminAuth(token=TOKEN),
        AdminAuth(token=TOKEN, read_auth="open"),
        AdminAuth(token=TOKEN, read_auth="token", metrics_auth="token"),
        AdminAuth(token=None),
    ],
    ids=["defaults", "reads-open", "all-token", "no-token"],
)
async def test_every_route_without_wrong_and_right_token(policy: AdminAuth) -> None:
    runner, base = await serve(policy)
    try:
        async with aiohttp.ClientSession() as session:
            for route in ROUTES:
                needs = policy.needs_token(route.access)
                cases: tuple[tuple[dict[str, str], bool], ...] = (
                    ({}, needs),
                    ({"Authorization": "Bearer wrong-token"}, needs),
                    ({"Authorization": f"Basic {TOKEN}"}, needs),
                    ({"Authorization": f"Bearer {TOKEN}"}, False),
                )
                for headers, refused in cases:
                    async with session.request(
                        route.method, base + route.path, json=body_of(route), headers=headers
                    ) as response:
                        what = f"{route.method} {route.path} with {headers}"
                        if refused:
                            assert response.status == 401, what
                            assert response.headers["WWW-Authenticate"].startswith("Bearer")
                            error = (await response.json())["error"]
                            assert TOKEN not in error
                        else:
                            assert response.status == 200, what
    finally:
        await runner.cleanup()


async def test_key_routes_answer_fingerprints_never_keys(
    api: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, body in (("GET", None), ("POST", {"op": "use", "key": KEY})):
        async with session.request(method, f"{base}/v1/keys", json=body, headers=auth) as r:
            text = await r.text()
            answer = await r.json()
        assert r.status == 200 and KEY not in text
        (fingerprint,) = answer["keys"]
        assert fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 16
        assert answer["primary_keys"] == {fingerprint: 1}


# -- browser-style requests ---------------------------------------------------------------


async def test_post_needs_a_json_content_type(api: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for route in (r for r in ROUTES if r.method == "POST"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = dict(auth, **({"Content-Type": content_type} if content_type else {}))
            async with session.post(
                base + route.path, data=b'{"name": "x"}', headers=headers
            ) as response:
                assert response.status == 415, (route.path, content_type)


async def test_foreign_host_and_origin_are_refused(
    api: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = api
    port = base.rsplit(":", 1)[1]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for route in ROUTES:
        url, body = base + route.path, body_of(route)
        # DNS rebinding: the page's name resolves to 127.0.0.1, the Host header keeps it
        for host in (f"evil.example:{port}", "evil.example", f"10.1.2.3:{port}"):
            headers = dict(auth, Host=host)
            async with session.request(route.method, url, json=body, headers=headers) as r:
                assert r.status == 421, (route.path, host)
        # CSRF: a page of another origin
        for origin in ("http://evil.example", f"http://localhost:{int(port) + 1}", "null"):
            headers = dict(auth, Origin=origin)
            async with session.request(route.method, url, json=body, headers=headers) as r:
                assert r.status == 403, (route.path, origin)
        for same in (f"http://127.0.0.1:{port}",):
            headers = dict(auth, Origin=same)
            async with session.request(route.method, url, json=body, headers=headers) as r:
                assert r.status == 200, (route.path, same)
    for host in (f"localhost:{port}", f"[::1]:{port}"):
        async with session.get(f"{base}/v1/health", headers={"Host": host}) as r:
            assert r.status == 200, host


def test_host_rules_of_a_wildcard_address() -> None:
    wildcard = AdminAuth(token=TOKEN, listen_host="0.0.0.0")
    assert wildcard.host_allowed("10.1.2.3:30300") and wildcard.host_allowed("[fe80::1]:1")
    assert wildcard.host_allowed("localhost") and not wildcard.host_allowed("evil.example")
    fixed = AdminAuth(token=TOKEN, listen_host="10.0.0.5")
    assert fixed.host_allowed("10.0.0.5:30300") and not fixed.host_allowed("10.0.0.6:30300")
    assert not fixed.host_allowed("bad host") and fixed.host_allowed(None)


# -- bodies -------------------------------------------------------------------------------


async def test_slow_body_is_read_whole_and_deep_json_is_a_400(
    api: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = api
    auth = dict(JSON, Authorization=f"Bearer {TOKEN}")
    payload = "p" * (MAX_BODY_BYTES - 1000)
    body = ('{"name": "slow", "payload": "' + payload + '"}').encode()

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            await asyncio.sleep(0.02)
            yield body[start : start + 8192]

    async with session.post(f"{base}/v1/events", data=trickle(), headers=auth) as r:
        assert r.status == 200, await r.text()
    deep = b'{"name": "d", "payload": ' + b"[" * 400_000 + b"]" * 400_000 + b"}"
    async with session.post(f"{base}/v1/events", data=deep[:MAX_BODY_BYTES], headers=auth) as r:
        assert r.status == 400 and "nested deeper" in (await r.json())["error"]
    nested = b'{"name": "d", "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    async with session.post(f"{base}/v1/events", data=nested, headers=auth) as r:
        assert r.status == 400 and "nested deeper" in (await r.json())["error"]
    brackets_in_text = b'{"name": "d", "payload": "' + b"[" * 100 + b'"}'
    async with session.post(f"{base}/v1/events", data=brackets_in_text, headers=auth) as r:
        assert r.status == 200


# -- token files and settings -------------------------------------------------------------


def write_token(path: Path, mode: int = 0o600, text: str = TOKEN + "\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_token_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    private = write_token(tmp_path / "private")
    with caplog.at_level(logging.WARNING, "pysyncer.admin.auth"):
        assert read_token_file(private) == TOKEN
    assert not caplog.records
    shared = write_token(tmp_path / "shared", 0o644)
    with caplog.at_level(logging.WARNING, "pysyncer.admin.auth"):
        assert read_token_file(shared) == TOKEN
    assert "readable by group or others" in caplog.text and TOKEN not in caplog.text
    with pytest.raises(ConfigError, match=r"admin-token-file.*one token"):
        read_token_file(write_token(tmp_path / "empty", text="\n"))
    with pytest.raises(ConfigError, match=r"admin-token-file.*cannot read"):
        read_token_file(tmp_path / "missing")
    assert token_from_file(None, {TOKEN_FILE_ENV: str(private)}) == TOKEN
    assert token_from_file(str(private), {}) == TOKEN
    assert token_from_file(None, {}) is None
    assert TOKEN not in repr(AdminAuth(token=TOKEN))


def test_settings_env_name_is_the_clients() -> None:
    (setting,) = (s for s in SETTINGS if s.key == "admin-token-file")
    assert setting.env == TOKEN_FILE_ENV


def test_non_loopback_admin_address_needs_a_token(tmp_path: Path) -> None:
    for address in ("0.0.0.0:30300", "10.0.0.5:30300", "[::]:30300"):
        with pytest.raises(ConfigError, match=r"admin-addr.*admin-token-file") as caught:
            load_config({"admin-addr": address}, environ={})
        assert "\n" not in str(caught.value)
    token_file = write_token(tmp_path / "token")
    config = load_config(
        {"admin-addr": "0.0.0.0:30300", "admin-token-file": str(token_file)}, environ={}
    )
    assert config.admin_auth.token == TOKEN and config.admin_auth.listen_host == "0.0.0.0"
    assert config.admin_auth.read_auth == "token" and config.admin_auth.metrics_auth == "open"
    assert load_config({"admin-addr": "[::1]:1"}, environ={}).admin_auth.token is None
    with pytest.raises(ConfigError, match=r"metrics-auth.*admin-token-file"):
        load_config({"metrics-auth": "token"}, environ={})
    with pytest.raises(ConfigError, match="admin-read-auth"):
        load_config({"admin-read-auth": "maybe"}, environ={})
    from_env = load_config({}, environ={TOKEN_FILE_ENV: str(token_file)})
    assert from_env.admin_auth.token == TOKEN


async def test_client_sends_the_token(api: tuple[aiohttp.ClientSession, str]) -> None:
    _, base = api
    with_token = AdminClient(base, token=TOKEN)
    members = await asyncio.to_thread(with_token.members)
    assert members["members"][0]["name"] == "n1"
    assert TOKEN not in repr(with_token)
    without = AdminClient(base)
    with pytest.raises(AdminUnavailableError, match=r"401.*admin-token-file"):
        await asyncio.to_thread(without.members)
    health = await asyncio.to_thread(without.health)
    assert health["status"] == "ok"


# -- a real daemon --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_daemon_with_a_token_file(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "admin-token")
    daemon = DaemonProcess(
        "auth-a", "127.0.0.1", tmp_path, "dc-auth", "--admin-token-file", str(token_file)
    )
    try:

        def healthy() -> bool:
            if daemon.process.poll() is not None:
                raise RuntimeError(daemon.tail())
            try:
                return bool(daemon.get("/v1/health")["status"])
            except OSError:
                return False

        eventually(healthy, 40, "the daemon's /v1/health answers", daemon)

        def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            base_env = {k: v for k, v in os.environ.items() if k != TOKEN_FILE_ENV}
            return subprocess.run(
                [sys.executable, "-m", "pysyncer", *args, "--admin-addr", daemon.admin],
                capture_output=True, text=True, timeout=30, env={**base_env, **(env or {})},
            )  # fmt: skip

        refused = cli("members")
        assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
        refused = cli("event", "deploy", "v1", "--admin-token-file", str(tmp_path / "none"))
        assert refused.returncode == 1 and "cannot read" in refused.stderr
        listed = cli("members", "--json", env={TOKEN_FILE_ENV: str(token_file)})
        assert listed.returncode == 0 and '"auth-a"' in listed.stdout, listed.stderr
        sent = cli("event", "deploy", "v1", "--admin-token-file", str(token_file))
        assert sent.returncode == 0, sent.stderr
        wrong = write_token(tmp_path / "wrong", text="not-the-token")
        refused = cli("event", "deploy", "v2", "--admin-token-file", str(wrong))
        assert refused.returncode == 1 and "wrong admin token" in refused.stderr
        events = AdminClient(daemon.admin, token=TOKEN).events()["events"]
        assert [e["payload"] for e in events if e["name"] == "deploy"] == ["v1"]
        assert TOKEN not in daemon.log()
    finally:
        daemon.stop()


def test_daemon_refuses_a_network_admin_address_without_a_token(tmp_path: Path) -> None:
    address = f"0.0.0.0:{free_port()}"
    run = subprocess.run(
        [sys.executable, "-m", "pysyncer", "daemon", "--node", "n", "--admin-addr", address,
         "--data-dir", str(tmp_path / "n")],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYSYNCER_CONFIG": ""},
    )  # fmt: skip
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert "admin-addr" in line and "admin-token-file" in line
