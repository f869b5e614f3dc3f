"""The embedded registry over real HTTP on loopback: operations, errors, 304, tenancy, feed."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pysyncer.servicecenter import (
    CHANGE_FEED_HEADER,
    MAX_BODY_BYTES,
    REVISION_HEADER,
    EmbeddedRegistry,
    RegistryServer,
)

pytestmark = pytest.mark.timeout(30)

SERVICE = {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}
INSTANCE = {"hostName": "h1", "endpoints": ["rest://10.0.0.1:8080"]}


class Client:
    """A thin JSON client of one registry server (domain and project switchable)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        project: str = "default",
        domain: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        all_headers = dict(headers or {})
        if domain is not None:
            all_headers["x-domain-name"] = domain
        url = f"{self.url}/v4/{project}{path}"
        async with self.session.request(
            method, url, json=body, params=params, headers=all_headers
        ) as response:
            raw = await response.read()
            data = await response.json() if raw else None
            return response.status, data, dict(response.headers)

    async def create_service(self, service: dict[str, Any] | None = None, **kw: Any) -> str:
        status, body, _ = await self.call(
            "POST", "/registry/microservices", {"service": service or SERVICE}, **kw
        )
        assert status == 200, body
        return str(body["serviceId"])

    async def register(
        self, service_id: str, instance: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        path = f"/registry/microservices/{service_id}/instances"
        status, body, _ = await self.call("POST", path, {"instance": instance or INSTANCE}, **kw)
        assert status == 200, body
        return str(body["instanceId"])


@pytest.fixture
async def server() -> AsyncIterator[RegistryServer]:
    async with RegistryServer(
        EmbeddedRegistry(initial_revision=0), eviction_interval=0.02
    ) as running:
        yield running


@pytest.fixture
async def client(server: RegistryServer) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, server.url)


def assert_error(status: int, body: Any, code: str, http: int = 400) -> None:
    assert status == http, body
    assert body["errorCode"] == code
    assert body["errorMessage"]
    assert isinstance(body["detail"], str)


async def test_service_lifecycle(client: Client) -> None:
    service_id = await client.create_service()
    # Same key again: Service-Center returns the existing id.
    assert await client.create_service() == service_id
    status, body, _ = await client.call("GET", "/registry/microservices")
    assert status == 200 and [s["serviceId"] for s in body["services"]] == [service_id]
    status, body, _ = await client.call("GET", f"/registry/microservices/{service_id}")
    assert body["service"]["serviceName"] == "orders"
    assert body["service"]["environment"] == "" and body["service"]["status"] == "UP"
    params = {"type": "microservice", "appId": "shop", "serviceName": "orders"}
    status, body, _ = await client.call(
        "GET", "/registry/existence", params={**params, "version": "1.0.0"}
    )
    assert (status, body) == (200, {"serviceId": service_id})
    status, body, _ = await client.call(
        "GET", "/registry/existence", params={**params, "version": "2.0.0"}
    )
    assert_error(status, body, "400012")
    status, body, _ = await client.call("DELETE", f"/registry/microservices/{service_id}")
    assert status == 200 and body is None
    status, body, _ = await client.call("GET", f"/registry/microservices/{service_id}")
    assert_error(status, body, "400012")


async def test_custom_service_id_conflict(client: Client) -> None:
    await client.create_service({**SERVICE, "serviceId": "svc-a"})
    status, body, _ = await client.call(
        "POST", "/registry/microservices", {"service": {**SERVICE, "serviceId": "svc-b"}}
    )
    assert_error(status, body, "400010")
    assert "svc-a" in body["detail"]
    other = {**SERVICE, "version": "2.0.0", "serviceId": "svc-a"}
    status, body, _ = await client.call("POST", "/registry/microservices", {"service": other})
    assert_error(status, body, "400010")


async def test_delete_needs_force_with_instances(client: Client) -> None:
    service_id = await client.create_service()
    await client.register(service_id)
    path = f"/registry/microservices/{service_id}"
    status, body, _ = await client.call("DELETE", path)
    assert_error(status, body, "400013")
    status, _, _ = await client.call("DELETE", path, params={"force": "true"})
    assert status == 200
    status, body, _ = await client.call("GET", path + "/instances")
    assert_error(status, body, "400012")


