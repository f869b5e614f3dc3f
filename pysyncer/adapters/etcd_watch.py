# mypy: disable-error-code="import-untyped"
"""The etcd adapter's change stream: one prefix watch, read until the adapter closes.

Owns the gRPC watch of a key prefix (``prev_kv`` and progress notices on, from a given
revision), turning its answers into :class:`WatchResponse` values: the events, the
revision the feed may resume after, and the compaction that forces a re-listing. What the
events mean for instances is the adapter's business: it must not import the adapter or
the layouts (``etcd``, ``etcd_codec``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aetcd import rpc

from pysyncer.adapters.base import UnavailableError
from pysyncer.adapters.etcd_conn import EtcdConnection, KeyValue, key_value
from pysyncer.etcdchannels import prefix_range_end

__all__ = ["WatchResponse", "watch_prefix"]


@dataclass(frozen=True, slots=True)
class WatchResponse:
    revision: int  # the feed may resume after this revision (0: no progress)
    events: list[tuple[bool, KeyValue, KeyValue | None]]  # (is_delete, kv, prev_kv)
    compacted: int = 0


async def watch_prefix(
    conn: EtcdConnection, prefix: str, start_revision: int, closed: asyncio.Event
) -> AsyncIterator[WatchResponse]:
    """Watch responses of ``prefix`` from ``start_revision``; ends when ``closed`` is set.

    A compacted start yields one response with ``compacted`` set, then ends; an endpoint
    that goes away raises :class:`~pysyncer.adapters.base.UnavailableError`.
    """
    # A cheap read first: it fails over to an endpoint that answers.
    key = prefix.encode()
    await conn.call("kvstub", "Range", rpc.RangeRequest(key=key or b"\x00", count_only=True))
    index = conn.current
    client = await conn.client(index)
    call = client.watchstub.Watch(metadata=client.metadata)
    closing = asyncio.ensure_future(closed.wait())
    try:
        await call.write(
            rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=key or b"\x00",
                    range_end=prefix_range_end(key),
                    start_revision=start_revision,
                    prev_kv=True,
                    progress_notify=True,
                )
            )
        )
        while True:
            read = asyncio.ensure_future(call.read())
            await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
            if closed.is_set() or not read.done():
                read.cancel()
                await asyncio.wait({read})  # (a cancellation of this task still propagates)
                if not read.cancelled():  # it ended first: closing makes its outcome moot
                    read.exception()  # (retrieved, so never reported as unretrieved)
                return
            if read.cancelled():  # the channel went away under us
                raise UnavailableError(f"etcd {conn.text(index)}: watch cancelled")
            response = read.result()
            if response is grpc.aio.EOF:
                raise UnavailableError(f"etcd {conn.text(index)}: watch ended")
            if response.compact_revision:
                yield WatchResponse(
                    int(response.header.revision), [], int(response.compact_revision)
                )
                return
            if response.canceled:
                reason = response.cancel_reason or "cancelled by the server"
                raise UnavailableError(f"etcd {conn.text(index)}: watch {reason}")
            events = [
                (
                    event.type == rpc.Event.DELETE,
                    key_value(event.kv),
                    key_value(event.prev_kv) if event.HasField("prev_kv") else None,
                )
                for event in response.events
            ]
            if events:  # resume after the newest event (catch-up comes in chunks)
                revision = max(kv.mod_revision for _, kv, _ in events)
            elif response.created:
                revision = 0
            else:  # a progress notice: nothing up to this revision is missing
                revision = int(response.header.revision)
            yield WatchResponse(revision, events)
    except grpc.aio.AioRpcError as exc:
        raise conn.error(exc, index) from None
    finally:
        closing.cancel()
        call.cancel()
