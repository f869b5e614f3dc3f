"""The Service-Center v4 REST routes of the embedded registry, and its server helpers.

Owns URL routing, request parsing (whole bodies up to the size limit, JSON depth
bounded: :mod:`pysyncer.httpbody`), response shapes, revision headers and 304 answers,
the Service-Center error bodies ``{"errorCode", "errorMessage", "detail"}``, the
long-poll change feed route, the token route and which resource and verb each route is
for RBAC (:data:`ROUTE_RESOURCES`), and running the app on a socket
(:class:`RegistryServer`, :func:`run_registry`). All rules live in
:class:`pysyncer.servicecenter.core.EmbeddedRegistry` and
:class:`pysyncer.servicecenter.rbac.Rbac`; this module holds none.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from pysyncer._version import __version__
from pysyncer.hostport import LOOPBACK, REGISTRY_PORT, bracket_host
from pysyncer.httpbody import BodyError, read_json_object
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.servicecenter.errors import ERR_INTERNAL, ERR_INVALID_PARAMS, RegistryError, invalid
from pysyncer.servicecenter.feed import MAX_CHANGES_PER_BATCH, FeedEncoder, encode_json
from pysyncer.servicecenter.rbac import Rbac, load_rbac
from pysyncer.servicecenter.settings import DEFAULT_SETTINGS, ServiceCenterSettings
from pysyncer.supervisor import Supervised, spawn, tolerate

__all__ = [
    "CHANGE_FEED_HEADER",
    "MAX_BODY_BYTES",
    "REVISION_HEADER",
    "ROUTE_RESOURCES",
    "RegistryServer",
    "build_app",
    "run_registry",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = DEFAULT_SETTINGS.max_body_bytes
REVISION_HEADER: Final = "X-Resource-Revision"
# Service-Center reads the client's revision from ``rev`` or this (misspelt) header.
REQUEST_REVISION_HEADERS: Final = ("x-resource-revsion", "x-resource-revision")
CHANGE_FEED_HEADER: Final = "X-Pysyncer-Change-Feed"
DOMAIN_HEADER: Final = "x-domain-name"
CONSUMER_HEADER: Final = "X-ConsumerId"
DEFAULT_FEED_TIMEOUT: Final = 30.0
MAX_CONCURRENT_LOGINS: Final = 2
EVICTION_TASK: Final = "registry-eviction"  # the supervised task's name (a metric label)
API_VERSION: Final = "4.0.0"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BASE: Final = "/v4/{project}/registry"
_GOVERN: Final = "/v4/{project}/govern/microservices"
_SERVICE: Final = _BASE + "/microservices/{serviceId}"
_INSTANCE: Final = _SERVICE + "/instances/{instanceId}"
TOKEN_PATH: Final = "/v4/token"

# The RBAC resource of each route (None: open, like Service-Center's version, health and
# token routes); the verb is the method's (VERBS).
ROUTE_RESOURCES: Final[dict[str, str | None]] = {
    _BASE + "/version": None,
    _BASE + "/health": None,
    TOKEN_PATH: None,
    _BASE + "/microservices": "service",
    _SERVICE: "service",
    _BASE + "/existence": "service",
    _SERVICE + "/instances": "service",
    _INSTANCE: "service",
    _INSTANCE + "/heartbeat": "service",
    _INSTANCE + "/status": "service",
    _INSTANCE + "/properties": "service",
    _BASE + "/heartbeats": "service",
    _BASE + "/instances": "service",
    _BASE + "/changes": "service",
    _GOVERN: "governance",
    _GOVERN + "/{serviceId}": "governance",
}
VERBS: Final = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}

_SELF_SERVICE_ID: Final = "pysyncer-registry"


def _json(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``body`` as a JSON response (compact, as ``web.json_response`` with a lighter encoder)."""
    return _body(encode_json(body).encode(), status=status, headers=headers)