async def test_instance_lifecycle(client: Client) -> None:
    service_id = await client.create_service()
    instance_id = await client.register(service_id)
    base = f"/registry/microservices/{service_id}/instances"
    # Same endpoints without an id: the existing id is reused.
    assert await client.register(service_id) == instance_id
    status, body, headers = await client.call("GET", base)
    assert status == 200 and [i["instanceId"] for i in body["instances"]] == [instance_id]
    assert body["instances"][0]["healthCheck"] == {"mode": "push", "interval": 30, "times": 3}
    assert REVISION_HEADER in headers
    status, body, _ = await client.call("GET", f"{base}/{instance_id}")
    assert body["instance"]["serviceId"] == service_id
    assert body["instance"]["version"] == "1.0.0"
    status, body, _ = await client.call("PUT", f"{base}/{instance_id}/heartbeat")
    assert status == 200 and body is None
    status, _, _ = await client.call(
        "PUT", f"{base}/{instance_id}/status", params={"value": "DOWN"}
    )
    assert status == 200
    status, _, _ = await client.call(
        "PUT", f"{base}/{instance_id}/properties", {"properties": {"zone": "a"}}
    )
    assert status == 200
    status, body, _ = await client.call("GET", f"{base}/{instance_id}")
    assert body["instance"]["status"] == "DOWN"
    assert body["instance"]["properties"] == {"zone": "a"}
    status, _, _ = await client.call("DELETE", f"{base}/{instance_id}")
    assert status == 200
    for method, suffix in [("GET", ""), ("PUT", "/heartbeat"), ("DELETE", "")]:
        status, body, _ = await client.call(method, f"{base}/{instance_id}{suffix}")
        assert_error(status, body, "400017")


async def test_client_given_instance_id_overwrites(client: Client) -> None:
    service_id = await client.create_service()
    given = {**INSTANCE, "instanceId": "my-id-1"}
    assert await client.register(service_id, given) == "my-id-1"
    changed = {**given, "endpoints": ["rest://10.0.0.2:8080"]}
    assert await client.register(service_id, changed) == "my-id-1"
    _, body, _ = await client.call("GET", f"/registry/microservices/{service_id}/instances")
    assert [i["endpoints"] for i in body["instances"]] == [["rest://10.0.0.2:8080"]]


async def test_batch_heartbeats(client: Client) -> None:
    service_id = await client.create_service()
    instance_id = await client.register(service_id)
    good = {"serviceId": service_id, "instanceId": instance_id}
    status, body, _ = await client.call("PUT", "/registry/heartbeats", {"Instances": [good]})
    assert (status, body) == (200, None)
    bad = {"serviceId": service_id, "instanceId": "nope"}
    status, body, _ = await client.call("PUT", "/registry/heartbeats", {"Instances": [good, bad]})
    assert status == 400 and body["errorCode"] == "400017"
    assert [bool(r["errMessage"]) for r in body["instances"]] == [False, True]
    status, body, _ = await client.call("PUT", "/registry/heartbeats", {"Instances": []})
    assert_error(status, body, "400001")


async def test_find_and_govern(client: Client) -> None:
    v1 = await client.create_service()
    v2 = await client.create_service({**SERVICE, "version": "1.2.0"})
    i1 = await client.register(v1)
    i2 = await client.register(v2, {"hostName": "h2", "endpoints": ["rest://10.0.0.2:1"]})
    params = {"appId": "shop", "serviceName": "orders"}
    status, body, _ = await client.call("GET", "/registry/instances", params=params)
    assert status == 200 and {i["instanceId"] for i in body["instances"]} == {i1, i2}
    for version, expected in [("1.0.0", {i1}), ("latest", {i2}), ("1.1.0+", {i2})]:
        _, body, _ = await client.call(
            "GET", "/registry/instances", params={**params, "version": version}
        )
        assert {i["instanceId"] for i in body["instances"]} == expected, version
    status, body, _ = await client.call(
        "GET", "/registry/instances", params={**params, "serviceName": "nothing"}
    )
    assert_error(status, body, "400012")
    status, body, _ = await client.call(
        "GET", "/registry/instances", params=params, headers={"X-ConsumerId": "unknown"}
    )
    assert_error(status, body, "400012")
    status, body, _ = await client.call(
        "GET", "/govern/microservices", params={"options": "instances"}
    )
    assert status == 200
    details = {d["microService"]["serviceId"]: d for d in body["allServicesDetail"]}
    assert [i["instanceId"] for i in details[v1]["instances"]] == [i1]
    status, body, _ = await client.call("GET", f"/govern/microservices/{v2}")
    assert body["service"]["microServiceVersions"] == ["1.0.0", "1.2.0"]
    assert [i["instanceId"] for i in body["service"]["instances"]] == [i2]


