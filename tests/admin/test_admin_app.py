"""The admin API's routes, shapes and JSON errors, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from pysyncer.admin.app import ROUTES, build_app
from pysyncer.admin.bodies import MAX_BODY_BYTES
from pysyncer.admin.payloads import (
    Coordinate,
    CoordinatesAnswer,
    Event,
    Health,
    Member,
    QueryAnswer,
)

JSON = {"Content-Type": "application/json"}


class InMemoryBackend:
    """Records what the API asked for; answers like a one-member pool would."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.queries: list[tuple[str, bytes, int | None]] = []

    def health(self) -> Health:
        return {
            "status": "ok",
            "node": "n1",
            "dc": "dc1",
            "version": "0",
            "implementation": "python",
            "health_score": 0,
            "insecure": False,
        }

    def members(self) -> Sequence[Member]:
        return [{"name": "n1", "addr": "127.0.0.1", "port": 1, "status": "alive", "tags": {}}]

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.events.append({"name": name, "payload": payload.decode(), "ltime": len(self.events)})

    def recent_events(self) -> Sequence[Event]:
        return self.events

    def coordinates(self) -> CoordinatesAnswer:
        origin: Coordinate = {"vec": [0.0] * 8, "error": 1.5, "adjustment": 0.0, "height": 1e-05}
        return {"node": "n1", "coordinates": {"n1": origin}}

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> QueryAnswer:
        self.queries.append((name, payload, timeout_ms))
        return {"acks": ["n1"], "responses": {"n1": payload.decode()}, "completed_early": True}


@pytest.fixture
async def client() -> AsyncIterator[tuple[aiohttp.ClientSession, str, InMemoryBackend]]:
    backend = InMemoryBackend()
    registry = CollectorRegistry()
    Counter("pysyncer_test_total", "a counter", registry=registry).inc(3)
    runner = web.AppRunner(build_app(backend, registry))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}", backend
    await runner.cleanup()


async def test_health_members_metrics(
    client: tuple[aiohttp.ClientSession, str, InMemoryBackend],
) -> None:
    session, base, _ = client
    async with session.get(f"{base}/v1/health") as response:
        assert response.status == 200
        assert set(await response.json()) == set(Health.__annotations__)
    async with session.get(f"{base}/v1/members") as response:
        assert (await response.json())["members"][0]["status"] == "alive"
    async with session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert "pysyncer_test_total 3.0" in await response.text()


async def test_events_round_trip(
    client: tuple[aiohttp.ClientSession, str, InMemoryBackend],
) -> None:
    session, base, _ = client
    async with session.post(f"{base}/v1/events", json={"name": "deploy", "payload": "v1"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/v1/events") as response:
        assert (await response.json())["events"] == [
            {"name": "deploy", "payload": "v1", "ltime": 0}
        ]


async def test_query(client: tuple[aiohttp.ClientSession, str, InMemoryBackend]) -> None:
    session, base, backend = client
    body = {"name": "q", "payload": "ping", "timeout_ms": 500}
    async with session.post(f"{base}/v1/queries", json=body) as response:
        assert await response.json() == {
            "acks": ["n1"],
            "responses": {"n1": "ping"},
            "completed_early": True,
        }
    assert backend.queries == [("q", b"ping", 500)]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/events", b"not json", "body is not JSON"),
        ("/v1/events", b"[1]", "body must be a JSON object"),
        ("/v1/events", b'{"payload": "x"}', "'name' must be a non-empty string"),
        ("/v1/events", b'{"name": "a", "payload": 3}', "'payload' must be a string"),
        ("/v1/events", b'{"name": "a", "coalesce": "yes"}', "'coalesce' must be true or false"),
        ("/v1/queries", b'{"name": "a", "timeout_ms": 0}', "'timeout_ms' must be an integer"),
        ("/v1/queries", b'{"name": "a", "timeout_ms": true}', "'timeout_ms' must be an integer"),
    ],
)
async def test_bad_requests_get_json_errors(
    client: tuple[aiohttp.ClientSession, str, InMemoryBackend],
    path: str,
    body: bytes,
    message: str,
) -> None:
    session, base, backend = client
    async with session.post(f"{base}{path}", data=body, headers=JSON) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert not backend.events and not backend.queries


async def test_oversized_body_and_unknown_route(
    client: tuple[aiohttp.ClientSession, str, InMemoryBackend],
) -> None:
    session, base, _ = client
    big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    async with session.post(f"{base}/v1/events", data=big, headers=JSON) as response:
        assert response.status == 413
        assert "error" in await response.json()
    async with session.get(f"{base}/v1/nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "Not Found"


async def test_every_declared_route_is_served(
    client: tuple[aiohttp.ClientSession, str, InMemoryBackend],
) -> None:
    """Each route of ROUTES answers (the optional backends missing: 501/503), and only those."""
    session, base, _ = client
    optional = {"/v1/keys": 501, "/v1/sync/status": 503, "/v1/sync/full": 503}
    optional.update({"/v1/health/live": 501, "/v1/health/ready": 501})  # no probe backend
    optional.update({"/v1/sync/diff": 503, "/v1/sync/filters/dry-run": 503})  # no engine
    optional.update({"/v1/leave": 501, "/v1/force-leave": 501})  # no lifecycle backend
    for route in ROUTES:
        body = {"name": "x"} if route.path in ("/v1/events", "/v1/queries") else None
        if route.method == "POST" and body is None:
            body = {}
        if route.path == "/v1/keys" and route.method == "POST":
            body = {"op": "use", "key": "k"}
        async with session.request(route.method, base + route.path, json=body) as response:
            assert response.status == optional.get(route.path, 200), route
    async with session.put(f"{base}/v1/health") as response:
        assert response.status == 405


async def test_sync_routes_answer_503_while_the_engine_is_not_running() -> None:
    class Stopped:
        def sync_status(self) -> None:
            return None

        def full_sync(self) -> None:
            return None

    runner = web.AppRunner(build_app(InMemoryBackend(), CollectorRegistry(), sync=Stopped()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            for method, path in (("GET", "/v1/sync/status"), ("POST", "/v1/sync/full")):
                async with session.request(method, base + path, json={}) as response:
                    assert response.status == 503
                    assert await response.json() == {"error": "the sync engine is not running"}
    finally:
        await runner.cleanup()
