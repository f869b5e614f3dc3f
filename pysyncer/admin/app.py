"""The admin API routes: health, members, user events, queries, gossip keys, metrics.

Every error is a JSON body ``{"error": "..."}`` with a 4xx/5xx status; a bad request
never raises out of a handler.

Keys (Serf's key rotation across the pool): ``GET /v1/keys`` lists the keys of every
member; ``POST /v1/keys {"op": "install"|"use"|"remove", "key": "<base64>"}`` changes
them. Both answer ``{"operation", "num_nodes", "num_resp", "num_err", "messages": {node:
text}, "keys": {key: count}, "primary_keys": {key: count}, "no_response": [node]}``.
400: bad input; 409: this node runs without encryption; 502: not every member answered
or some reported a failure (the same body, plus ``"error"``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pysyncer.gossip.keymanager import EncryptionDisabledError, KeyOperationError

__all__ = ["MAX_BODY_BYTES", "AdminBackend", "KeyBackend", "build_app"]

MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_TIMEOUT_MS = 5 * 60 * 1000
KEY_OPERATIONS = ("install", "use", "remove")


class AdminBackend(Protocol):
    """What the admin API needs from the daemon."""

    def health(self) -> Mapping[str, Any]:
        """``{"status", "node", "dc", "version", "implementation"}``."""

    def members(self) -> Sequence[Mapping[str, Any]]:
        """``[{"name", "addr", "port", "status", "tags"}]``."""

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None: ...

    def recent_events(self) -> Sequence[Mapping[str, Any]]:
        """``[{"name", "payload" (text), "ltime"}]``, oldest first."""

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> Mapping[str, Any]:
        """``{"acks": [node...], "responses": {node: text}}``."""


class KeyBackend(Protocol):
    """What the key routes need from the daemon (optional: without it they answer 501)."""

    async def key_operation(self, op: str, key: str | None) -> Mapping[str, Any]:
        """``op`` (list, install, use, remove) on every member: the aggregated answers.

        Raises ValueError for a bad key, EncryptionDisabledError, KeyOperationError.
        """


class SyncBackend(Protocol):
    """What the sync routes need (optional: without a sync engine they answer 503)."""

    def sync_status(self) -> Mapping[str, Any]:
        """This data center, its revision, and per remote data center its state."""

    def full_sync(self) -> Sequence[str]:
        """Start a digest repair with every remote data center; the ones asked."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


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


def build_app(
    backend: AdminBackend,
    registry: CollectorRegistry,
    keys: KeyBackend | None = None,
    sync: SyncBackend | None = None,
) -> web.Application:
    """The admin application; the daemon runs it with aiohttp's AppRunner."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response(dict(backend.health()))

    async def members(request: web.Request) -> web.Response:
        return web.json_response({"members": [dict(m) for m in backend.members()]})

    async def post_event(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            name = _text_field(body, "name", required=True)
            payload = _text_field(body, "payload", required=False)
            coalesce = body.get("coalesce", False)
            if not isinstance(coalesce, bool):
                raise ValueError("'coalesce' must be true or false")
            await backend.send_event(name, payload.encode(), coalesce)
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response({"sent": True, "name": name})

    async def get_events(request: web.Request) -> web.Response:
        return web.json_response({"events": [dict(e) for e in backend.recent_events()]})

    async def post_query(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            name = _text_field(body, "name", required=True)
            payload = _text_field(body, "payload", required=False)
            timeout_ms = body.get("timeout_ms")
            if timeout_ms is not None and (
                not isinstance(timeout_ms, int)
                or isinstance(timeout_ms, bool)
                or not 0 < timeout_ms <= MAX_QUERY_TIMEOUT_MS
            ):
                raise ValueError(f"'timeout_ms' must be an integer in 1..{MAX_QUERY_TIMEOUT_MS}")
            result = await backend.query(name, payload.encode(), timeout_ms)
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(dict(result))

    async def key_operation(op: str, key: str | None) -> web.Response:
        if keys is None:
            return _error(501, "key management is not available on this server")
        try:
            result = await keys.key_operation(op, key)
        except KeyOperationError as exc:
            body = exc.response.to_dict()
            body["error"] = str(exc)
            return web.json_response(body, status=502)
        except EncryptionDisabledError as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(dict(result))

    async def get_keys(request: web.Request) -> web.Response:
        return await key_operation("list", None)

    async def post_keys(request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            op = _text_field(body, "op", required=True)
            if op not in KEY_OPERATIONS:
                raise ValueError(f"'op' must be one of {', '.join(KEY_OPERATIONS)}")
            key = _text_field(body, "key", required=True)
        except ValueError as exc:
            return _error(400, str(exc))
        return await key_operation(op, key)

    async def sync_status(request: web.Request) -> web.Response:
        if sync is None:
            return _error(503, "the sync engine is not running")
        return web.json_response(dict(sync.sync_status()))

    async def full_sync(request: web.Request) -> web.Response:
        if sync is None:
            return _error(503, "the sync engine is not running")
        return web.json_response({"started": True, "remote": list(sync.full_sync())})

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/members", members)
    app.router.add_post("/v1/events", post_event)
    app.router.add_get("/v1/events", get_events)
    app.router.add_post("/v1/queries", post_query)
    app.router.add_get("/v1/keys", get_keys)
    app.router.add_post("/v1/keys", post_keys)
    app.router.add_get("/v1/sync/status", sync_status)
    app.router.add_post("/v1/sync/full", full_sync)
    app.router.add_get("/metrics", metrics)
    return app
