"""The embedded registry's bounds over HTTP: whole bodies, JSON depth, tenants, quotas, TTLs.

Bodies are read to their end however slowly they come (a 450 KB body sent in pieces
with pauses is accepted), refused with 413 beyond the size limit and with 400001 when
nested too deep or not JSON, never a 500. Reads never create tenants; writes do, within
the tenant quota. Quotas answer 400100 (Service-Center's "Not enough quota"), leases out
of range 400001. Batch unregister answers per service.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer, ServiceCenterSettings
from tests.support.servicecenter import request_json, session

__all__ = ["session"]  # the fixture

pytestmark = pytest.mark.timeout(60)

SERVICE = {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}
INSTANCE = {"hostName": "h1", "endpoints": ["rest://10.0.0.1:8080"]}
SERVICES = "/v4/default/registry/microservices"

SMALL = ServiceCenterSettings(
    max_body_bytes=600 * 1024,
    max_json_depth=16,
    max_tenants=3,
    max_services=2,
    max_instances=2,
    max_schemas=3,
    max_properties_bytes=64,
    min_interval=5,
    max_ttl=600,
)


@pytest.fixture
async def server() -> AsyncIterator[RegistryServer]:
    async with RegistryServer(EmbeddedRegistry(initial_revision=0, settings=SMALL)) as running:
        yield running


async def call(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    domain: str = "default",
) -> tuple[int, Any]:
    return await request_json(session, method, url + path, body, {"x-domain-name": domain})


def error_code(status: int, body: Any) -> tuple[int, str]:
    assert isinstance(body, dict) and body["errorMessage"], body
    return status, body["errorCode"]


async def raw_request(
    server: RegistryServer, path: str, body: bytes, *, pieces: int, pause: float
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` with a Content-Length, written in ``pieces`` with ``pause`` between."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode())
        step = -(-len(body) // pieces)
        try:
            for start in range(0, len(body), step):
                writer.write(body[start : start + step])
                await writer.drain()
                await asyncio.sleep(pause)
        except ConnectionError:  # the server answered (413) and closed before the end
            pass
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


# ---------------------------------------------------------------------- bodies


async def test_slow_body_is_read_whole(server: RegistryServer) -> None:
    description = "x" * (450 * 1024)
    body = json.dumps({"service": {**SERVICE, "description": description[:1024]}}).encode()
    body = body[:-2] + b', "padding": "' + description.encode() + b'"}}'
    assert len(body) > 450 * 1024
    status, answer = await raw_request(server, SERVICES, body, pieces=30, pause=0.02)
    assert status == 200, answer
    assert server.registry.tenants() == [("default", "default")]


async def test_oversized_body_sent_slowly_is_413(server: RegistryServer) -> None:
    body = b'{"service": {"padding": "' + b"x" * (700 * 1024) + b'"}}'
    status, answer = await raw_request(server, SERVICES, body, pieces=10, pause=0.01)
    assert (status, answer["errorCode"]) == (413, "400001")


@pytest.mark.parametrize("depth", [17, 250_000])
async def test_deep_json_is_400_not_500(
    server: RegistryServer, session: aiohttp.ClientSession, depth: int
) -> None:
    deep = b'{"service": ' + b"[" * depth + b"]" * depth + b"}"
    async with session.post(server.url + SERVICES, data=deep) as response:
        assert response.status == 400
        body = await response.json()
    assert body["errorCode"] == "400001" and "deeper than 16" in body["detail"]


async def test_400000_deep_json_with_default_limits(session: aiohttp.ClientSession) -> None:
    deep = b"[" * 400_000 + b"]" * 400_000
    async with (
        RegistryServer() as running,
        session.post(running.url + SERVICES, data=deep) as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["errorCode"] == "400001" and "deeper than 64" in body["detail"]


async def test_json_at_the_depth_limit_is_parsed(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    # 16 levels: the body, "service", then 14 nested lists in a property value.
    nested: Any = []
    for _ in range(13):
        nested = [nested]
    body = {"service": {**SERVICE, "schemas": nested}}
    status, answer = await call(session, server.url, "POST", SERVICES, body)
    assert error_code(status, answer) == (400, "400001")
    assert "'schemas' must be a list of strings" in answer["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
async def test_bad_bodies_are_400001(
    server: RegistryServer, session: aiohttp.ClientSession, raw: bytes
) -> None:
    async with session.post(server.url + SERVICES, data=raw) as response:
        assert response.status == 400
        assert (await response.json())["errorCode"] == "400001"


# ---------------------------------------------------------------------- tenants


async def test_reads_do_not_create_tenants(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    semaphore = asyncio.Semaphore(16)

    async def read(n: int) -> int:
        async with semaphore:
            status, body = await call(session, server.url, "GET", SERVICES, domain=f"d{n}")
            assert body == {"services": []}
            return status

    statuses = await asyncio.gather(*(read(n) for n in range(5000)))
    assert set(statuses) == {200}
    for path in ("/v4/p9/govern/microservices", "/v4/p9/registry/instances?serviceName=a"):
        await call(session, server.url, "GET", path, domain="other")
    status, body = await call(session, server.url, "DELETE", SERVICES + "/x", domain="ghost")
    assert error_code(status, body) == (400, "400012")
    assert server.registry.tenants() == []


async def test_tenant_quota(server: RegistryServer, session: aiohttp.ClientSession) -> None:
    for domain in ("a", "b", "c"):
        status, _ = await call(
            session, server.url, "POST", SERVICES, {"service": SERVICE}, domain=domain
        )
        assert status == 200
    status, body = await call(
        session, server.url, "POST", SERVICES, {"service": SERVICE}, domain="d"
    )
    assert error_code(status, body) == (400, "400100")
    assert body["errorMessage"] == "Not enough quota"
    # A refused request (bad body) creates no tenant either; known tenants still write.
    status, _ = await call(session, server.url, "GET", SERVICES, domain="d")
    assert status == 200
    status, _ = await call(
        session, server.url, "POST", SERVICES, {"service": {**SERVICE, "version": "2"}}, domain="a"
    )
    assert status == 200
    assert sorted(server.registry.tenants()) == [
        ("a", "default"),
        ("b", "default"),
        ("c", "default"),
    ]


async def test_feed_of_an_unknown_tenant_waits_without_creating_it() -> None:
    registry = EmbeddedRegistry(initial_revision=0)
    first = await registry.changes(0, timeout=0, domain="late")
    assert (first.revision, first.reset, first.changes) == (0, False, ())
    assert registry.tenants() == []
    waiter = asyncio.create_task(registry.changes(first.revision, timeout=10, domain="late"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await registry.create_service(SERVICE, domain="late")
    batch = await asyncio.wait_for(waiter, 5)
    assert [(c.action, c.instance) for c in batch.changes] == [("CREATE", None)]


async def test_following_an_unknown_tenant_sees_its_creation() -> None:
    registry = EmbeddedRegistry()  # revisions from the wall clock
    before = registry.revision(domain="new")
    await registry.create_service(SERVICE, domain="new")
    assert registry.revision(domain="new") == before + 1
    batch = await registry.changes(before, timeout=0, domain="new")
    assert not batch.reset
    assert [(c.revision, c.action) for c in batch.changes] == [(before + 1, "CREATE")]


# ---------------------------------------------------------------------- quotas


async def test_service_and_instance_quotas(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    url = server.url
    ids = []
    for version in ("1.0.0", "2.0.0"):
        status, body = await call(
            session, url, "POST", SERVICES, {"service": {**SERVICE, "version": version}}
        )
        ids.append(body["serviceId"])
    status, body = await call(
        session, url, "POST", SERVICES, {"service": {**SERVICE, "version": "3.0.0"}}
    )
    assert error_code(status, body) == (400, "400100")
    # The same key again is not a new service: still 200 with the existing id.
    status, body = await call(session, url, "POST", SERVICES, {"service": SERVICE})
    assert (status, body) == (200, {"serviceId": ids[0]})

    instances = f"{SERVICES}/{ids[0]}/instances"
    for n in (1, 2):
        one = {"instanceId": f"i{n}", "hostName": "h", "endpoints": [f"rest://10.0.0.{n}:1"]}
        status, _ = await call(session, url, "POST", instances, {"instance": one})
        assert status == 200
    third = {"instanceId": "i3", "hostName": "h", "endpoints": ["rest://10.0.0.3:1"]}
    status, body = await call(session, url, "POST", instances, {"instance": third})
    assert error_code(status, body) == (400, "400100")
    # Re-registering an existing instance at the quota is allowed.
    again = {"instanceId": "i1", "hostName": "h", "endpoints": ["rest://10.0.0.9:1"]}
    status, _ = await call(session, url, "POST", instances, {"instance": again})
    assert status == 200
    assert server.registry.instance_count() == 2


async def test_schema_and_properties_quotas(
    server: RegistryServer, session: aiohttp.ClientSession
) -> None:
    url = server.url
    many = {**SERVICE, "schemas": ["a", "b", "c", "d"]}
    status, body = await call(session, url, "POST", SERVICES, {"service": many})
    assert error_code(status, body) == (400, "400100")
    big = {"k": "v" * 64}
    status, body = await call(
        session, url, "POST", SERVICES, {"service": {**SERVICE, "properties": big}}
    )
    assert error_code(status, body) == (400, "400100")
    assert server.registry.tenants() == []  # refused writes create no tenant
    status, body = await call(session, url, "POST", SERVICES, {"service": SERVICE})
    sid = body["serviceId"]
    instances = f"{SERVICES}/{sid}/instances"
    status, body = await call(
        session, url, "POST", instances, {"instance": {**INSTANCE, "properties": big}}
    )
    assert error_code(status, body) == (400, "400100")
    status, body = await call(session, url, "POST", instances, {"instance": INSTANCE})
    path = f"{instances}/{body['instanceId']}/properties"
    status, body = await call(session, url, "PUT", path, {"properties": big})
    assert error_code(status, body) == (400, "400100")
    status, _ = await call(session, url, "PUT", path, {"properties": {"k": "v" * 60}})
    assert status == 200


@pytest.mark.parametrize(
    "health",
    [
        {"interval": 4, "times": 3},  # under the minimum interval
        {"interval": 300, "times": 1},  # 600 s: allowed (checked below), 601 not
        {"interval": 301, "times": 1},
        {"interval": 2**31 - 1, "times": 2**31 - 1},  # the ~2^62 s lease of old
        {"interval": 2**31, "times": 0},
        {"interval": 30, "times": -1},
    ],
)
async def test_lease_range(
    server: RegistryServer, session: aiohttp.ClientSession, health: dict[str, int]
) -> None:
    status, body = await call(session, server.url, "POST", SERVICES, {"service": SERVICE})
    instances = f"{SERVICES}/{body['serviceId']}/instances"
    instance = {**INSTANCE, "healthCheck": {"mode": "push", **health}}
    status, body = await call(session, server.url, "POST", instances, {"instance": instance})
    if health == {"interval": 300, "times": 1}:
        assert status == 200, body
    else:
        assert error_code(status, body) == (400, "400001")


def test_settings_refuse_nonsense() -> None:
    for bad in ({"max_tenants": 0}, {"max_ttl": 2**31}, {"min_interval": 10, "max_ttl": 5}):
        with pytest.raises(ValueError, match=r"max_|min_"):
            ServiceCenterSettings(**bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- batch unregister


async def test_batch_unregister(server: RegistryServer, session: aiohttp.ClientSession) -> None:
    url = server.url
    _, body = await call(session, url, "POST", SERVICES, {"service": SERVICE})
    bare = body["serviceId"]
    _, body = await call(
        session, url, "POST", SERVICES, {"service": {**SERVICE, "version": "2.0.0"}}
    )
    busy = body["serviceId"]
    await call(session, url, "POST", f"{SERVICES}/{busy}/instances", {"instance": INSTANCE})

    request = {"serviceIds": [bare, busy, "nope", bare]}
    status, body = await call(session, url, "DELETE", SERVICES, request)
    assert status == 200
    results = {r["serviceId"]: r["errMessage"] for r in body["services"]}
    assert list(results) == [bare, busy, "nope"]  # each id answered once, in order
    assert results[bare] == ""
    assert results[busy].startswith("400013 ")
    assert results["nope"].startswith("400012 ")
    _, listed = await call(session, url, "GET", SERVICES)
    assert [s["serviceId"] for s in listed["services"]] == [busy]

    status, body = await call(
        session, url, "DELETE", SERVICES, {"serviceIds": [busy], "force": True}
    )
    assert (status, body) == (200, {"services": [{"serviceId": busy, "errMessage": ""}]})
    assert server.registry.instance_count() == 0
    _, listed = await call(session, url, "GET", SERVICES)
    assert listed["services"] == []


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"serviceIds": []},
        {"serviceIds": "a"},
        {"serviceIds": [1]},
        {"serviceIds": ["a"], "force": "yes"},
    ],
)
async def test_batch_unregister_bad_requests(
    server: RegistryServer, session: aiohttp.ClientSession, request_body: dict[str, Any]
) -> None:
    status, body = await call(session, server.url, "DELETE", SERVICES, request_body)
    assert error_code(status, body) == (400, "400001")


# ---------------------------------------------------------------------- the command


def test_registry_command_refuses_bad_limits_and_files(tmp_path: Path) -> None:
    bad = tmp_path / "rbac.json"
    bad.write_text('{"accounts": []}')
    for args, message in (
        (["--max-tenants", "0"], "max_tenants must be a positive integer"),
        (["--rbac-file", str(bad)], "'accounts' must be a non-empty list"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pysyncer", "registry", "--listen", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and done.stderr.count("\n") == 1


def test_reading_the_settings_does_not_load_aiohttp() -> None:
    code = "import sys, pysyncer.servicecenter.settings; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "False"


def test_daemon_settings_reach_the_embedded_registry(tmp_path: Path) -> None:
    from pysyncer.config import load_config
    from pysyncer.daemon import Daemon
    from pysyncer.errors import ConfigError

    config = load_config(
        {"registry-max-tenants": "7", "registry-max-ttl": "300", "data-dir": str(tmp_path)},
        environ={"PYSYNCER_REGISTRY_MAX_INSTANCES": "9"},
    )
    embedded = Daemon(config).embedded_registry  # built, not started: nothing is bound
    assert embedded is not None
    limits = embedded.registry.settings
    assert (limits.max_tenants, limits.max_instances, limits.max_ttl) == (7, 9, 300)
    assert limits.max_services == ServiceCenterSettings().max_services
    bad = tmp_path / "rbac.toml"
    bad.write_text("accounts = 1\n")
    with pytest.raises(ConfigError, match=r"rbac\.toml"):
        load_config({"registry-rbac-file": str(bad), "data-dir": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match="registry-max-ttl"):
        load_config({"registry-max-ttl": str(2**31), "data-dir": str(tmp_path)}, environ={})
