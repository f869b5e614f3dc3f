# mypy: disable-error-code="import-untyped"
"""gRPC channels to the endpoints of one etcd cluster, shared by the etcd store and adapter.

Owns what both etcd users need before any etcd semantics: one lazily opened channel per
endpoint (plain, or TLS with a CA and an optional client certificate, from
:class:`EtcdSecurity`) with fast-reconnect options and the stubs ``aetcd`` generates; the
login of etcd's auth (``Auth/Authenticate`` gives a token sent as ``token`` metadata on
every call, logged in again when etcd calls it invalid, e.g. after a restart); closing
them all; the text form of an endpoint; which gRPC status codes mean "this endpoint is
unavailable, try the next one"; and the ``range_end`` that selects a key prefix. A login
refused by etcd surfaces as an ``UNAUTHENTICATED`` :class:`grpc.aio.AioRpcError` whose
details name the settings to check. Request logic, error types and failover policy stay
with each user: the store (:mod:`pysyncer.store.etcd_client`) and the registry adapter
(:mod:`pysyncer.adapters.etcd_conn`) must not depend on each other.

Imports: errors, hostport, supervisor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from aetcd import rpc

from pysyncer.errors import ConfigError
from pysyncer.hostport import format_host_port
from pysyncer.supervisor import tolerate

__all__ = [
    "UNAVAILABLE_CODES",
    "EtcdChannels",
    "EtcdEndpoint",
    "EtcdSecurity",
    "is_unavailable",
    "prefix_range_end",
]

log = logging.getLogger(__name__)

UNAVAILABLE_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
# What gRPC's core reports when the connection under a call breaks (status INTERNAL):
# a transport failure, not an answer of etcd, whose internal errors say "etcdserver: ...".
CORE_TRANSPORT_FAILURE: Final = "Internal error from Core"


def is_unavailable(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a call failed for want of the endpoint (try the next one), not by its answer."""
    code = exc.code()
    if code in UNAVAILABLE_CODES:
        return True
    return bool(code == grpc.StatusCode.INTERNAL and exc.details() == CORE_TRANSPORT_FAILURE)


AUTHENTICATE: Final = "/etcdserverpb.Auth/Authenticate"
INVALID_TOKEN: Final = "invalid auth token"  # etcd's ErrInvalidAuthToken
_OLD_REVISION: Final = "revision of auth store is old"
_AUTH_DISABLED: Final = "authentication is not enabled"
_TOKEN_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,  # ErrGRPCInvalidAuthToken
        grpc.StatusCode.INVALID_ARGUMENT,  # ErrGRPCAuthOldRevision
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    for index in reversed(range(len(end))):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"  # every key


