"""The Apache ServiceComb Service-Center v4 REST adapter (also serves the embedded registry).

Owns HTTP to Service-Center: one keep-alive aiohttp session, timeouts, several addresses
with failover (rotate on connection errors and 5xx, stay on the healthy one), optional
TLS, ``x-domain-name``/project, bounded response bodies, SC error codes -> typed errors.

Change detection: when the server offers pysyncer's change feed
(``GET /v4/{project}/registry/changes``, answered 200 with ``X-Pysyncer-Change-Feed: 1``;
a real Service-Center answers 404) it is long-polled (sub-second latency). Otherwise the
governance listing (``GET /v4/{project}/govern/microservices?options=instances``) is
polled every ``poll_interval`` and diffed against the previous listing. SC's websocket
watch is not used: it is consumer-scoped (it only reports providers the watching
service depends on), so it cannot see "every instance".

With RBAC on the server, ``username`` and a password (``password-file``, else
``password``, e.g. from ``PYSYNCER_ADAPTER_PASSWORD``) log in through SC's token API
(``POST /v4/token`` with ``{"name", "password"}`` -> ``{"token"}``); every request then
carries ``Authorization: Bearer <token>``, and a 401 (the token expired) logs in again
once and repeats the request. The password and the token are never logged.

The settings, protocol constants, address forms and answer readers live in
``servicecomb_codec``. Like every adapter it must not touch gossip, the store, RPC or the
sync engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from pysyncer.adapters._http import HttpAdapter, HttpClient, Response
from pysyncer.adapters._retry import Backoff
from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ChangeEvent,
    ConflictError,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
    diff_listings,
)
from pysyncer.adapters.scshape import (
    ERR_INSTANCE_NOT_EXISTS,
    ERR_SERVICE_NOT_EXISTS,
    error_from_code,
    event_from_change,
    instance_from_sc,
    instance_to_sc,
    service_from_sc,
    service_to_sc,
)
from pysyncer.adapters.servicecomb_codec import (
    DOMAIN_HEADER,
    FEED_HEADER,
    HEARTBEAT_BATCH,
    LOGIN_SETTINGS,
    REVISION_HEADER,
    SELF_SERVICE,
    TOKEN_PATH,
    ServiceCombSettings,
    int_field,
    json_object,
    looks_not_found,
    normalize_address,
    str_field,
)
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "FEED_HEADER",
    "TOKEN_PATH",
    "ServiceCombAdapter",
    "ServiceCombAuthError",
    "ServiceCombSettings",
    "create",
]

log = logging.getLogger(__name__)


class ServiceCombAuthError(AdapterError, PermissionError):
    """Service-Center refused the login (user name or password) of the adapter."""


class ServiceCombAdapter(HttpAdapter):
    """A Service-Center v4 client implementing :class:`pysyncer.adapters.base.Adapter`."""

    name = "servicecomb"

    def __init__(
        self, addresses: Sequence[str], settings: ServiceCombSettings | None = None
    ) -> None:
        if not addresses:
            raise ConfigError("servicecomb adapter: at least one address is required")
        self.settings = settings or ServiceCombSettings()
        self.http = HttpClient.for_settings(
            "servicecomb",
            [normalize_address(a) for a in addresses],
            self.settings,
            headers={"Accept": "application/json"},
            label="registry",
            pool_limit=32,
            defer_tls=True,
        )
        self.domain_project = f"{self.settings.domain}/{self.settings.project}"
        self._closed = asyncio.Event()
        self._service_ids: dict[ServiceKey, str] = {}
        self._services_by_id: dict[str, ServiceKey] = {}
        self._batch_heartbeat: bool | None = None
        self._feed: bool | None = self.settings.feed
        self._feed_cursor: int | None = None  # feed revision taken before the last listing
        self._last_listing: dict[str, tuple[Instance, LocalRef]] | None = None
        self._list_revision = ""
        self._list_digest = b""
        self._password = self.settings.login_password() if self.settings.username else ""
        if self.settings.username and not self._password:
            raise ConfigError(
                f"servicecomb adapter: user {self.settings.username!r} has no password: "
                f"set {LOGIN_SETTINGS}"
            )
        self._token = ""
        self._login_lock = asyncio.Lock()
        self.logins = 0  # successful logins (the first and after every expired token)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return self.http.addresses

    @property
    def current_address(self) -> str:
        """The address requests go to first (the last one that answered)."""
        return self.http.current_address

    @property
    def uses_feed(self) -> bool | None:
        """True/False once probed: whether change detection long-polls the change feed."""
        return self._feed

    async def start(self) -> None:
        self.http.open()
        self._closed.clear()
        await self._request("GET", "/v4/{project}/registry/version")

    # -- HTTP with failover ------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> Response:
        """Send to the current address, rotating on connection errors and 5xx.

        Returns 2xx/304 (and ``ok_statuses``); raises the typed error for other answers.
        """
        path = path.replace("{project}", self.settings.project)
        request_headers = {DOMAIN_HEADER: self.settings.domain}
        if headers:
            request_headers.update(headers)
        for attempt in range(2):
            token = await self._current_token()
            if token:
                request_headers["Authorization"] = f"Bearer {token}"
            response = await self.http.request(
                method,
                path,
                params=params,
                json_body=body,
                headers=request_headers,
                timeout=timeout,
            )
            if response.status != 401 or not token or attempt:
                break
            await self._login(stale=token)  # expired (or revoked): log in once more
        if response.status < 300 or response.status == 304 or response.status in ok_statuses:
            return response
        raise self._error(method, path, response)

    async def _current_token(self) -> str:
        if self.settings.username and not self._token:
            await self._login(stale="")
        return self._token

    async def _login(self, *, stale: str) -> None:
        """Get a new token unless another request already replaced ``stale``."""
        async with self._login_lock:
            if self._token != stale:
                return
            name = self.settings.username
            response = await self.http.request(
                "POST", TOKEN_PATH, json_body={"name": name, "password": self._password}
            )
            if response.status >= 300:
                error = self._error("POST", TOKEN_PATH, response)
                raise ServiceCombAuthError(
                    f"servicecomb adapter: login of user {name!r} refused ({error}); "
                    f"check {LOGIN_SETTINGS}",
                    code=error.code,
                )
            self._token = str_field(json_object(response), "token")
            self.logins += 1

    @staticmethod
    def _error(method: str, path: str, response: Response) -> AdapterError:
        code = ""
        message = f"{method} {path}: HTTP {response.status}"
        try:
            value = json.loads(response.body) if response.body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if isinstance(value, dict):
            code = str(value.get("errorCode", "") or "")
            detail = value.get("detail") or value.get("errorMessage") or ""
            if detail:
                message = f"{message}: {detail}"
        return error_from_code(code, message, response.status)

    # -- services ----------------------------------------------------------------------

    def _project_path(self, service: ServiceKey) -> tuple[str, dict[str, str]]:
        domain, _, project = service.project.partition("/")
        return project or self.settings.project, {DOMAIN_HEADER: domain or "default"}

    async def ensure_service(self, service: ServiceKey) -> str:
        cached = self._service_ids.get(service)
        if cached is not None:
            return cached
        project, headers = self._project_path(service)
        base = f"/v4/{project}/registry"
        for _attempt in range(3):
            try:
                resp = await self._request(
                    "GET",
                    f"{base}/existence",
                    params={
                        "type": "microservice",
                        "env": service.environment,
                        "appId": service.app,
                        "serviceName": service.name,
                        "version": service.version,
                    },
                    headers=headers,
                )
                service_id = str_field(json_object(resp), "serviceId")
            except NotFoundError:
                try:
                    resp = await self._request(
                        "POST",
                        f"{base}/microservices",
                        body={"service": service_to_sc(service)},
                        headers=headers,
                    )
                    service_id = str_field(json_object(resp), "serviceId")
                except ConflictError:
                    continue  # created concurrently: look it up again
            self._remember_service(service_id, service)
            return service_id
        raise ConflictError(f"service {service.text()} could neither be found nor created")

    def _remember_service(self, service_id: str, service: ServiceKey) -> None:
        self._service_ids[service] = service_id
        self._services_by_id[service_id] = service

    def _forget_service(self, service: ServiceKey) -> None:
        service_id = self._service_ids.pop(service, None)
        if service_id is not None:
            self._services_by_id.pop(service_id, None)

    # -- instances ---------------------------------------------------------------------

    async def register(self, instance: Instance) -> LocalRef:
        project, headers = self._project_path(instance.service)
        for attempt in range(2):
            service_id = await self.ensure_service(instance.service)
            try:
                resp = await self._request(
                    "POST",
                    f"/v4/{project}/registry/microservices/{service_id}/instances",
                    body={"instance": instance_to_sc(instance)},
                    headers=headers,
                )
            except NotFoundError as exc:
                if exc.code == ERR_SERVICE_NOT_EXISTS and attempt == 0:
                    self._forget_service(instance.service)  # deleted behind our back
                    continue
                raise
            instance_id = json_object(resp).get("instanceId") or instance.instance_id
            return LocalRef(service_id, str(instance_id))
        raise NotFoundError(f"service {instance.service.text()} vanished while registering")

    async def get_instance(self, ref: LocalRef) -> Instance:
        resp = await self._request(
            "GET",
            f"/v4/{{project}}/registry/microservices/{ref.service_id}/instances/{ref.instance_id}",
        )
        key = self._services_by_id.get(ref.service_id)
        if key is None:
            svc = await self._request(
                "GET", f"/v4/{{project}}/registry/microservices/{ref.service_id}"
            )
            key = service_from_sc(json_object(svc).get("service"), self.domain_project)
            self._remember_service(ref.service_id, key)
        return instance_from_sc(json_object(resp).get("instance"), key)

    async def unregister(self, ref: LocalRef) -> None:
        with contextlib.suppress(NotFoundError):
            await self._request(
                "DELETE",
                f"/v4/{{project}}/registry/microservices/{ref.service_id}"
                f"/instances/{ref.instance_id}",
            )

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        results: list[RenewResult] = []
        for start in range(0, len(refs), HEARTBEAT_BATCH):
            chunk = refs[start : start + HEARTBEAT_BATCH]
            batch = None
            if self._batch_heartbeat is not False:
                batch = await self._renew_batch(chunk)
            results.extend(batch if batch is not None else await self._renew_each(chunk))
        return results

    async def _renew_batch(self, refs: Sequence[LocalRef]) -> list[RenewResult] | None:
        """One ``PUT /registry/heartbeats``; None when the server lacks the batch API."""
        body = {
            "Instances": [{"serviceId": r.service_id, "instanceId": r.instance_id} for r in refs]
        }
        try:
            resp = await self._request(
                "PUT", "/v4/{project}/registry/heartbeats", body=body, ok_statuses=(400,)
            )
        except AdapterError as exc:
            # Only "no such route" (404/405 without an SC errorCode) means no batch API.
            if isinstance(exc, UnavailableError | BadResponseError) or exc.code:
                raise
            self._batch_heartbeat = False
            log.info("batch heartbeats unavailable (%s): renewing one by one", exc)
            return None
        value = json_object(resp)
        items = value.get("instances")
        if resp.status == 400 and not isinstance(items, list):
            # A plain SC error, not the per-instance result shape.
            code = str(value.get("errorCode", ""))
            if code == ERR_INSTANCE_NOT_EXISTS and len(refs) == 1:
                return [RenewResult(refs[0], "not_found", "instance does not exist")]
            return None
        self._batch_heartbeat = True
        failed: dict[tuple[str, str], str] = {}
        for item in items or []:
            if isinstance(item, dict) and item.get("errMessage"):
                key = (str(item.get("serviceId", "")), str(item.get("instanceId", "")))
                failed[key] = str(item["errMessage"])
        results = []
        for ref in refs:
            message = failed.get((ref.service_id, ref.instance_id))
            if message is None:
                results.append(RenewResult(ref, "ok"))
            elif looks_not_found(message):
                results.append(RenewResult(ref, "not_found", message))
            else:
                results.append(RenewResult(ref, "error", message))
        return results

    async def _renew_each(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        async def one(ref: LocalRef) -> RenewResult:
            try:
                await self._request(
                    "PUT",
                    f"/v4/{{project}}/registry/microservices/{ref.service_id}"
                    f"/instances/{ref.instance_id}/heartbeat",
                )
            except NotFoundError as exc:
                return RenewResult(ref, "not_found", str(exc))
            except AdapterError as exc:
                return RenewResult(ref, "error", str(exc))
            return RenewResult(ref, "ok")

        semaphore = asyncio.Semaphore(16)

        async def bounded(ref: LocalRef) -> RenewResult:
            async with semaphore:
                return await one(ref)

        return list(await asyncio.gather(*(bounded(r) for r in refs)))

    # -- listing -----------------------------------------------------------------------

    async def list_instances(self) -> Snapshot:
        if self._feed is not False:
            self._feed_cursor = await self._probe_feed()
        listing = await self._list(force=True)
        assert listing is not None
        self._last_listing = listing
        instances = tuple(inst for inst, _ in listing.values())
        refs = {iid: ref for iid, (_, ref) in listing.items()}
        return Snapshot(instances, refs, self._list_revision)

    async def _list(self, *, force: bool) -> dict[str, tuple[Instance, LocalRef]] | None:
        """The governance listing; None when unchanged (304 or same bytes) unless ``force``."""
        headers: dict[str, str] = {}
        params = {"options": "instances"}
        if self._list_revision and not force:
            params["rev"] = self._list_revision
            headers[REVISION_HEADER] = self._list_revision
        resp = await self._request(
            "GET", "/v4/{project}/govern/microservices", params=params, headers=headers
        )
        if resp.status == 304:
            return None
        self._list_revision = resp.headers.get(REVISION_HEADER, "")
        digest = hashlib.blake2b(resp.body, digest_size=16).digest()
        if digest == self._list_digest and not force:
            return None
        value = json_object(resp)
        details = value.get("allServicesDetail", value.get("AllServicesDetail")) or []
        if not isinstance(details, list):
            raise BadResponseError("allServicesDetail: expected a list")
        listing: dict[str, tuple[Instance, LocalRef]] = {}
        for detail in details:
            if not isinstance(detail, dict):
                raise BadResponseError("allServicesDetail[]: expected an object")
            svc = detail.get("microService", detail.get("microservice"))
            if not isinstance(svc, dict):
                raise BadResponseError("allServicesDetail[].microService: expected an object")
            key = service_from_sc(svc, self.domain_project)
            if (key.app, key.name) == SELF_SERVICE and not self.settings.include_self:
                continue
            service_id = str(svc.get("serviceId", ""))
            if service_id:
                self._remember_service(service_id, key)
            instances = detail.get("instances") or []
            if not isinstance(instances, list):
                raise BadResponseError("allServicesDetail[].instances: expected a list")
            for raw in instances:
                inst = instance_from_sc(raw, key)
                listing[inst.instance_id] = (inst, LocalRef(service_id, inst.instance_id))
        self._list_digest = digest
        return listing

    # -- change detection --------------------------------------------------------------

    async def _probe_feed(self) -> int | None:
        """The feed's current revision, or None (and polling from now on) without a feed."""
        try:
            resp = await self._request(
                "GET",
                "/v4/{project}/registry/changes",
                params={"since": "0", "timeout": "0"},
            )
        except NotFoundError:
            resp = None
        except AdapterError as exc:
            if isinstance(exc, UnavailableError):
                raise
            resp = None
        if resp is None or resp.headers.get(FEED_HEADER) != "1":
            if self._feed is not False:
                log.info(
                    "no change feed at %s: polling every %ss",
                    self.http.shown_address,
                    self.settings.poll_interval,
                )
            self._feed = False
            return None
        self._feed = True
        return int_field(json_object(resp), "revision")

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = Backoff(self.settings.retry_max)
        while not self._closed.is_set():
            try:
                if self._feed is None:
                    # Probe only: with no listing taken, _feed_batches starts with resync.
                    await self._probe_feed()
                batches = self._feed_batches() if self._feed else self._poll_batches()
                async for batch in batches:
                    backoff.succeeded()
                    yield batch
                    if self._closed.is_set():
                        return
            except (AdapterError, aiohttp.ClientError) as exc:
                if self._closed.is_set() or not self.http.started:
                    return
                delay = backoff.failed()
                log.warning("servicecomb change detection: %s (retrying in %.1fs)", exc, delay)
                await self._sleep(delay)

    async def _feed_batches(self) -> AsyncIterator[ChangeBatch]:
        if self._feed_cursor is None:
            self._feed_cursor = await self._probe_feed()
            if self._feed_cursor is None:
                return  # the feed went away: the loop switches to polling
            yield ChangeBatch([], resync=True)  # no listing covers the start point
        while not self._closed.is_set():
            wait = self.settings.feed_wait
            try:
                resp = await self._request(
                    "GET",
                    "/v4/{project}/registry/changes",
                    params={"since": str(self._feed_cursor), "timeout": str(wait)},
                    timeout=wait + self.settings.timeout,
                )
            except NotFoundError:
                self._feed = None  # e.g. failed over to a real SC: probe again, then poll
                self._feed_cursor = None
                yield ChangeBatch([], resync=True)
                return
            if resp.headers.get(FEED_HEADER) != "1":
                self._feed = None
                self._feed_cursor = None
                yield ChangeBatch([], resync=True)
                return
            value = json_object(resp)
            revision = int_field(value, "revision")
            if value.get("reset") or revision < self._feed_cursor:
                self._feed_cursor = revision
                yield ChangeBatch([], resync=True)
                continue
            changes = value.get("changes") or []
            if not isinstance(changes, list):
                raise BadResponseError("changes: expected a list")
            events: list[ChangeEvent] = []
            for change in changes:
                event, service_id, key = event_from_change(
                    change, self.domain_project, self._services_by_id
                )
                if key is not None and service_id:
                    if event is None and change.get("action") == "DELETE":
                        self._forget_service(key)
                    else:
                        self._remember_service(service_id, key)
                if event is not None:
                    events.append(event)
            self._feed_cursor = revision
            if events:
                yield ChangeBatch(events)

    async def _poll_batches(self) -> AsyncIterator[ChangeBatch]:
        previous = self._last_listing
        if previous is None:
            previous = await self._list(force=True)
            assert previous is not None
            self._last_listing = previous
            yield ChangeBatch([], resync=True)  # no listing covers the start point
        while not self._closed.is_set():
            await self._sleep(self.settings.poll_interval)
            if self._closed.is_set():
                return
            current = await self._list(force=False)
            if current is None:
                continue
            events = diff_listings(self._last_listing or {}, current)
            self._last_listing = current
            if events:
                yield ChangeBatch(events)


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> ServiceCombAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``servicecomb``)."""
    return ServiceCombAdapter(addresses, ServiceCombSettings.from_mapping(settings))
