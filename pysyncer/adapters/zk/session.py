"""The session of the asyncio ZooKeeper client: one session over one TCP connection at a time.

Owns the socket, the session (id, password, negotiated timeout), request/reply matching
by xid, pings, watch registrations and their notifications, reconnection across the
configured ``host:port`` addresses with the same session (re-arming watches with
``SetWatches``), and session expiry: when a server answers the handshake with a zero
timeout, the client reports ``expired`` (every ephemeral node and watch of the old
session is gone), opens a new session at once and reports ``connected`` with
``new_session=True``. Callers learn about both through the ``on_state`` callback.
The connection loop runs under the current :mod:`supervisor <pysyncer.supervisor>`
(``SESSION_TASK``): an unexpected error in it is logged with its traceback, counted and
the loop restarted with backoff, keeping the session.

Also the connection's security: TLS (an :class:`ssl.SSLContext`, for a server's
``secureClientPort``), the ``auth`` credentials sent (``addauth``, e.g. ``digest
user:password``) on every new connection before any request, since a server keeps them
per connection, and the ACLs of the nodes it creates (``acl`` for nodes created by
:meth:`~.client.ZkClient.create`, ``dir_acl`` for the parents it adds). A server that
refuses the credentials (AUTH_FAILED) ends the client: :meth:`ZkSession.start` raises
:class:`AuthFailedError`. Credentials are never logged.

The request API built on :meth:`ZkSession._call` (paths, bodies, reply decoders) lives in
:mod:`.client`; this module must not import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pysyncer.adapters.zk import proto
from pysyncer.adapters.zk.errors import (
    AuthFailedError,
    ConnectionLossError,
    SessionExpiredError,
    ZkError,
    error_for,
)
from pysyncer.adapters.zk.proto import (
    ACL,
    OPEN_ACL,
    Err,
    EventType,
    Op,
    Reader,
    Writer,
)
from pysyncer.errors import ConfigError
from pysyncer.supervisor import Supervised, spawn, tolerate

__all__ = ["SessionEvent", "State", "WatchEvent", "Watcher", "ZkSession", "parse_hosts"]

log = logging.getLogger(__name__)

State = Literal["connected", "suspended", "expired", "closed"]
SESSION_TASK = "zookeeper-session"  # the supervised connection loop's name (a metric label)
Decoder = Callable[[Reader], Any]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A fired watch: ``type`` is a :class:`~pysyncer.adapters.zk.proto.EventType`."""

    type: int
    path: str


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A connection-state change (``new_session``: the session id changed)."""

    state: State
    session_id: int
    new_session: bool = False
    address: str = ""


Watcher = Callable[[WatchEvent], None]


def parse_hosts(addresses: Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` strings (also comma-separated, ``zk://`` allowed) -> (host, port)."""
    hosts: list[tuple[str, int]] = []
    for address in addresses:
        for item in str(address).split(","):
            text = item.strip().removeprefix("zk://").removeprefix("zookeeper://")
            text = text.split("/", 1)[0]
            if not text:
                continue
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                port_text = rest.removeprefix(":") or "2181"
            elif text.count(":") == 1:
                host, _, port_text = text.partition(":")
            else:
                host, port_text = text, "2181"
            if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"zookeeper address {item!r} is not host:port")
            hosts.append((host, int(port_text)))
    if not hosts:
        raise ConfigError("zookeeper: at least one address host:port is required")
    return hosts


@dataclass(slots=True)
class _Pending:
    xid: int
    op: int
    path: str
    future: asyncio.Future[Any]
    decode: Decoder | None
    on_ok: Callable[[], None] | None
    on_no_node: Callable[[], None] | None