@dataclass(frozen=True, slots=True)
class EtcdSecurity:
    """TLS files and login of an etcd client; empty fields are off.

    ``settings`` names, for error messages, where the user and password are configured
    (e.g. ``"adapter.user and adapter.password-file"``); the password itself is never
    shown (``repr`` leaves it out).
    """

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""  # the name the server certificate must carry (default: host)
    user: str = ""
    password: str = field(default="", repr=False)
    settings: str = "the etcd user and password settings"

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def check(self) -> None:
        """ConfigError when the combination cannot work (read no file yet)."""
        if self.tls_key and not self.tls_cert:
            raise ConfigError("etcd TLS: tls-key needs tls-cert")
        if self.tls_cert and not self.tls_key:
            raise ConfigError("etcd TLS: tls-cert needs tls-key")
        if self.user and not self.password:
            raise ConfigError(f"etcd user {self.user!r} has no password: set {self.settings}")
        if self.password and not self.user:
            raise ConfigError(f"etcd password without a user: set {self.settings}")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials from the files; ConfigError naming the file that cannot be read."""

        def read(path: str, what: str) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as file:
                    return file.read()
            except OSError as exc:
                raise ConfigError(
                    f"etcd TLS: cannot read {what} {path!r}: {exc.strerror}"
                ) from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca, "tls-ca"),
            private_key=read(self.tls_key, "tls-key"),
            certificate_chain=read(self.tls_cert, "tls-cert"),
        )


def channel_options(max_message: int, keepalive: bool) -> dict[str, Any]:
    """Reconnect quickly after an outage (gRPC's default backoff grows to 120 s); with
    ``keepalive``, ping an idle channel so a dead peer is noticed within 15 s."""
    options: dict[str, Any] = {
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.min_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 2000,
        "grpc.max_receive_message_length": max_message,
    }
    if keepalive:
        options["grpc.keepalive_time_ms"] = 10_000
        options["grpc.keepalive_timeout_ms"] = 5_000
    return options


def _method(details: Any) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def is_invalid_token(code: grpc.StatusCode, details: str) -> bool:
    """etcd refused the token of a call (expired, or minted before a restart)."""
    if code not in _TOKEN_CODES:
        return False
    return INVALID_TOKEN in details or _OLD_REVISION in details


class _Login:
    """The token of one endpoint: logged in on first use, again after etcd refused it."""

    def __init__(self, where: str, security: EtcdSecurity, timeout: float) -> None:
        self.where = where
        self.security = security
        self.timeout = timeout
        self.token: str | None = None
        self.enabled = True  # False once etcd says its auth is off
        self.auth_stub: Any = None
        self._lock = asyncio.Lock()

    async def current(self) -> str | None:
        if self.token is None and self.enabled:
            async with self._lock:
                if self.token is None and self.enabled:
                    self.token = await self._authenticate()
        return self.token

    def refused(self, token: str | None) -> None:
        """etcd called ``token`` invalid: the next call logs in again."""
        if self.token == token:
            self.token = None

    async def _authenticate(self) -> str | None:
        s = self.security
        request = rpc.AuthenticateRequest(name=s.user, password=s.password)
        try:
            response = await self.auth_stub.Authenticate(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or exc.code().name
            if _AUTH_DISABLED in details:
                log.warning("etcd %s: auth is not enabled; calls go without a token", self.where)
                self.enabled = False
                return None
            if is_unavailable(exc):
                raise
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                details=f"login of user {s.user!r} refused ({details}); check {s.settings}",
            ) from None
        return str(response.token)


class _TokenInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Puts the login's token on every call; a unary call refused for its token is
    sent once more after a new login, a stream refused so makes the next call log in."""

    def __init__(self, login: _Login) -> None:
        self.login = login

    async def _with_token(self, details: Any) -> tuple[Any, str | None]:
        if _method(details) == AUTHENTICATE:
            return details, None
        token = await self.login.current()
        if token is None:
            return details, None
        metadata = grpc.aio.Metadata(
            *((k, v) for k, v in (details.metadata or ()) if k != "token"), ("token", token)
        )
        return details._replace(metadata=metadata), token

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        sent, token = await self._with_token(details)
        call = await continuation(sent, request)
        if token is None:
            return call
        code = await call.code()
        if not is_invalid_token(code, await call.details() or ""):
            return call
        self.login.refused(token)
        sent, _token = await self._with_token(details)
        return await continuation(sent, request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        sent, _token = await self._with_token(details)
        return await continuation(sent, request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request_iterator: Any
    ) -> Any:
        sent, _token = await self._with_token(details)
        return await continuation(sent, request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request_iterator: Any
    ) -> Any:
        sent, _token = await self._with_token(details)
        return await continuation(sent, request_iterator)


class EtcdEndpoint:
    """One open channel to one endpoint, with the stubs the store and the adapter call.

    ``metadata`` is what callers pass along with each call (the token travels through
    the channel's interceptor, so it is always empty here)."""

    def __init__(self, channel: grpc.aio.Channel, login: _Login | None) -> None:
        self.channel = channel
        self.login = login
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.kvstub = rpc.KVStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.watchstub = rpc.WatchStub(channel)
        if login is not None:
            login.auth_stub = rpc.AuthStub(channel)

    def refused(self, details: str) -> None:
        """A stream ended with ``details``: log in again on the next call when it is the
        token that etcd refused (unary calls handle that themselves)."""
        if self.login is not None and (INVALID_TOKEN in details or _OLD_REVISION in details):
            self.login.token = None

    async def close(self) -> None:
        await self.channel.close()


class EtcdChannels:
    """One :class:`EtcdEndpoint` per endpoint, opened on first use."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        max_message: int,
        keepalive: bool,
        security: EtcdSecurity | None = None,
        login_timeout: float = 5.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.security = security or EtcdSecurity()
        self.security.check()
        self._options = channel_options(max_message, keepalive)
        if self.security.tls_server_name:
            self._options["grpc.ssl_target_name_override"] = self.security.tls_server_name
        self._credentials = self.security.channel_credentials() if self.security.tls else None
        self._login_timeout = login_timeout
        self._clients: list[EtcdEndpoint | None] = [None] * len(self.endpoints)

    def text(self, index: int) -> str:
        host, port = self.endpoints[index]
        return format_host_port(host, port)

    async def client(self, index: int) -> EtcdEndpoint:
        client = self._clients[index]
        if client is None:
            client = self._open(index)
            self._clients[index] = client
        return client

    def _open(self, index: int) -> EtcdEndpoint:
        target = self.text(index)
        login: _Login | None = None
        interceptors: list[Any] = []
        if self.security.user:
            login = _Login(target, self.security, self._login_timeout)
            interceptors.append(_TokenInterceptor(login))
        options = list(self._options.items())
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(
                target, self._credentials, options=options, interceptors=interceptors or None
            )
        else:
            channel = grpc.aio.insecure_channel(
                target, options=options, interceptors=interceptors or None
            )
        return EtcdEndpoint(channel, login)

    async def close(self) -> None:
        """Close every open channel; closing never fails (a failure is logged and counted)."""
        clients, self._clients = self._clients, [None] * len(self.endpoints)
        for client in clients:
            if client is not None:
                try:
                    await client.close()
                except Exception as exc:
                    tolerate("etcd-channel-close", exc)