async def test_revision_and_304(client: Client) -> None:
    service_id = await client.create_service()
    instance_id = await client.register(service_id)
    path = f"/registry/microservices/{service_id}/instances"
    status, _, headers = await client.call("GET", path)
    rev = headers[REVISION_HEADER]
    status, body, headers = await client.call("GET", path, params={"rev": rev})
    assert status == 304 and body is None and headers[REVISION_HEADER] == rev
    find = {"appId": "shop", "serviceName": "orders"}
    status, _, _ = await client.call(
        "GET", "/registry/instances", params=find, headers={"x-resource-revsion": rev}
    )
    assert status == 304
    # A heartbeat changes nothing; a status change does.
    await client.call("PUT", f"{path}/{instance_id}/heartbeat")
    assert (await client.call("GET", path, params={"rev": rev}))[0] == 304
    await client.call("PUT", f"{path}/{instance_id}/status", params={"value": "DOWN"})
    status, body, headers = await client.call("GET", path, params={"rev": rev})
    assert status == 200 and int(headers[REVISION_HEADER]) > int(rev)


async def test_tenancy_isolation(client: Client) -> None:
    mine = await client.create_service(domain="alpha")
    theirs = await client.create_service(domain="beta")
    other_project = await client.create_service(domain="alpha", project="p2")
    assert len({mine, theirs, other_project}) == 3
    _, body, _ = await client.call("GET", "/registry/microservices", domain="alpha")
    assert [s["serviceId"] for s in body["services"]] == [mine]
    _, body, _ = await client.call("GET", "/registry/microservices")
    assert body["services"] == []
    status, body, _ = await client.call("GET", f"/registry/microservices/{mine}", domain="beta")
    assert_error(status, body, "400012")
    status, body, _ = await client.call("GET", "/registry/microservices", domain="bad domain!")
    assert_error(status, body, "400001")


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "/registry/microservices", {"service": {"appId": "a"}}, "400001"),
        ("POST", "/registry/microservices", {"service": {"serviceName": "a b"}}, "400001"),
        ("POST", "/registry/microservices", {"service": {**SERVICE, "version": "x"}}, "400001"),
        ("POST", "/registry/microservices", {}, "400001"),
        ("POST", "/registry/microservices/nope/instances", {"instance": INSTANCE}, "400012"),
        ("GET", "/registry/existence?type=thing", None, "400001"),
        ("GET", "/registry/instances?appId=a", None, "400001"),
        ("GET", "/registry/changes", None, "400001"),
        ("GET", "/registry/changes?since=0&timeout=61", None, "400001"),
        ("GET", "/registry/changes?since=x", None, "400001"),
    ],
)
async def test_bad_requests(client: Client, method: str, path: str, body: Any, code: str) -> None:
    status, answer, _ = await client.call(method, path, body)
    assert_error(status, answer, code)


async def test_bad_instance_bodies(client: Client) -> None:
    service_id = await client.create_service()
    path = f"/registry/microservices/{service_id}/instances"
    for instance in [
        {"endpoints": []},
        {"hostName": "h"},
        {**INSTANCE, "status": "SLEEPING"},
        {**INSTANCE, "healthCheck": {"mode": "push", "interval": 0, "times": 1}},
        {**INSTANCE, "properties": {"a": 1}},
    ]:
        status, body, _ = await client.call("POST", path, {"instance": instance})
        assert_error(status, body, "400001")
    instance_id = await client.register(service_id)
    status, body, _ = await client.call(
        "PUT", f"{path}/{instance_id}/status", params={"value": "ASLEEP"}
    )
    assert_error(status, body, "400001")
    status, body, _ = await client.call("PUT", f"{path}/{instance_id}/properties", {})
    assert_error(status, body, "400001")


async def test_bodies_are_bounded_and_errors_are_json(client: Client) -> None:
    big = b'{"service": {"description": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    async with client.session.post(
        f"{client.url}/v4/default/registry/microservices", data=io.BytesIO(big)
    ) as response:
        assert response.status == 413
        assert (await response.json())["errorCode"] == "400001"
    async with client.session.post(
        f"{client.url}/v4/default/registry/microservices", data=b"{not json"
    ) as response:
        assert response.status == 400
        assert (await response.json())["errorCode"] == "400001"
    async with client.session.get(f"{client.url}/v4/default/nothing") as response:
        assert response.status == 404
        assert (await response.json())["errorCode"] == "404"


