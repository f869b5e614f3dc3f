"""The admin API's request bodies: read whole and bounded, then checked into their payloads.

Owns the limits of a body (:data:`MAX_BODY_BYTES`, :data:`MAX_JSON_DEPTH`), the query
timeout bound (:data:`MAX_QUERY_TIMEOUT_MS`), the key operations (:data:`KEY_OPERATIONS`)
and turning a JSON object into the typed request of :mod:`pysyncer.admin.payloads`
(events, queries, force-leave, key operations). A body that is not what its route takes
raises ``ValueError`` with a one-line message the server answers with 400. It knows no
route, backend or answer: those are :mod:`pysyncer.admin.app`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pysyncer.admin.payloads import (
    EventRequest,
    ForceLeaveRequest,
    KeyOperation,
    KeyRequest,
    QueryRequest,
)
from pysyncer.httpbody import read_json_object

__all__ = [
    "KEY_OPERATIONS",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_QUERY_TIMEOUT_MS",
    "event_request",
    "force_leave_request",
    "json_body",
    "key_request",
    "query_request",
]

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # every admin body is a flat object: deeper nesting is refused
MAX_QUERY_TIMEOUT_MS = 5 * 60 * 1000
KEY_OPERATIONS: tuple[KeyOperation, ...] = ("install", "use", "remove")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The whole body (413 over the limit) as a JSON object nested at most
    :data:`MAX_JSON_DEPTH` deep; :class:`~pysyncer.httpbody.BodyError` (a ValueError)."""
    return await read_json_object(request, max_depth=MAX_JSON_DEPTH)


def _text_field(body: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ValueError(
            f"'{key}' must be a non-empty string" if required else f"'{key}' must be a string"
        )
    return value


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false")
    return value


def event_request(body: Mapping[str, Any]) -> EventRequest:
    """``POST /v1/events``: a name, a text payload, ``coalesce`` (false by default)."""
    coalesce = _flag(body, "coalesce")
    return EventRequest(
        name=_text_field(body, "name", required=True),
        payload=_text_field(body, "payload", required=False),
        coalesce=coalesce,
    )


def query_request(body: Mapping[str, Any]) -> QueryRequest:
    """``POST /v1/queries``: a name, a text payload, ``timeout_ms`` when given."""
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


def force_leave_request(body: Mapping[str, Any]) -> ForceLeaveRequest:
    """``POST /v1/force-leave``: a node, ``prune`` (false by default)."""
    prune = _flag(body, "prune")
    return ForceLeaveRequest(node=_text_field(body, "node", required=True), prune=prune)


def key_request(body: Mapping[str, Any]) -> KeyRequest:
    """``POST /v1/keys``: one of :data:`KEY_OPERATIONS` and a key."""
    op = _text_field(body, "op", required=True)
    if op not in KEY_OPERATIONS:
        raise ValueError(f"'op' must be one of {', '.join(KEY_OPERATIONS)}")
    return KeyRequest(op=op, key=_text_field(body, "key", required=True))
