# mypy: disable-error-code="import-untyped"
"""The client of a peer syncer's ``pysyncer.sync.v1.Sync`` service, on grpc.aio.

Gives the sync engine Python objects (records, :class:`~pysyncer.rpc.codec.PeerBatch`)
and pysyncer errors, never protobuf messages or ``grpc`` exceptions. It keeps one channel
to one peer; it does not retry or reconnect on its own (the peers module decides when).

A peer is not trusted to bound itself: messages past ``codec.MAX_MESSAGE_BYTES`` are
refused by the channel, and a PullSlots answer must send its slots one after the other,
each once and with at most ``codec.MAX_SLOT_RECORDS`` records, so what a caller buffers
for the slot being received stays bounded (OversizedPayloadError / PayloadError, which
the caller counts by kind).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from grpc import aio

from pysyncer.rpc import codec
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc import sync_pb2_grpc as pb_grpc
from pysyncer.rpc.codec import Digests, PeerBatch, SlotRecords
from pysyncer.rpc.errors import (
    REFUSAL_METADATA,
    OversizedPayloadError,
    PayloadError,
    RequestRejectedError,
    from_status,
)
from pysyncer.rpc.listing import Listing, read_listing
from pysyncer.rpc.tls import TlsConfig, TlsFiles, channel_credentials

__all__ = ["Health", "SyncClient"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0  # seconds, unary calls
DEFAULT_STREAM_TIMEOUT = 120.0  # seconds, a whole PullSlots


class Health:
    """What a peer says about itself (``Health`` RPC)."""

    __slots__ = ("dc", "epoch", "exported", "node", "revision", "version")

    def __init__(
        self, dc: str, node: str, revision: int, epoch: str, version: str, exported: int = 0
    ) -> None:
        self.dc, self.node, self.revision, self.epoch, self.version = (
            dc,
            node,
            revision,
            epoch,
            version,
        )
        self.exported = exported  # instances the peer exports (0: an older peer)

    def __repr__(self) -> str:
        return (
            f"Health(dc={self.dc!r}, node={self.node!r}, revision={self.revision}, "
            f"epoch={self.epoch!r}, version={self.version!r})"
        )


class SyncClient:
    """One channel to the peer at ``target`` (``host:port``); TLS when ``tls`` is given.

    ``dc``: the data center the peer must export (checked on every answer; "" = any).
    ``server_name``: the name the server's certificate must carry, instead of the host of
    ``target`` (with :class:`TlsFiles`: ``identity.dns_name(dc, node)`` of the syncer
    dialled, so the handshake fails unless its certificate names that data center and
    node). :class:`TlsFiles` are read as they are now: a rotated certificate is used from
    the next client on.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: TlsConfig | TlsFiles | None = None,
        dc: str = "",
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = codec.MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.dc = dc
        self.timeout = timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # a connection of its own: the server allows 16 calls at once per connection,
            # which clients in one process would otherwise share
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if tls is None:
            self._channel = aio.insecure_channel(target, options=options)
        else:
            if isinstance(tls, TlsFiles):
                credentials = tls.channel_credentials()
            else:
                credentials = channel_credentials(tls)
                server_name = server_name or tls.server_name
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = aio.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.SyncStub(self._channel)  # type: ignore[no-untyped-call]
        self._services: codec.ServiceKeys = {}  # the peer's services, decoded once

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> SyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers -------------------------------------------------------------------------

    def _error(self, exc: grpc.RpcError) -> Exception:
        code = exc.code()
        trailing = exc.trailing_metadata() if isinstance(exc, aio.AioRpcError) else None
        refusal = next((str(v) for k, v in trailing or () if k == REFUSAL_METADATA), "")
        name = code.name if code is not None else "UNKNOWN"
        return from_status(name, exc.details(), self.target, refusal)

    async def _unary(
        self, call: Callable[..., Awaitable[Any]], request: Any, timeout: float | None
    ) -> Any:
        try:
            return await call(request, timeout=self.timeout if timeout is None else timeout)
        except aio.AioRpcError as exc:
            raise self._error(exc) from None

    def _check_dc(self, dc: str) -> None:
        if self.dc and dc != self.dc:
            raise RequestRejectedError(
                f"{self.target} exports data center {dc!r}, not {self.dc!r}", "FAILED_PRECONDITION"
            )

    def _batch(self, msg: pb.PeerBatch) -> PeerBatch:
        self._check_dc(msg.dc)
        return codec.read_peer_batch(msg, self._services)

    async def _stream(self, call: Any, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        try:
            try:
                async for msg in call:
                    yield convert(msg)
            except aio.AioRpcError as exc:
                raise self._error(exc) from None
        finally:
            call.cancel()  # no-op when the stream ended; frees it when the caller stops early

    # -- calls ---------------------------------------------------------------------------

    async def watch(
        self, since: int = 0, epoch: str = "", *, max_batch: int = 0
    ) -> AsyncIterator[PeerBatch]:
        """The peer's changes after ``since`` (of ``epoch``), then live, until closed.

        Yields heartbeat batches when idle. A ``reset`` batch is the last one: resync by
        digests, then watch again from the digest table's revision and epoch. Raises
        UnavailableError when the peer goes away, PayloadError on a malformed batch (the
        stream is closed then: watch again from the last revision applied).
        """
        request = pb.WatchRequest(
            dc=self.dc, since_revision=since, epoch=epoch, max_batch=max_batch
        )
        # read() in a loop, not ``async for`` through _stream: a busy link reads a message
        # every few milliseconds, and each generator layer costs a resumption per message
        call = self._stub.Watch(request)
        try:
            while True:
                try:
                    msg = await call.read()
                except aio.AioRpcError as exc:
                    raise self._error(exc) from None
                if msg is aio.EOF:
                    return
                yield self._batch(msg)
        finally:
            call.cancel()  # no-op when the stream ended; frees it when the caller stops early

    async def pull_range(
        self,
        since: int,
        until: int = 0,
        *,
        limit: int = 0,
        epoch: str = "",
        timeout: float | None = None,
    ) -> PeerBatch:
        """The changes in (since, until] (``until`` 0: up to now), at most ``limit``."""
        request = pb.RangeRequest(since=since, until=until, limit=limit, epoch=epoch)
        msg = await self._unary(self._stub.PullRange, request, timeout)
        return self._batch(msg)

    async def get_digests(self, *, timeout: float | None = None) -> Digests:
        """(revision, epoch, table bytes) of the peer: ``SlotDigestTable.from_bytes(table)``."""
        msg = await self._unary(self._stub.GetDigests, pb.DigestRequest(dc=self.dc), timeout)
        self._check_dc(msg.dc)
        return codec.read_digest_table(msg)

    async def pull_slots(
        self, slots: Iterable[int], *, timeout: float | None = DEFAULT_STREAM_TIMEOUT
    ) -> AsyncIterator[SlotRecords]:
        """The full current state of ``slots``: (slot, records, last) items, each slot
        ending with ``last`` True (an empty slot comes as one empty item).

        Raises PayloadError when a slot starts before the previous one ended or comes
        twice, OversizedPayloadError when one holds more than ``codec.MAX_SLOT_RECORDS``.
        """
        wanted = frozenset(slots)
        for slot in wanted:
            if not 0 <= slot < codec.SLOT_COUNT:
                raise ValueError(f"slot {slot} is outside 0..{codec.SLOT_COUNT - 1}")
        call = self._stub.PullSlots(pb.SlotsRequest(slots=sorted(wanted)), timeout=timeout)

        done: set[int] = set()
        receiving: list[int] = []  # [slot, records so far] while a slot is open

        def convert(msg: pb.SlotBatch) -> SlotRecords:
            self._check_dc(msg.dc)
            item = codec.read_slot_batch(msg, wanted)
            if item.slot in done:
                raise PayloadError(f"{self.target} sent slot {item.slot} again after its end")
            if receiving and receiving[0] != item.slot:
                raise PayloadError(
                    f"{self.target} started slot {item.slot} before slot {receiving[0]} ended"
                )
            count = (receiving[1] if receiving else 0) + len(item.records)
            if count > codec.MAX_SLOT_RECORDS:
                raise OversizedPayloadError(
                    f"{self.target} sent more than {codec.MAX_SLOT_RECORDS} records "
                    f"for slot {item.slot}"
                )
            receiving[:] = [] if item.last else [item.slot, count]
            if item.last:
                done.add(item.slot)
            return item

        async for item in self._stream(call, convert):
            yield item

    async def health(self, *, timeout: float | None = None) -> Health:
        msg = await self._unary(self._stub.Health, pb.HealthRequest(), timeout)
        self._check_dc(msg.dc)
        return Health(msg.dc, msg.node, msg.revision, msg.epoch, msg.version, msg.exported)

    async def list_service(
        self, name: str, *, limit: int = 0, timeout: float | None = None
    ) -> Listing:
        """The instances the peer's registry holds of service ``name`` ("" = all),
        originals and copies, at most ``limit``; with the peer's filter rules."""
        msg = await self._unary(
            self._stub.ListService, pb.ServiceRequest(name=name, limit=limit), timeout
        )
        self._check_dc(msg.dc)
        return read_listing(msg)
