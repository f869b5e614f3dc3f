"""The etcd store's coordination: member leases, leader, slot table CAS, change wake-ups.

Owns :class:`MemberLease` and the slot-table functions behind the
:class:`~pysyncer.store.base.Coordinator` half of the etcd store: this syncer's member
key bound to an etcd lease (granted on :meth:`MemberLease.join`, kept alive every
``ttl / 3``, re-granted after it expired), the live members and the leader (the live
member with the oldest lease), reading and compare-and-swapping the slot table with its
epoch key, and the subscribers woken when members or the slot table change. Fencing a
write with the lease is the write queue's (:mod:`pysyncer.store.etcd_writes`). Must not
import the store facade, the mirror, the watch or the write queue. Every read here goes
to etcd (never to the mirror).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

from pysyncer.etcdchannels import prefix_range_end
from pysyncer.store.base import SLOT_COUNT, SlotTable, StoreError
from pysyncer.store.etcd_client import Compare, EtcdClient, Op
from pysyncer.store.etcd_layout import (
    Kind,
    Layout,
    decode_member,
    decode_slot_table,
    encode_epoch,
    encode_member,
    encode_slot_table,
)
from pysyncer.supervisor import Supervised, spawn

__all__ = [
    "ChangeSignal",
    "MemberLease",
    "leader",
    "live_members",
    "read_slot_table",
    "write_slot_table",
]

log = logging.getLogger(__name__)

_MIN_TTL = 2  # seconds: etcd's lease granularity makes shorter leases flap
_MIN_KEEPALIVE = 0.2


class MemberLease:
    """This syncer's membership: ``members/<node>`` bound to a kept-alive lease.

    ``note_error(text)`` records the last error for the store's health.
    """

    def __init__(
        self, client: EtcdClient, layout: Layout, *, note_error: Callable[[str], None]
    ) -> None:
        self.client = client
        self._layout = layout
        self._note_error = note_error
        self.node: str | None = None
        self.lease = 0
        self._info: dict[str, str] = {}
        self._ttl = 0
        self._task: Supervised | None = None

    def lease_of(self, node: str) -> int:
        """The lease held for member ``node`` (0 when not joined as ``node``)."""
        return self.lease if node == self.node else 0

    async def join(self, node: str, info: Mapping[str, str], ttl: float) -> None:
        if self.node is not None and self.node != node:
            await self.leave()
        self.node = node
        self._info = dict(info)
        self._ttl = max(_MIN_TTL, math.ceil(ttl))
        if not self.lease:
            self.lease = await self.client.grant(self._ttl)
        await self._put_member(node)
        if self._task is None:
            self._task = spawn("etcd-store-lease", self._keepalive_loop)

    async def leave(self) -> None:
        """Stop the keep-alive and revoke the lease (its member key goes with it)."""
        await self.stop()
        lease, self.lease = self.lease, 0
        self.node = None
        if lease:
            with contextlib.suppress(StoreError):  # unreachable or already gone: it expires
                await self.client.revoke(lease)

    async def stop(self) -> None:
        """Stop the keep-alive task only."""
        task, self._task = self._task, None
        if task is not None:
            await task.stop()

    async def _put_member(self, node: str) -> None:
        value = encode_member(self._info)
        await self.client.txn([], [Op("put", self._layout.member(node), value, self.lease)])

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(max(_MIN_KEEPALIVE, self._ttl / 3))
            node = self.node
            if node is None:
                return
            try:
                remaining = await self.client.keepalive(self.lease) if self.lease else 0
                if remaining <= 0:
                    log.warning("etcd store: lease of member %s expired; re-joining", node)
                    self.lease = 0
                    self.lease = await self.client.grant(self._ttl)
                    await self._put_member(node)
            except StoreError as exc:
                self._note_error(str(exc))
            except Exception as exc:  # the lease must outlive any surprise
                self._note_error(str(exc))
                log.warning("etcd store: keep-alive of member %s failed: %r", node, exc)


class ChangeSignal:
    """Wakes every :meth:`watch` iterator when members or the slot table may have changed."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Event] = set()

    def notify(self) -> None:
        for event in self._subscribers:
            event.set()

    async def watch(self, is_open: Callable[[], bool]) -> AsyncGenerator[None, None]:
        """Yield at once, then after every :meth:`notify`, until ``is_open()`` is false."""
        event = asyncio.Event()
        event.set()
        self._subscribers.add(event)
        try:
            while True:
                await event.wait()
                event.clear()
                if not is_open():
                    return
                yield None
        finally:
            self._subscribers.discard(event)


async def _members(client: EtcdClient, layout: Layout) -> dict[str, tuple[dict[str, str], int]]:
    prefix = layout.member_prefix
    page = await client.range(prefix, prefix_range_end(prefix))
    found: dict[str, tuple[dict[str, str], int]] = {}
    for kv in page.kvs:
        parsed = layout.parse(kv.key)
        if parsed.kind is Kind.MEMBER:
            found[parsed.parts[0]] = (decode_member(kv.value), kv.create_revision)
    return found


async def live_members(client: EtcdClient, layout: Layout) -> dict[str, dict[str, str]]:
    """Every member whose lease is alive, by name, with its info."""
    members = await _members(client, layout)
    return {node: info for node, (info, _) in sorted(members.items())}


async def leader(client: EtcdClient, layout: Layout) -> str | None:
    """The live member that joined first (lowest create revision), or None."""
    members = await _members(client, layout)
    if not members:
        return None
    return min(members, key=lambda node: (members[node][1], node))


async def read_slot_table(client: EtcdClient, layout: Layout) -> SlotTable:
    kv = await client.get(layout.slot_table)
    if kv is None:
        return SlotTable(0, ("",) * SLOT_COUNT, 0)
    epoch, owners = decode_slot_table(kv.value)
    return SlotTable(epoch, owners, kv.mod_revision)


async def write_slot_table(
    client: EtcdClient, layout: Layout, owners: Sequence[str], expected_revision: int
) -> SlotTable | None:
    """Write the next epoch's table if it is still at ``expected_revision``; None if not."""
    owners = tuple(owners)
    current = await read_slot_table(client, layout)
    if current.revision != expected_revision:
        return None
    epoch = current.epoch + 1
    result = await client.txn(
        [Compare(layout.slot_table, "mod", "==", expected_revision)],
        [
            Op("put", layout.slot_table, encode_slot_table(epoch, owners)),
            Op("put", layout.slot_epoch, encode_epoch(epoch)),
        ],
    )
    if not result.succeeded:
        return None
    return SlotTable(epoch, owners, result.revision)
