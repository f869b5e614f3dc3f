"""The admin API server: its route table, request parsing, and JSON error bodies.

Owns :data:`ROUTES` (method, path, handler, access level, request and answer payloads,
one line of meaning), from which both the aiohttp application and the route table in
``docs/admin.md`` (:func:`render_markdown`) are built. Payload shapes live in
:mod:`pysyncer.admin.payloads`, reading and checking request bodies in
:mod:`pysyncer.admin.bodies`, the access policy (token, Host and Origin checks) in
:mod:`pysyncer.admin.auth`. Every error is a JSON body ``{"error": "..."}`` with a
4xx/5xx status; a bad request never raises out of a handler.

Every request passes, in this order: ``Host`` names this server (else 421), ``Origin``
absent or this server (else 403), the token when the route's level needs it (else 401),
and a POST body typed ``application/json`` (else 415), read whole up to
:data:`~pysyncer.admin.bodies.MAX_BODY_BYTES` (else 413) and nested at most
:data:`~pysyncer.admin.bodies.MAX_JSON_DEPTH` deep.

Keys (Serf's key rotation across the pool): ``GET /v1/keys`` lists the keys of every
member by fingerprint (:func:`key_fingerprint`), never the keys; ``POST /v1/keys``
installs, uses or removes one. 400: bad input; 409: this node runs without encryption;
502: not every member answered or some reported a failure (the same body, plus
``"error"``).

Talks to the daemon only through the backend protocols below: it must not import gossip
or sync internals (the key errors are the one exception: they are the key API's outcomes).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pysyncer.admin import bodies, paths, stream, ui
from pysyncer.admin import diff as inspect
from pysyncer.admin.auth import ACCESS_LEVELS, Access, AdminAuth
from pysyncer.admin.bodies import KEY_OPERATIONS, MAX_BODY_BYTES
from pysyncer.admin.monitor import MAX_MONITORS, LogMonitor, serve_monitor
from pysyncer.admin.payloads import (
    MEMBER_STATUSES,
    CoordinatesAnswer,
    DashboardSnapshot,
    DiffAnswer,
    DryRunAnswer,
    ErrorAnswer,
    Event,
    EventRequest,
    EventsAnswer,
    EventSent,
    ForceLeaveAnswer,
    ForceLeaveRequest,
    FullSyncAnswer,
    Health,
    KeyAnswer,
    KeyFailure,
    KeyRequest,
    LeaveAnswer,
    Liveness,
    Member,
    MembersAnswer,
    QueryAnswer,
    QueryRequest,
    Readiness,
    SyncStatus,
)
from pysyncer.gossip.keymanager import EncryptionDisabledError, KeyOperationError

__all__ = [
    "ROUTES",
    "AdminBackend",
    "KeyBackend",
    "LifecycleBackend",
    "ProbeBackend",
    "Route",
    "SyncBackend",
    "build_app",
    "key_fingerprint",
    "render_markdown",
]

JSON_TYPE = "application/json"


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


@typing.runtime_checkable
class LifecycleBackend(Protocol):
    """What ``/v1/leave`` and ``/v1/force-leave`` need (optional: the admin backend may
    implement it; without it they answer 501)."""

    def leave(self) -> LeaveAnswer:
        """Start a graceful leave; the daemon then stops as on SIGTERM."""

    def force_leave(self, node: str, prune: bool) -> None:
        """Mark ``node`` left pool-wide; ValueError when it is this node or unknown."""


class ProbeBackend(Protocol):
    """What the probe routes need (optional: without it they answer 501)."""

    def liveness(self) -> Liveness: ...

    def readiness(self) -> Readiness: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response(ErrorAnswer(error=message), status=status)


def _engine_answer(answer: SyncStatus | FullSyncAnswer | None) -> web.Response:
    """A sync route's answer; None (no sync engine runs) is 503."""
    if answer is None:
        return _error(503, inspect.NOT_RUNNING)
    return web.json_response(answer)