async def test_health_and_version(client: Client) -> None:
    status, body, _ = await client.call("GET", "/registry/health")
    assert status == 200 and body["instances"][0]["status"] == "UP"
    status, body, _ = await client.call("GET", "/registry/version")
    assert status == 200 and body["apiVersion"] == "4.0.0"


async def test_lease_expiry_over_http(client: Client) -> None:
    service_id = await client.create_service()
    short = {**INSTANCE, "healthCheck": {"mode": "push", "interval": 1, "times": 0}}
    kept = {
        "hostName": "h2",
        "endpoints": ["rest://10.0.0.2:1"],
        "healthCheck": {"mode": "push", "interval": 5, "times": 0},  # outlives a stall
    }
    gone = await client.register(service_id, short)
    alive = await client.register(service_id, kept)
    path = f"/registry/microservices/{service_id}/instances"
    _, _, headers = await client.call("GET", path)
    since = headers[REVISION_HEADER]
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        await client.call("PUT", f"{path}/{alive}/heartbeat")
        _, body, _ = await client.call("GET", path)
        if len(body["instances"]) == 1:
            break
        await asyncio.sleep(0.1)
    assert [i["instanceId"] for i in body["instances"]] == [alive]
    status, body, _ = await client.call(
        "GET", "/registry/changes", params={"since": since, "timeout": "0"}
    )
    assert [(c["action"], c["instance"]["instanceId"]) for c in body["changes"]] == [
        ("DELETE", gone)
    ]
    status, body, _ = await client.call("PUT", f"{path}/{gone}/heartbeat")
    assert_error(status, body, "400017")


async def test_change_feed_long_poll_is_woken_by_the_change(
    server: RegistryServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A waiter that missed the change would sleep to its 10 s timeout: its periodic
    # lease re-check is pushed out of the way, so only the change can wake it early.
    # (Not a latency bound: a loaded machine may stall for seconds.)
    monkeypatch.setattr(server.registry._leases, "wake_period", lambda: 30.0)
    service_id = await client.create_service()
    _, first, headers = await client.call(
        "GET", "/registry/changes", params={"since": "0", "timeout": "0"}
    )
    assert headers[CHANGE_FEED_HEADER] == "1"
    assert first["reset"] is False
    assert [(c["action"], c["instance"]) for c in first["changes"]] == [("CREATE", None)]
    since = first["revision"]

    async def poll() -> tuple[float, Any]:
        _, body, _ = await client.call(
            "GET", "/registry/changes", params={"since": str(since), "timeout": "10"}
        )
        return time.monotonic(), body

    waiter = asyncio.create_task(poll())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    registered_at = time.monotonic()
    instance_id = await client.register(service_id)
    woke_at, body = await waiter
    assert woke_at - registered_at < 5.0
    assert [c["instance"]["instanceId"] for c in body["changes"]] == [instance_id]
    assert body["changes"][0]["service"]["serviceId"] == service_id
    assert body["revision"] == body["changes"][0]["revision"] == since + 1


async def test_change_feed_timeout_and_reset(client: Client) -> None:
    await client.create_service()
    _, body, _ = await client.call(
        "GET", "/registry/changes", params={"since": "0", "timeout": "0"}
    )
    current = body["revision"]
    started = time.monotonic()
    status, body, _ = await client.call(
        "GET", "/registry/changes", params={"since": str(current), "timeout": "0.3"}
    )
    assert status == 200
    assert 0.25 < time.monotonic() - started < 10.0  # its own timeout, not the default 30 s
    assert body == {"revision": current, "reset": False, "changes": []}
    # From the future (the registry restarted): reset.
    _, body, _ = await client.call(
        "GET", "/registry/changes", params={"since": str(current + 100), "timeout": "5"}
    )
    assert body == {"revision": current, "reset": True, "changes": []}


async def test_close_releases_long_polls() -> None:
    server = await RegistryServer(EmbeddedRegistry(initial_revision=0)).start()
    async with aiohttp.ClientSession() as session:
        client = Client(session, server.url)
        waiter = asyncio.create_task(
            client.call("GET", "/registry/changes", params={"since": "0", "timeout": "30"})
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await server.close()
        with pytest.raises(aiohttp.ClientError):
            await client.call("GET", "/registry/version")
        status, body, _ = await asyncio.wait_for(waiter, 10)
    assert time.monotonic() - started < 10.0  # the poll asked for 30 s
    assert status == 200 and body["changes"] == []