def _body(
    data: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """JSON bytes as a response (``application/json; charset=utf-8``)."""
    return web.Response(
        body=data, status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


def _error_response(status: int, code: str, message: str, detail: str) -> web.Response:
    return _json({"errorCode": code, "errorMessage": message, "detail": detail}, status=status)


def _scope(request: web.Request) -> dict[str, str]:
    domain = request.headers.get(DOMAIN_HEADER, "").strip() or "default"
    return {"domain": domain, "project": request.match_info["project"]}


async def _read_body(request: web.Request, max_depth: int) -> dict[str, Any]:
    """The whole body as a JSON object (413 over ``client_max_size``, else 400001)."""
    try:
        return await read_json_object(request, max_depth=max_depth)
    except BodyError as exc:
        raise invalid(str(exc)) from None


def _bool_query(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise invalid(f"'{name}' must be true or false")


def _client_revision(request: web.Request) -> str:
    rev = request.query.get("rev", "")
    for header in REQUEST_REVISION_HEADERS:
        rev = rev or request.headers.get(header, "")
    return rev.strip()


def _with_revision(request: web.Request, body: Mapping[str, Any], revision: int) -> web.Response:
    """200 with the body, or 304 with no body when the client already has ``revision``."""
    headers = {REVISION_HEADER: str(revision)}
    if _client_revision(request) == str(revision):
        return web.Response(status=304, headers=headers)
    return _json(dict(body), headers=headers)


def _ok() -> web.Response:
    """Service-Center answers a successful write with 200 and no body; typed as the
    spec's only media type (``produces: application/json``)."""
    return web.Response(status=200, content_type="application/json")


def build_app(registry: EmbeddedRegistry, *, rbac: Rbac | None = None) -> web.Application:
    """The registry's aiohttp application (Service-Center v4 subset + the change feed).

    Limits come from ``registry.settings``; RBAC is on with ``rbac``, or with the
    accounts file of ``registry.settings.rbac_file`` (read now).
    """
    settings = registry.settings
    if rbac is None and settings.rbac_file is not None:
        rbac = load_rbac(settings.rbac_file, token_ttl=settings.token_ttl)
    # Each login costs a password hash: a few at a time, so logins cannot take every core.
    logins = asyncio.Semaphore(MAX_CONCURRENT_LOGINS)
    # The stored records' JSON bytes, shared by every feed answer of this app.
    feed_encoder = FeedEncoder()

    async def _json_body(request: web.Request) -> dict[str, Any]:
        return await _read_body(request, settings.max_json_depth)

    async def version(request: web.Request) -> web.Response:
        return _json(
            {
                "version": __version__,
                "apiVersion": API_VERSION,
                "buildTag": "pysyncer",
                "os": platform.system().lower(),
                "arch": platform.machine(),
            }
        )

    async def health(request: web.Request) -> web.Response:
        _scope(request)
        host = request.host
        self_instance = {
            "instanceId": f"{socket.gethostname()}-{host}",
            "serviceId": _SELF_SERVICE_ID,
            "hostName": socket.gethostname()[:64] or "localhost",
            "endpoints": [f"rest://{host}"],
            "status": "UP",
            "version": __version__,
            "healthCheck": {"mode": "push", "interval": 30, "times": 3},
            "properties": {"implementation": "pysyncer"},
        }
        return _json({"instances": [self_instance]})

    # -------------------------------------------------------------- microservices

    async def create_service(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if "service" not in body:
            raise invalid("'service' is required")
        service_id = await registry.create_service(body["service"], **_scope(request))
        return _json({"serviceId": service_id})

    async def list_services(request: web.Request) -> web.Response:
        scope = _scope(request)
        services = await registry.list_services(**scope)
        revision = registry.revision(**scope)
        return _json({"services": services}, headers={REVISION_HEADER: str(revision)})

    async def get_service(request: web.Request) -> web.Response:
        service = await registry.get_service(request.match_info["serviceId"], **_scope(request))
        return _json({"service": service})

    async def delete_service(request: web.Request) -> web.Response:
        force = _bool_query(request, "force")
        await registry.delete_service(
            request.match_info["serviceId"], force=force, **_scope(request)
        )
        return _ok()

    async def delete_services(request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids, force = body.get("serviceIds"), body.get("force", False)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid("'serviceIds' must be a list of service ids")
        if not isinstance(force, bool):
            raise invalid("'force' must be true or false")
        results = await registry.delete_services(ids, force=force, **_scope(request))
        return _json({"services": results})

    async def existence(request: web.Request) -> web.Response:
        q = request.query
        kind = q.get("type", "")
        scope = _scope(request)
        if kind == "microservice":
            service_id = await registry.exist_service(
                q.get("appId", ""),
                q.get("serviceName", ""),
                q.get("version", ""),
                q.get("env", ""),
                **scope,
            )
            return _json({"serviceId": service_id})
        if kind == "schema":
            service_id = q.get("serviceId", "")
            schema_id = await registry.exist_schema(service_id, q.get("schemaId", ""), **scope)
            return _json({"schemaId": schema_id})
        raise invalid("'type' must be microservice or schema")

    # -------------------------------------------------------------- instances

    async def register(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if "instance" not in body:
            raise invalid("'instance' is required")
        instance_id = await registry.register_instance(
            request.match_info["serviceId"], body["instance"], **_scope(request)
        )
        return _json({"instanceId": instance_id})

    async def list_instances(request: web.Request) -> web.Response:
        instances, revision = await registry.list_instances(
            request.match_info["serviceId"],
            consumer_id=request.headers.get(CONSUMER_HEADER, ""),
            **_scope(request),
        )
        return _with_revision(request, {"instances": instances}, revision)

    async def get_instance(request: web.Request) -> web.Response:
        instance, revision = await registry.get_instance(
            request.match_info["serviceId"],
            request.match_info["instanceId"],
            consumer_id=request.headers.get(CONSUMER_HEADER, ""),
            **_scope(request),
        )
        return _with_revision(request, {"instance": instance}, revision)

    async def unregister(request: web.Request) -> web.Response:
        await registry.unregister_instance(
            request.match_info["serviceId"], request.match_info["instanceId"], **_scope(request)
        )
        return _ok()

    async def heartbeat(request: web.Request) -> web.Response:
        await registry.heartbeat(
            request.match_info["serviceId"], request.match_info["instanceId"], **_scope(request)
        )
        return _ok()

    async def heartbeats(request: web.Request) -> web.Response:
        body = await _json_body(request)
        items = body.get("Instances")
        if not isinstance(items, list) or not items:
            raise invalid("'Instances' must be a non-empty list")
        pairs: list[tuple[str, str]] = []
        for item in items:
            if not isinstance(item, dict):
                raise invalid("every element of 'Instances' must be an object")
            service_id, instance_id = item.get("serviceId"), item.get("instanceId")
            if not isinstance(service_id, str) or not isinstance(instance_id, str):
                raise invalid("every element needs string 'serviceId' and 'instanceId'")
            pairs.append((service_id, instance_id))
        results = await registry.heartbeat_set(pairs, **_scope(request))
        failed = [r for r in results if r["errMessage"]]
        if not failed:
            return _ok()  # the spec's 200 has no body; results only on partial failure
        error = RegistryError(400017, f"{len(failed)} of {len(results)} heartbeats failed")
        return _json({**error.to_json(), "instances": results}, status=400)

    async def update_status(request: web.Request) -> web.Response:
        if "value" not in request.query:
            raise invalid("'value' is required")
        await registry.update_instance_status(
            request.match_info["serviceId"],
            request.match_info["instanceId"],
            request.query["value"],
            **_scope(request),
        )
        return _ok()

    async def update_properties(request: web.Request) -> web.Response:
        body = await _json_body(request)
        properties = body.get("properties")
        if not isinstance(properties, dict):
            raise invalid("'properties' must be an object")
        await registry.update_instance_properties(
            request.match_info["serviceId"],
            request.match_info["instanceId"],
            properties,
            **_scope(request),
        )
        return _ok()

    async def find(request: web.Request) -> web.Response:
        q = request.query
        instances, revision = await registry.find_instances(
            q.get("appId", ""),
            q.get("serviceName", ""),
            q.get("version", ""),
            q.get("env"),
            consumer_id=request.headers.get(CONSUMER_HEADER, ""),
            **_scope(request),
        )
        return _with_revision(request, {"instances": instances}, revision)

    # -------------------------------------------------------------- governance

    async def govern_services(request: web.Request) -> web.Response:
        options = [o.strip() for o in request.query.get("options", "").split(",") if o.strip()]
        body, revision = await registry.govern_services(options, **_scope(request))
        return _json(body, headers={REVISION_HEADER: str(revision)})

    async def govern_service(request: web.Request) -> web.Response:
        detail = await registry.govern_service(request.match_info["serviceId"], **_scope(request))
        return _json({"service": detail})

    # -------------------------------------------------------------- change feed

    async def changes(request: web.Request) -> web.Response:
        q = request.query
        try:
            since = int(q["since"])
            timeout = float(q.get("timeout", DEFAULT_FEED_TIMEOUT))
            limit = int(q.get("limit", MAX_CHANGES_PER_BATCH))
        except KeyError:
            raise invalid("'since' is required") from None
        except ValueError:
            raise invalid("'since' and 'limit' must be integers, 'timeout' a number") from None
        if timeout != timeout:  # NaN
            raise invalid("'timeout' must be a number")
        batch = await registry.changes(since, timeout, limit=limit, **_scope(request))
        headers = {CHANGE_FEED_HEADER: "1", REVISION_HEADER: str(batch.revision)}
        return _body(feed_encoder.batch(batch), headers=headers)

    # -------------------------------------------------------------- RBAC

    async def token(request: web.Request) -> web.Response:
        body = await _json_body(request)
        assert rbac is not None  # the route exists only with RBAC on
        async with logins:
            issued = await asyncio.to_thread(rbac.login, body.get("name"), body.get("password"))
        return _json({"token": issued})

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        assert rbac is not None  # installed only with RBAC on
        route = request.match_info.route.resource
        template = route.canonical if route is not None else ""
        resource = ROUTE_RESOURCES.get(template)
        if resource is not None:
            verb = VERBS.get(request.method, request.method.lower())
            rbac.authorize(request.headers.get("Authorization", ""), resource, verb)
        return await handler(request)

    # -------------------------------------------------------------- errors

    @web.middleware
    async def sc_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RegistryError as exc:
            return _json(exc.to_json(), status=exc.http_status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = str(ERR_INVALID_PARAMS) if exc.status in (400, 413) else str(exc.status)
            return _error_response(exc.status, code, exc.reason, exc.text or "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            tolerate("registry-request", exc, level=logging.ERROR, trace=True)
            error = RegistryError(ERR_INTERNAL, type(exc).__name__)
            return _json(error.to_json(), status=500)

    async def wake_waiters(app: web.Application) -> None:
        registry.close()

    # Without RBAC no request needs authorizing: no middleware layer for it.
    middlewares = [sc_errors] if rbac is None else [sc_errors, authorize]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app.on_shutdown.append(wake_waiters)
    base, service, instance = _BASE, _SERVICE, _INSTANCE
    # aiohttp tries the routes under /v4 in this order, one pattern at a time: the
    # busiest first (the feed, instance writes, heartbeats); no two patterns overlap.
    routes = [
        web.get(base + "/changes", changes),
        web.post(service + "/instances", register),
        web.get(service + "/instances", list_instances),
        web.get(instance, get_instance),
        web.delete(instance, unregister),
        web.put(instance + "/heartbeat", heartbeat),
        web.put(base + "/heartbeats", heartbeats),
        web.get(base + "/instances", find),
        web.put(instance + "/status", update_status),
        web.put(instance + "/properties", update_properties),
        web.post(base + "/microservices", create_service),
        web.get(base + "/microservices", list_services),
        web.delete(base + "/microservices", delete_services),
        web.get(service, get_service),
        web.delete(service, delete_service),
        web.get(base + "/existence", existence),
        web.get(base + "/version", version),
        web.get(base + "/health", health),
        web.get(_GOVERN, govern_services),
        web.get(_GOVERN + "/{serviceId}", govern_service),
    ]
    if rbac is not None:  # like Service-Center, the token API exists with RBAC on
        routes.append(web.post(TOKEN_PATH, token))
    app.add_routes(routes)
    unmapped = {r.resource.canonical for r in app.router.routes() if r.resource} - set(
        ROUTE_RESOURCES
    )
    if unmapped:  # a new route must say which RBAC resource it is
        raise RuntimeError(f"routes without an RBAC resource: {sorted(unmapped)}")
    return app


class RegistryServer:
    """An :class:`EmbeddedRegistry` served on ``host:port`` with its eviction task (run
    under the current :mod:`supervisor <pysyncer.supervisor>`: a failure is logged,
    counted and restarted with backoff).

    ``port=0`` picks a free port; :attr:`url` is the base URL once :meth:`start` returned.
    Use as ``async with RegistryServer(...) as server:`` or call start/close. Without
    ``registry``, a new one with ``settings`` (quotas, limits, the RBAC file).
    """

    def __init__(
        self,
        registry: EmbeddedRegistry | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        eviction_interval: float = 1.0,
        settings: ServiceCenterSettings = DEFAULT_SETTINGS,
        rbac: Rbac | None = None,
    ) -> None:
        if eviction_interval <= 0:
            raise ValueError("eviction_interval must be positive")
        self.registry = registry if registry is not None else EmbeddedRegistry(settings=settings)
        self._rbac = rbac
        self.host = host
        self.port = port
        self._eviction_interval = eviction_interval
        self._runner: web.AppRunner | None = None
        self._eviction: Supervised | None = None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the registry server is not started")
        host = bracket_host(self.host)
        return f"http://{host}:{self.port}"

    async def start(self) -> RegistryServer:
        app = build_app(self.registry, rbac=self._rbac)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._eviction = spawn(
            EVICTION_TASK, lambda: self.registry.run_eviction(self._eviction_interval)
        )
        log.info("embedded registry listening on %s", self.url)
        return self

    async def close(self) -> None:
        """Stop serving: wake long-polls, stop eviction, close the socket. Idempotent."""
        self.registry.close()
        if self._eviction is not None:
            await self._eviction.stop()
            self._eviction = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> RegistryServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_registry(
    host: str = LOOPBACK,
    port: int = REGISTRY_PORT,
    *,
    eviction_interval: float = 1.0,
    registry: EmbeddedRegistry | None = None,
    settings: ServiceCenterSettings = DEFAULT_SETTINGS,
) -> None:
    """Serve the embedded registry on ``host:port`` until cancelled."""
    server = RegistryServer(
        registry, host, port, eviction_interval=eviction_interval, settings=settings
    )
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