class ZkSession:
    """One ZooKeeper session; requests are pipelined and answered in order.

    The requests themselves (create, get, watch, multi) are :class:`~.client.ZkClient`'s.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        session_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        request_timeout: float = 10.0,
        on_state: Callable[[SessionEvent], None] | None = None,
        auth: Sequence[tuple[str, bytes]] = (),
        acl: ACL = OPEN_ACL,
        dir_acl: ACL = OPEN_ACL,
        tls: ssl.SSLContext | None = None,
        tls_server_name: str = "",
    ) -> None:
        self.hosts = parse_hosts(hosts)
        self.auth = tuple(auth)
        self.acl = acl
        self.dir_acl = dir_acl
        self.tls = tls
        self.tls_server_name = tls_server_name
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.on_state = on_state
        self.session_id = 0
        self.session_password = b"\x00" * 16
        self.negotiated_timeout = session_timeout
        self.last_zxid = 0
        self.state: State = "suspended"
        self.address = ""
        self.expirations = 0
        self._next_host = 0
        self._xid = 0
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[_Pending] = deque()
        self._connected = asyncio.Event()
        self._closing = False
        self._run_task: Supervised | None = None
        self._first: asyncio.Future[None] | None = None
        self._data_watches: dict[str, set[Watcher]] = {}
        self._exist_watches: dict[str, set[Watcher]] = {}
        self._child_watches: dict[str, set[Watcher]] = {}
        self._last_recv = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    def is_closing(self) -> bool:
        """True from :meth:`close` on."""
        return self._closing

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect; UnavailableError (ConnectionLossError) when no address answers."""
        if self._run_task is not None and not self._run_task.done():
            await self.wait_connected(self.connect_timeout * len(self.hosts) + 1)
            return
        self._closing = False
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._run_task = spawn(SESSION_TASK, self._run_supervised)
        try:
            await self._first
        except BaseException:
            await self.close()
            raise

    async def close(self, *, end_session: bool = True) -> None:
        """Close the connection; ``end_session`` also ends the session, so its ephemeral
        nodes go at once (otherwise the server expires it after the session timeout)."""
        self._closing = True
        if end_session and self._writer is not None and self._connected.is_set():
            with contextlib.suppress(ZkError, asyncio.TimeoutError, OSError):
                await asyncio.wait_for(self._call(Op.CLOSE_SESSION, b"", ""), 2.0)
        task, self._run_task = self._run_task, None
        if task is not None:
            await task.stop()
        self._teardown(ConnectionLossError("client closed"))
        self._set_state("closed")

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise ConnectionLossError(
                f"no zookeeper server answered within {timeout:.1f}s "
                f"({', '.join(f'{h}:{p}' for h, p in self.hosts)})"
            ) from None

    def drop_connection(self) -> None:
        """Break the current TCP connection (the session survives; used by tests)."""
        if self._writer is not None:
            self._writer.transport.abort()

    def _set_state(self, state: State, *, new_session: bool = False) -> None:
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(SessionEvent(state, self.session_id, new_session, self.address))
            except Exception as exc:  # a listener bug must not break the connection loop
                tolerate("zookeeper-state-listener", exc, level=logging.ERROR, trace=True)

    # -- connection loop ---------------------------------------------------------------

    async def _run_supervised(self) -> None:
        """The connection loop as the supervisor runs it: an unexpected error fails
        :meth:`start` while it waits for the first connection; later, it goes to the
        supervisor (an ERROR with the traceback, a counted restart after a backoff)."""
        try:
            await self._run()
        except Exception as exc:
            if self._first is not None and not self._first.done():
                self._first.set_exception(exc)
                return
            raise

    async def _run(self) -> None:
        failures = 0
        last: BaseException | None = None
        while not self.is_closing():
            host, port = self.hosts[self._next_host % len(self.hosts)]
            try:
                await self._serve(host, port)
                failures = 0
            except AuthFailedError as exc:
                if self._first is not None and not self._first.done():
                    self._first.set_exception(exc)
                    return
                failures += 1
                log.error("zookeeper %s:%s: %s", host, port, exc)
            except (TimeoutError, OSError, EOFError, ValueError, ZkError) as exc:
                failures += 1
                last = exc
                log.debug("zookeeper %s:%s: %s", host, port, exc)
            if self.is_closing():
                return
            self._next_host += 1
            if self._first is not None and not self._first.done() and failures >= len(self.hosts):
                reason = f" (last error: {type(last).__name__}: {last})" if last else ""
                self._first.set_exception(
                    ConnectionLossError(
                        "no zookeeper server answered: "
                        + ", ".join(f"{h}:{p}" for h, p in self.hosts)
                        + reason
                    )
                )
                return
            if failures and failures % len(self.hosts) == 0:
                await asyncio.sleep(min(0.1 * failures, 1.0))

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.tls is None:
            connect = asyncio.open_connection(host, port)
        else:
            name = self.tls_server_name or host
            connect = asyncio.open_connection(host, port, ssl=self.tls, server_hostname=name)
        return await asyncio.wait_for(connect, self.connect_timeout)

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Send every credential and read each answer before anything else is sent."""
        for scheme, credential in self.auth:
            writer.write(proto.auth_request(scheme, credential))
            r = Reader(await self._read_frame(reader, self.connect_timeout))
            xid, _zxid, err = proto.reply_header(r)
            if xid != proto.AUTH_XID:
                raise ValueError(f"expected the auth reply, got xid {xid}")
            if err != Err.OK:
                name = proto.ERROR_NAMES.get(err, str(err))
                raise AuthFailedError(
                    f"zookeeper refused the {scheme!r} credentials: {name}", errno=err
                )

    async def _serve(self, host: str, port: int) -> None:
        reader, writer = await self._open(host, port)
        try:
            old_session = self.session_id
            request = proto.ConnectRequest(
                0,
                self.last_zxid,
                int(self.session_timeout * 1000),
                self.session_id,
                self.session_password,
            )
            writer.write(proto.frame(request.encode()))
            response = proto.ConnectResponse.decode(
                await self._read_frame(reader, self.connect_timeout)
            )
            if response.expired:
                self._expire()
                self._next_host -= 1
                return  # reconnect at once with a fresh session (same address)
            await self._authenticate(reader, writer)
            self.session_id = response.session_id
            self.session_password = response.password
            self.negotiated_timeout = response.timeout_ms / 1000.0
            self.address = f"{host}:{port}"
            self._writer = writer
            self._next_host -= 1  # stay on this address after a break
            new_session = old_session != response.session_id
            if not new_session:
                self._send_set_watches(writer)
            self._connected.set()
            self._set_state("connected", new_session=new_session)
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            await self._pump(reader, writer)
        finally:
            was_connected = self._connected.is_set()
            self._teardown(ConnectionLossError(f"connection to {host}:{port} lost"))
            writer.close()
            with contextlib.suppress(OSError):  # the connection broke: nothing to flush
                await writer.wait_closed()
            if was_connected and not self._closing:
                self._set_state("suspended")

    def _expire(self) -> None:
        """The server says our session is gone: forget it and its watches."""
        self.expirations += 1
        self.session_id = 0
        self.session_password = b"\x00" * 16
        self._data_watches.clear()
        self._exist_watches.clear()
        self._child_watches.clear()
        self._teardown(SessionExpiredError("zookeeper session expired"))
        self._set_state("expired")

    def _teardown(self, error: ZkError) -> None:
        self._connected.clear()
        self._writer = None
        pending, self._pending = self._pending, deque()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(type(error)(str(error), errno=error.errno))

    async def _read_frame(self, reader: asyncio.StreamReader, timeout: float) -> bytes:
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        size = proto.frame_length(header)
        return await asyncio.wait_for(reader.readexactly(size), timeout)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read replies until the connection breaks; a watchdog pings and enforces the
        read timeout (2/3 of the session timeout without a frame ends the connection)."""
        read_timeout = self.negotiated_timeout * 2 / 3
        ping_every = self.negotiated_timeout / 3
        self._last_recv = time.monotonic()

        async def watchdog() -> None:
            next_ping = time.monotonic() + ping_every
            while True:
                await asyncio.sleep(ping_every / 4)
                now = time.monotonic()
                if now - self._last_recv > read_timeout:
                    log.debug("zookeeper %s: no frame for %.1fs", self.address, read_timeout)
                    writer.transport.abort()
                    return
                if now >= next_ping:
                    writer.write(proto.request(proto.PING_XID, Op.PING))
                    next_ping = now + ping_every

        dog = asyncio.create_task(watchdog())
        try:
            while True:
                size = proto.frame_length(await reader.readexactly(4))
                data = await reader.readexactly(size)
                self._last_recv = time.monotonic()
                if self._dispatch(data):
                    return
        finally:
            dog.cancel()
            await asyncio.wait({dog})  # (a cancellation of this task still propagates)

    def _dispatch(self, data: bytes) -> bool:
        """Handle one reply frame; True when the session was closed by our request."""
        r = Reader(data)
        xid, zxid, err = proto.reply_header(r)
        if zxid > 0:
            self.last_zxid = max(self.last_zxid, zxid)
        if xid == proto.NOTIFICATION_XID:
            self._notify(proto.WatcherEvent.decode(r))
            return False
        if xid in (proto.PING_XID, proto.AUTH_XID):
            return False
        if xid == proto.SET_WATCHES_XID:
            if err != Err.OK:
                log.warning("zookeeper SetWatches failed: %s", err)
            return False
        if not self._pending:
            raise ValueError(f"reply xid {xid} without a pending request")
        item = self._pending.popleft()
        if item.xid != xid:
            raise ValueError(f"reply xid {xid} out of order (expected {item.xid})")
        if err != Err.OK:
            if err == Err.NO_NODE and item.on_no_node is not None:
                item.on_no_node()
            if not item.future.done():
                item.future.set_exception(error_for(err, _OP_NAMES.get(item.op, "?"), item.path))
            return False
        if item.on_ok is not None:
            item.on_ok()
        try:
            value = item.decode(r) if item.decode is not None else None
        except ValueError as exc:
            if not item.future.done():
                item.future.set_exception(
                    error_for(Err.MARSHALLING_ERROR, f"bad reply: {exc}", item.path)
                )
            return False
        if not item.future.done():
            item.future.set_result(value)
        return item.op == Op.CLOSE_SESSION

    # -- watches -----------------------------------------------------------------------

    def _notify(self, event: proto.WatcherEvent) -> None:
        if event.type == EventType.NONE:
            return  # connection-state notices come through on_state instead
        path = event.path
        fired: set[Watcher] = set()
        if event.type in (EventType.NODE_CREATED, EventType.NODE_DATA_CHANGED):
            fired |= self._data_watches.pop(path, set())
            fired |= self._exist_watches.pop(path, set())
        elif event.type == EventType.NODE_DELETED:
            fired |= self._data_watches.pop(path, set())
            fired |= self._exist_watches.pop(path, set())
            fired |= self._child_watches.pop(path, set())
        elif event.type == EventType.NODE_CHILDREN_CHANGED:
            fired |= self._child_watches.pop(path, set())
        watch_event = WatchEvent(event.type, path)
        for watcher in fired:
            try:
                watcher(watch_event)
            except Exception as exc:
                tolerate("zookeeper-watcher", exc, level=logging.ERROR, trace=True)

    def _send_set_watches(self, writer: asyncio.StreamWriter) -> None:
        """Re-arm this session's watches on a new connection (fires any missed ones)."""
        if not (self._data_watches or self._exist_watches or self._child_watches):
            return
        body = (
            Writer()
            .i64(self.last_zxid)
            .strings(sorted(self._data_watches))
            .strings(sorted(self._exist_watches))
            .strings(sorted(self._child_watches))
            .getvalue()
        )
        writer.write(proto.request(proto.SET_WATCHES_XID, Op.SET_WATCHES, body))

    def watched_paths(self) -> dict[str, list[str]]:
        """Paths with a registered watch, by kind (``data``, ``exist``, ``child``)."""
        return {
            "data": sorted(self._data_watches),
            "exist": sorted(self._exist_watches),
            "child": sorted(self._child_watches),
        }

    @staticmethod
    def _adder(table: dict[str, set[Watcher]], path: str, watcher: Watcher) -> Callable[[], None]:
        def add() -> None:
            table.setdefault(path, set()).add(watcher)

        return add

    # -- requests ----------------------------------------------------------------------

    async def _call(
        self,
        op: int,
        body: bytes,
        path: str,
        decode: Decoder | None = None,
        *,
        on_ok: Callable[[], None] | None = None,
        on_no_node: Callable[[], None] | None = None,
    ) -> Any:
        deadline = time.monotonic() + self.request_timeout
        while True:
            try:
                return await self._call_once(op, body, path, decode, deadline, on_ok, on_no_node)
            except ConnectionLossError:
                # Reads are safe to send again once reconnected (same session).
                if op not in _READ_OPS or time.monotonic() >= deadline or self._closing:
                    raise

    async def _call_once(
        self,
        op: int,
        body: bytes,
        path: str,
        decode: Decoder | None,
        deadline: float,
        on_ok: Callable[[], None] | None,
        on_no_node: Callable[[], None] | None,
    ) -> Any:
        if not self._connected.is_set():
            if self._closing or self._run_task is None:
                raise ConnectionLossError("zookeeper client is not started (or closed)")
            await self.wait_connected(max(0.0, deadline - time.monotonic()))
        writer = self._writer
        if writer is None:
            raise ConnectionLossError("zookeeper connection lost")
        self._xid = self._xid + 1 if self._xid < 0x7FFFFFFF else 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Pending(self._xid, op, path, future, decode, on_ok, on_no_node))
        writer.write(proto.request(self._xid, op, body))
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()

        def give_up() -> None:
            if not future.done():
                future.set_exception(
                    ConnectionLossError(f"{_OP_NAMES.get(op, op)} {path}: no reply in time")
                )
                self.drop_connection()  # a server that stops answering: reconnect

        timer = loop.call_later(max(0.001, deadline - time.monotonic()), give_up)
        try:
            return await future
        finally:
            timer.cancel()


_READ_OPS = frozenset({Op.EXISTS, Op.GET_DATA, Op.GET_CHILDREN, Op.GET_CHILDREN2, Op.SYNC})
_OP_NAMES: dict[int, str] = {
    Op.CREATE: "create",
    Op.DELETE: "delete",
    Op.EXISTS: "exists",
    Op.GET_DATA: "getData",
    Op.SET_DATA: "setData",
    Op.GET_CHILDREN: "getChildren",
    Op.GET_CHILDREN2: "getChildren2",
    Op.SYNC: "sync",
    Op.MULTI: "multi",
    Op.CLOSE_SESSION: "closeSession",
}
