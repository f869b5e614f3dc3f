"""HTTP plumbing shared by the HTTP registry adapters: failover, bounded bodies, TLS.

Owns one keep-alive aiohttp session over several registry addresses (stay on the one
that answered, rotate on connection errors, timeouts and 5xx), response bodies read with
a size cap and optional TLS (:mod:`._tls`). It knows no registry's paths or shapes (an adapter whose
addresses carry their own base path or credentials overrides :meth:`HttpClient.target`);
the addresses in its errors go through :func:`pysyncer.redact.redact`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp

from pysyncer.adapters._tls import TlsOptions
from pysyncer.adapters.base import BadResponseError, UnavailableError
from pysyncer.aiowait import wait_event
from pysyncer.errors import ConfigError
from pysyncer.redact import redact

__all__ = ["HttpAdapter", "HttpClient", "Response", "TlsOptions", "normalize_address"]

_A = TypeVar("_A", bound="HttpAdapter")


def normalize_address(kind: str, address: str) -> str:
    """``host:port`` -> ``http://host:port``; ``http(s)://host:port[/]`` kept (no path)."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme not in {"http", "https"}:
        raise ConfigError(f"{kind} adapter: unsupported address scheme {address!r}")
    if not parts.hostname:
        raise ConfigError(f"{kind} adapter: address without a host: {address!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(slots=True)
class Response:
    """One HTTP answer, body already read (and bounded)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadResponseError(f"response is not JSON: {exc}") from None


class HttpClient:
    """A keep-alive session over several addresses with failover and bounded bodies."""

    def __init__(
        self,
        kind: str,
        addresses: Sequence[str],
        *,
        timeout: float,
        connect_timeout: float,
        max_body: int,
        tls: TlsOptions | None = None,
        headers: Mapping[str, str] | None = None,
        label: str = "",
        pool_limit: int = 64,
        tls_error_prefix: str = "",
        defer_tls: bool = False,
    ) -> None:
        """``label`` names the registry in "no ... address answered" (default: ``kind``);
        ``tls_error_prefix`` starts the TLS-files error (default ``"<kind> adapter: "``);
        ``defer_tls`` loads the TLS files at :meth:`open` instead of here."""
        if not addresses:
            raise ConfigError(f"{kind} adapter: at least one address is required")
        if timeout <= 0 or connect_timeout <= 0 or max_body <= 0:
            raise ConfigError(
                f"{kind} adapter: adapter.timeout, adapter.connect-timeout and "
                "adapter.max-body must be > 0"
            )
        self.kind = kind
        self.addresses = [normalize_address(kind, a) for a in addresses]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_body = max_body
        self.tls = tls or TlsOptions()
        self.headers = dict(headers or {})
        self.label = label or kind
        self.pool_limit = pool_limit
        self.tls_error_prefix = tls_error_prefix or f"{kind} adapter: "
        self.current = 0
        self.requests = 0  # sent, for tests and metrics
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None if defer_tls else self._ssl_context()

    @classmethod
    def for_settings(
        cls, kind: str, addresses: Sequence[str], settings: Any, **options: Any
    ) -> HttpClient:
        """A client from an adapter's settings (``timeout``, ``connect_timeout``,
        ``max_body`` and the ``tls_*`` fields); ``options`` as for the constructor."""
        s = settings
        return cls(
            kind,
            addresses,
            timeout=s.timeout,
            connect_timeout=s.connect_timeout,
            max_body=s.max_body,
            tls=TlsOptions.of(s),
            **options,
        )

    @property
    def current_address(self) -> str:
        return self.addresses[self.current]

    @property
    def shown_address(self) -> str:
        """:attr:`current_address` with its credentials redacted, for logs and errors."""
        return redact(self.current_address)

    @property
    def started(self) -> bool:
        return self._session is not None and not self._session.closed

    def _ssl_context(self) -> ssl.SSLContext | bool:
        return self.tls.context(self.tls_error_prefix) if self.tls.custom else True

    def open(self) -> None:
        if self._session is None or self._session.closed:
            if self._ssl is None:
                self._ssl = self._ssl_context()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self.pool_limit),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout),
                headers=self.headers,
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def target(self, index: int, path: str) -> tuple[str, Mapping[str, str]]:
        """The URL of ``path`` at address ``index`` and headers of that address only."""
        return self.addresses[index] + path, {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        pass_statuses: tuple[int, ...] = (),
    ) -> Response:
        """Send to the current address, rotating on connection errors, timeouts and 5xx.

        Any answer below 500, and 5xx answers listed in ``pass_statuses`` (registries
        that report "unknown id" as a 500), is returned to the caller to interpret.
        """
        session = self._session
        if session is None or session.closed:
            raise UnavailableError(f"{self.kind} adapter is not started (or closed)")
        body: bytes | None = None
        send_headers: dict[str, str] = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            send_headers["Content-Type"] = "application/json"
        elif data is not None:
            body = urlencode(dict(data)).encode()
            send_headers["Content-Type"] = "application/x-www-form-urlencoded"
        total = timeout if timeout is not None else self.timeout
        failures: list[str] = []
        start = self.current
        for step in range(len(self.addresses)):
            if session.closed:
                raise UnavailableError(f"{self.kind} adapter is closed")
            index = (start + step) % len(self.addresses)
            url, own_headers = self.target(index, path)
            self.requests += 1
            try:
                async with session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers={**send_headers, **own_headers} if own_headers else send_headers,
                    timeout=aiohttp.ClientTimeout(total=total, connect=self.connect_timeout),
                    allow_redirects=False,
                ) as resp:
                    raw = await self._read_body(resp, f"{method} {path}")
                    response = Response(resp.status, resp.headers, raw)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if session.closed:
                    raise UnavailableError(f"{self.kind} adapter is closed") from None
                failure = f"{self.addresses[index]}: {type(exc).__name__} {exc}".strip()
                failures.append(redact(failure))
                continue
            if response.status >= 500 and response.status not in pass_statuses:
                failures.append(f"{redact(self.addresses[index])}: HTTP {response.status}")
                continue
            self.current = index
            return response
        raise UnavailableError(
            f"{method} {path}: no {self.label} address answered: " + "; ".join(failures)
        )

    async def _read_body(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        limit = self.max_body
        too_big = BadResponseError(f"{what}: response body over {limit} bytes")
        if resp.content_length is not None and resp.content_length > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.read(min(65536, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)


class HttpAdapter:
    """Lifecycle shared by the HTTP adapters: an :class:`HttpClient` in ``http`` and a
    ``_closed`` event that :meth:`close` sets and :meth:`_sleep` wakes on."""

    http: HttpClient
    _closed: asyncio.Event

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self._closed.set()
        await self.http.close()

    async def __aenter__(self: _A) -> _A:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the adapter closes."""
        await wait_event(self._closed, seconds)