def key_fingerprint(key: str) -> str:
    """``sha256:`` and the first 8 bytes of the SHA-256 of a base64 key, in hex: names a
    gossip key in answers without revealing it (``pysyncer keys --list`` shows these)."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = key.encode()
    return "sha256:" + hashlib.sha256(raw).digest()[:8].hex()


def _fingerprinted(answer: KeyAnswer) -> KeyAnswer:
    """``answer`` with its keys replaced by their fingerprints."""
    answer["keys"] = {key_fingerprint(k): n for k, n in answer["keys"].items()}
    answer["primary_keys"] = {key_fingerprint(k): n for k, n in answer["primary_keys"].items()}
    return answer


class _Handlers:
    """The route handlers, bound to one daemon's backends."""

    def __init__(
        self,
        backend: AdminBackend,
        registry: CollectorRegistry,
        keys: KeyBackend | None,
        sync: SyncBackend | None,
        probes: ProbeBackend | None = None,
        inspector: inspect.InspectBackend | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.keys = keys
        self.sync = sync
        self.probes = probes
        self.inspector = inspector
        self.dashboard = stream.SnapshotCache(self._snapshot)
        self.monitor = LogMonitor()

    def _snapshot(self) -> DashboardSnapshot:
        """Everything the dashboard shows, for its event stream."""
        tasks = getattr(self.probes, "tasks", None)  # the daemon's probes list its tasks
        return {
            "at": time.time(),
            "health": self.backend.health(),
            "ready": self.probes.readiness() if self.probes is not None else None,
            "members": {m["name"]: m for m in self.backend.members()},
            "tasks": {t["name"]: t for t in tasks()} if callable(tasks) else {},
            "sync": self.sync.sync_status() if self.sync is not None else None,
            "slots": self.inspector.slot_runs() if self.inspector is not None else [],
        }

    async def ui_root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def ui_asset(self, request: web.Request) -> web.StreamResponse:
        found = ui.asset(request.path.rsplit("/", 1)[1] or ui.INDEX)
        if found is None:
            return _error(404, "no such dashboard file")
        body, content_type = found
        response = web.Response(body=body, headers=ui.SECURITY_HEADERS)
        response.headers["Content-Type"] = content_type
        return response

    async def sync_stream(self, request: web.Request) -> web.StreamResponse:
        return await stream.serve_stream(request, self.dashboard)

    async def sync_diff(self, request: web.Request) -> web.StreamResponse:
        return await inspect.diff(request, self.inspector)

    async def dry_run(self, request: web.Request) -> web.StreamResponse:
        return await inspect.dry_run(request, self.inspector)

    async def log_monitor(self, request: web.Request) -> web.StreamResponse:
        return await serve_monitor(request, self.monitor)

    def _lifecycle(self) -> LifecycleBackend | None:
        offered: object = self.backend
        return offered if isinstance(offered, LifecycleBackend) else None

    async def leave(self, request: web.Request) -> web.Response:
        lifecycle = self._lifecycle()
        if lifecycle is None:
            return _error(501, "this server cannot leave the pool")
        return web.json_response(lifecycle.leave())

    async def force_leave(self, request: web.Request) -> web.Response:
        lifecycle = self._lifecycle()
        if lifecycle is None:
            return _error(501, "this server cannot force members out")
        try:
            wanted = bodies.force_leave_request(await bodies.json_body(request))
            prune = wanted.get("prune", False)
            lifecycle.force_leave(wanted["node"], prune)
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(ForceLeaveAnswer(node=wanted["node"], prune=prune))

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.health())

    def _probe(self, name: Literal["liveness", "readiness"], passing: str) -> web.Response:
        """A probe's answer: 200 when its status is ``passing``, else 503; 501 without
        probes."""
        if self.probes is None:
            return _error(501, f"no {name} probe on this server")
        answer = self.probes.liveness() if name == "liveness" else self.probes.readiness()
        return web.json_response(answer, status=200 if answer["status"] == passing else 503)

    async def live(self, request: web.Request) -> web.Response:
        return self._probe("liveness", "live")

    async def ready(self, request: web.Request) -> web.Response:
        return self._probe("readiness", "ready")

    async def members(self, request: web.Request) -> web.Response:
        return web.json_response(MembersAnswer(members=list(self.backend.members())))

    async def post_event(self, request: web.Request) -> web.Response:
        try:
            event = bodies.event_request(await bodies.json_body(request))
            payload = event.get("payload", "").encode()
            await self.backend.send_event(event["name"], payload, event.get("coalesce", False))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(EventSent(sent=True, name=event["name"]))

    async def coordinates(self, request: web.Request) -> web.Response:
        source: Callable[[], CoordinatesAnswer] | None = getattr(self.backend, "coordinates", None)
        if source is None:
            return _error(501, "this member keeps no network coordinates")
        return web.json_response(source())

    async def get_events(self, request: web.Request) -> web.Response:
        return web.json_response(EventsAnswer(events=list(self.backend.recent_events())))

    async def post_query(self, request: web.Request) -> web.Response:
        try:
            query = bodies.query_request(await bodies.json_body(request))
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
            failure = cast(KeyFailure, _fingerprinted(cast(KeyAnswer, exc.response.to_dict())))
            failure["error"] = str(exc)
            return web.json_response(failure, status=502)
        except EncryptionDisabledError as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(_fingerprinted(result))

    async def get_keys(self, request: web.Request) -> web.Response:
        return await self._key_operation("list", None)

    async def post_keys(self, request: web.Request) -> web.Response:
        try:
            key_request = bodies.key_request(await bodies.json_body(request))
        except ValueError as exc:
            return _error(400, str(exc))
        return await self._key_operation(key_request["op"], key_request["key"])

    async def sync_status(self, request: web.Request) -> web.Response:
        return _engine_answer(self.sync.sync_status() if self.sync is not None else None)

    async def full_sync(self, request: web.Request) -> web.Response:
        remote = self.sync.full_sync() if self.sync is not None else None
        return _engine_answer(
            FullSyncAnswer(started=True, remote=list(remote)) if remote is not None else None
        )

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _one_of(names: Sequence[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


@dataclass(frozen=True)
class Route:
    """One admin route: how it is called, who may call it, what it takes and answers, what
    it does. ``access``: see :data:`pysyncer.admin.auth.Access`."""

    method: Literal["GET", "POST"]
    path: str
    handler: Callable[[_Handlers, web.Request], Awaitable[web.StreamResponse]]
    access: Access
    summary: str
    request: type | None = None  # a payloads TypedDict, None: no body
    answer: type | None = None  # a payloads TypedDict, None: not JSON (see the summary)


ROUTES: tuple[Route, ...] = (
    Route("GET", paths.HEALTH, _Handlers.health, "open",
          "this member's health: `degraded` while its Lifeguard health score is above 0",
          answer=Health),
    Route("GET", paths.HEALTH_LIVE, _Handlers.live, "open",
          "liveness: 200 while the event loop keeps time, 503 `stalled` (for a restart)",
          answer=Liveness),
    Route("GET", paths.HEALTH_READY, _Handlers.ready, "open",
          "readiness: 200 once the registry answers, the store is healthy, every known "
          "data center's first sync is done and no critical task is down; else 503 with "
          "`reasons` (see [operations](operations.md#readiness))",
          answer=Readiness),
    Route("GET", paths.MEMBERS, _Handlers.members, "read",
          f"the gossip pool's members by name, status {_one_of(MEMBER_STATUSES)}",
          answer=MembersAnswer),
    Route("POST", paths.LEAVE, _Handlers.leave, "token",
          "leaves the pool gracefully (peers see `left`), then the daemon stops as on SIGTERM",
          answer=LeaveAnswer),
    Route("POST", paths.FORCE_LEAVE, _Handlers.force_leave, "token",
          "marks a failed member `left` pool-wide (`prune`: forget it at once), like "
          "`serf force-leave`",
          request=ForceLeaveRequest, answer=ForceLeaveAnswer),
    Route("GET", paths.MONITOR, _Handlers.log_monitor, "token",
          "streams this daemon's log records at or above `?level=` (default info) as NDJSON, "
          "one JSON log line each, until the client goes away; a slow reader loses lines "
          f"(told by a `dropped` line); at most {MAX_MONITORS} at once"),
    Route("GET", paths.COORDINATES, _Handlers.coordinates, "read",
          "this member's Vivaldi network coordinate and the last one of each member it "
          "probed (what `pysyncer rtt` reads; see [gossip](gossip.md#network-coordinates))",
          answer=CoordinatesAnswer),
    Route("POST", paths.EVENTS, _Handlers.post_event, "token",
          "sends a user event to the pool (`coalesce` false by default)",
          request=EventRequest, answer=EventSent),
    Route("GET", paths.EVENTS, _Handlers.get_events, "read",
          "the recent user events this member received, oldest first (payload as text)",
          answer=EventsAnswer),
    Route("POST", paths.QUERIES, _Handlers.post_query, "token",
          "sends a query and waits for acks and responses "
          f"(`timeout_ms` up to {bodies.MAX_QUERY_TIMEOUT_MS // 60_000} minutes)",
          request=QueryRequest, answer=QueryAnswer),
    Route("GET", paths.KEYS, _Handlers.get_keys, "token",
          "the fingerprints of every member's gossip keys, never the keys "
          "(see [Key rotation](gossip.md#key-rotation))",
          answer=KeyAnswer),
    Route("POST", paths.KEYS, _Handlers.post_keys, "token",
          f"`op` {_one_of(KEY_OPERATIONS)} of a base64 key, on every member",
          request=KeyRequest, answer=KeyAnswer),
    Route("GET", paths.SYNC_STATUS, _Handlers.sync_status, "read",
          "this data center's export and, per remote data center, its link "
          "(see [sync](sync.md#operating-it)); 503 without a sync engine",
          answer=SyncStatus),
    Route("POST", paths.SYNC_FULL, _Handlers.full_sync, "token",
          "starts a digest repair with every remote data center; 503 without a sync engine",
          answer=FullSyncAnswer),
    Route("GET", paths.SYNC_STREAM, _Handlers.sync_stream, "read",
          "the dashboard's live feed (server-sent events): `snapshot` then, every "
          f"{stream.STREAM_INTERVAL:g} s, a `delta` (JSON merge patch) of what changed; "
          f"at most {stream.MAX_STREAMS} at once (see [dashboard](dashboard.md))",
          answer=DashboardSnapshot),
    Route("GET", paths.SYNC_DIFF, _Handlers.sync_diff, "read",
          "every data center's registry's instances of `?service=NAME` (none: the pool, "
          f"`?limit=` per registry, {inspect.DEFAULT_LIMIT} by default), asked over the "
          "sync RPC, with each discrepancy explained",
          answer=DiffAnswer),
    Route("GET", paths.SYNC_FILTERS_DRY_RUN, _Handlers.dry_run, "read",
          "which services the current filter rules export and import, and why",
          answer=DryRunAnswer),
    Route("GET", "/", _Handlers.ui_root, "open", "redirects to the dashboard, `/ui/`"),
    Route("GET", "/ui/", _Handlers.ui_asset, "open",
          "the dashboard page (its data routes need the token as the API's do)"),
    Route("GET", "/ui/dashboard.js", _Handlers.ui_asset, "open",
          "the dashboard's script (plain JavaScript, shipped in the package)"),
    Route("GET", "/ui/dashboard.css", _Handlers.ui_asset, "open",
          "the dashboard's style sheet"),
    Route("GET", paths.METRICS, _Handlers.metrics, "metrics",
          "Prometheus text: `pysyncer_gossip_*`, `_sync_*`, `_ownership_*`, `_store_*`, "
          "`_task_*` (supervised tasks), `pysyncer_build_info`, `process_*`"),
)  # fmt: skip


async def _guarded(
    route: Route, handlers: _Handlers, auth: AdminAuth, request: web.Request
) -> web.StreamResponse:
    """``route``'s handler behind its token check and, for a POST, the JSON content type."""
    if auth.needs_token(route.access) and not auth.authorized(request.headers.get("Authorization")):
        given = "Authorization" in request.headers
        response = _error(
            401,
            "wrong admin token"
            if given
            else "this route needs the admin token "
            "(Authorization: Bearer ..., see --admin-token-file)",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="pysyncer"'
        return response
    if route.method == "POST" and request.content_type != JSON_TYPE:
        return _error(415, f"the body must be {JSON_TYPE}, not {request.content_type}")
    return await route.handler(handlers, request)


def build_app(
    backend: AdminBackend,
    registry: CollectorRegistry,
    keys: KeyBackend | None = None,
    sync: SyncBackend | None = None,
    auth: AdminAuth | None = None,
    probes: ProbeBackend | None = None,
    inspector: inspect.InspectBackend | None = None,
) -> web.Application:
    """The admin application (every route of :data:`ROUTES`); run with aiohttp's AppRunner.

    ``auth``: the access policy; the default has no token and accepts loopback ``Host``
    names only. ``inspector``: the diff and dry-run routes' backend (by default ``sync``
    when it implements them).
    """
    policy = AdminAuth() if auth is None else auth
    offered: object = sync  # a sync backend may inspect too (the daemon's presenter does)
    if inspector is None and isinstance(offered, inspect.InspectBackend):
        inspector = offered

    @web.middleware
    async def json_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not policy.host_allowed(host):
            return _error(421, f"Host {host!r} does not name this server")
        if not policy.origin_allowed(request.headers.get("Origin"), host):
            return _error(403, "cross-origin requests are refused")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    handlers = _Handlers(backend, registry, keys, sync, probes, inspector)
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app.on_shutdown.append(handlers.dashboard.close)  # open event streams end at once

    async def end_monitors(_: web.Application) -> None:
        handlers.monitor.close_streams()

    app.on_shutdown.append(end_monitors)
    for route in ROUTES:
        handler = functools.partial(_guarded, route, handlers, policy)
        app.router.add_route(route.method, route.path, handler)
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


_ACCESS_TEXT: dict[Access, str] = {
    "open": "never",
    "read": "per `--admin-read-auth`",
    "metrics": "per `--metrics-auth`",
    "token": "yes",
}
assert set(_ACCESS_TEXT) == set(ACCESS_LEVELS)


def render_markdown() -> str:
    """:data:`ROUTES` as the Markdown table that ``docs/admin.md`` carries."""
    lines = ["| route | token | body | answer | what it does |", "|---|---|---|---|---|"]
    for route in ROUTES:
        answer = f"`{_shape(route.answer)}`" if route.answer is not None else "text"
        request = f"`{_shape(route.request)}`" if route.request is not None else "-"
        access = _ACCESS_TEXT[route.access]
        cells = (f"`{route.method} {route.path}`", access, request, answer, route.summary)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
