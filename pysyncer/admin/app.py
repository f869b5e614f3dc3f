"""The admin API server: its route table, request parsing, and JSON error bodies.

Owns :data:`ROUTES` (method, path, handler, request and answer payloads, one line of
meaning), from which both the aiohttp application and the route table in
``docs/admin.md`` (:func:`render_markdown`) are built. Payload shapes live in
:mod:`pysyncer.admin.payloads`. Every error is a JSON body ``{"error": "..."}`` with a
4xx/5xx status; a bad request never raises out of a handler.

Keys (Serf's key rotation across the pool): ``GET /v1/keys`` lists the keys of every
member; ``POST /v1/keys`` installs, uses or removes one. 400: bad input; 409: this node
runs without encryption; 502: not every member answered or some reported a failure (the
same body, plus ``"error"``).

Talks to the daemon only through the backend protocols below: it must not import gossip
or sync internals (the key errors are the one exception: they are the key API's outcomes).
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pysyncer.admin.payloads import (
    MEMBER_STATUSES,
    ErrorAnswer,
    Event,
    EventRequest,
    EventsAnswer,
    EventSent,
    FullSyncAnswer,
    Health,
    KeyAnswer,
    KeyFailure,
    KeyOperation,
    KeyRequest,
    Member,
    MembersAnswer,
    QueryAnswer,
    QueryRequest,
    SyncStatus,
)
from pysyncer.gossip.keymanager import EncryptionDisabledError, KeyOperationError

__all__ = [
    "KEY_OPERATIONS",
    "MAX_BODY_BYTES",
    "ROUTES",
    "AdminBackend",
    "KeyBackend",
    "Route",
    "SyncBackend",
    "build_app",
    "render_markdown",
]

MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_TIMEOUT_MS = 5 * 60 * 1000
KEY_OPERATIONS: tuple[KeyOperation, ...] = ("install", "use", "remove")


class AdminBackend(Protocol):
    """What the admin API needs from the daemon."""

    def health(self) -> Health: ...

    def members(self) -> Sequence[Member]: ...

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None: ...

    def recent_events(self) -> Sequence[Event]:
        """Oldest first."""

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> QueryAnswer: ...


class KeyBackend(Protocol):
    """What the key routes need from the daemon (optional: without it they answer 501)."""

    async def key_operation(self, op: str, key: str | None) -> KeyAnswer:
        """``op`` (list, install, use, remove) on every member: the aggregated answers.

        Raises ValueError for a bad key, EncryptionDisabledError, KeyOperationError.
        """


class SyncBackend(Protocol):
    """What the sync routes need (optional: without a sync engine they answer 503)."""

    def sync_status(self) -> SyncStatus | None:
        """This data center and its links; None while no sync engine runs (503)."""

    def full_sync(self) -> Sequence[str] | None:
        """Start a digest repair with every remote data center: the ones asked (None: 503)."""


NOT_RUNNING = "the sync engine is not running"


def _error(status: int, message: str) -> web.Response:
    return web.json_response(ErrorAnswer(error=message), status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, actual_size=request.content_length
        )
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _text_field(body: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ValueError(
            f"'{key}' must be a non-empty string" if required else f"'{key}' must be a string"
        )
    return value


def _event_request(body: Mapping[str, Any]) -> EventRequest:
    coalesce = body.get("coalesce", False)
    if not isinstance(coalesce, bool):
        raise ValueError("'coalesce' must be true or false")
    return EventRequest(
        name=_text_field(body, "name", required=True),
        payload=_text_field(body, "payload", required=False),
        coalesce=coalesce,
    )


def _query_request(body: Mapping[str, Any]) -> QueryRequest:
    request = QueryRequest(
        name=_text_field(body, "name", required=True),
        payload=_text_field(body, "payload", required=False),
    )
    timeout_ms = body.get("timeout_ms")
    if timeout_ms is not None:
        if (
            not isinstance(timeout_ms, int)
            or isinstance(timeout_ms, bool)
            or not 0 < timeout_ms <= MAX_QUERY_TIMEOUT_MS
        ):
            raise ValueError(f"'timeout_ms' must be an integer in 1..{MAX_QUERY_TIMEOUT_MS}")
        request["timeout_ms"] = timeout_ms
    return request


def _key_request(body: Mapping[str, Any]) -> KeyRequest:
    op = _text_field(body, "op", required=True)
    if op not in KEY_OPERATIONS:
        raise ValueError(f"'op' must be one of {', '.join(KEY_OPERATIONS)}")
    return KeyRequest(op=op, key=_text_field(body, "key", required=True))


class _Handlers:
    """The route handlers, bound to one daemon's backends."""

    def __init__(
        self,
        backend: AdminBackend,
        registry: CollectorRegistry,
        keys: KeyBackend | None,
        sync: SyncBackend | None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.keys = keys
        self.sync = sync

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.health())

    async def members(self, request: web.Request) -> web.Response:
        return web.json_response(MembersAnswer(members=list(self.backend.members())))

    async def post_event(self, request: web.Request) -> web.Response:
        try:
            event = _event_request(await _json_body(request))
            payload = event.get("payload", "").encode()
            await self.backend.send_event(event["name"], payload, event.get("coalesce", False))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(EventSent(sent=True, name=event["name"]))

    async def get_events(self, request: web.Request) -> web.Response:
        return web.json_response(EventsAnswer(events=list(self.backend.recent_events())))

    async def post_query(self, request: web.Request) -> web.Response:
        try:
            query = _query_request(await _json_body(request))
            result = await self.backend.query(
                query["name"], query.get("payload", "").encode(), query.get("timeout_ms")
            )
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(result)

    async def _key_operation(self, op: str, key: str | None) -> web.Response:
        if self.keys is None:
            return _error(501, "key management is not available on this server")
        try:
            result = await self.keys.key_operation(op, key)
        except KeyOperationError as exc:
            failure = cast(KeyFailure, exc.response.to_dict())
            failure["error"] = str(exc)
            return web.json_response(failure, status=502)
        except EncryptionDisabledError as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(result)

    async def get_keys(self, request: web.Request) -> web.Response:
        return await self._key_operation("list", None)

    async def post_keys(self, request: web.Request) -> web.Response:
        try:
            key_request = _key_request(await _json_body(request))
        except ValueError as exc:
            return _error(400, str(exc))
        return await self._key_operation(key_request["op"], key_request["key"])

    async def sync_status(self, request: web.Request) -> web.Response:
        status = self.sync.sync_status() if self.sync is not None else None
        if status is None:
            return _error(503, NOT_RUNNING)
        return web.json_response(status)

    async def full_sync(self, request: web.Request) -> web.Response:
        remote = self.sync.full_sync() if self.sync is not None else None
        if remote is None:
            return _error(503, NOT_RUNNING)
        return web.json_response(FullSyncAnswer(started=True, remote=list(remote)))

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _one_of(names: Sequence[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


@dataclass(frozen=True)
class Route:
    """One admin route: how it is called, what it takes and answers, what it does."""

    method: Literal["GET", "POST"]
    path: str
    handler: Callable[[_Handlers, web.Request], Awaitable[web.Response]]
    summary: str
    request: type | None = None  # a payloads TypedDict, None: no body
    answer: type | None = None  # a payloads TypedDict, None: not JSON (see the summary)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", _Handlers.health,
          "this member's health: `degraded` while its Lifeguard health score is above 0",
          answer=Health),
    Route("GET", "/v1/members", _Handlers.members,
          f"the gossip pool's members by name, status {_one_of(MEMBER_STATUSES)}",
          answer=MembersAnswer),
    Route("POST", "/v1/events", _Handlers.post_event,
          "sends a user event to the pool (`coalesce` false by default)",
          request=EventRequest, answer=EventSent),
    Route("GET", "/v1/events", _Handlers.get_events,
          "the recent user events this member received, oldest first (payload as text)",
          answer=EventsAnswer),
    Route("POST", "/v1/queries", _Handlers.post_query,
          "sends a query and waits for acks and responses "
          f"(`timeout_ms` up to {MAX_QUERY_TIMEOUT_MS // 60_000} minutes)",
          request=QueryRequest, answer=QueryAnswer),
    Route("GET", "/v1/keys", _Handlers.get_keys,
          "the gossip keys of every member (see [Key rotation](gossip.md#key-rotation))",
          answer=KeyAnswer),
    Route("POST", "/v1/keys", _Handlers.post_keys,
          f"`op` {_one_of(KEY_OPERATIONS)} of a base64 key, on every member",
          request=KeyRequest, answer=KeyAnswer),
    Route("GET", "/v1/sync/status", _Handlers.sync_status,
          "this data center's export and, per remote data center, its link "
          "(see [sync](sync.md#operating-it)); 503 without a sync engine",
          answer=SyncStatus),
    Route("POST", "/v1/sync/full", _Handlers.full_sync,
          "starts a digest repair with every remote data center; 503 without a sync engine",
          answer=FullSyncAnswer),
    Route("GET", "/metrics", _Handlers.metrics,
          "Prometheus text: `pysyncer_gossip_*`, `_sync_*`, `_ownership_*`, `_store_*`"),
)  # fmt: skip


def build_app(
    backend: AdminBackend,
    registry: CollectorRegistry,
    keys: KeyBackend | None = None,
    sync: SyncBackend | None = None,
) -> web.Application:
    """The admin application (every route of :data:`ROUTES`); run with aiohttp's AppRunner."""

    @web.middleware
    async def json_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    handlers = _Handlers(backend, registry, keys, sync)
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, functools.partial(route.handler, handlers))
    return app


def _is_payload(value: object) -> bool:
    return isinstance(value, type) and hasattr(value, "__required_keys__")


def _shape(payload: type | None) -> str:
    """``{"a", "b": [{"c", "d"}]}``: the keys of a payload, lists of payloads spelled out."""
    if payload is None:
        return "-"
    parts = []
    for key, hint in typing.get_type_hints(payload).items():
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        parts.append(f'"{key}": [{_shape(item)}]' if _is_payload(item) else f'"{key}"')
    return "{" + ", ".join(parts) + "}"


def render_markdown() -> str:
    """:data:`ROUTES` as the Markdown table that ``docs/admin.md`` carries."""
    lines = ["| route | body | answer | what it does |", "|---|---|---|---|"]
    for route in ROUTES:
        answer = f"`{_shape(route.answer)}`" if route.answer is not None else "text"
        request = f"`{_shape(route.request)}`" if route.request is not None else "-"
        cells = (f"`{route.method} {route.path}`", request, answer, route.summary)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
