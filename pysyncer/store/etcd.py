"""The etcd store backend: one key prefix shared by the syncers of a data center.

Owns :class:`EtcdStore`, the :class:`~pysyncer.store.base.Store` of ``--store
etcd://HOST:PORT[,HOST:PORT]`` and the data center's
:class:`~pysyncer.store.base.Coordinator` (members, slot table, leader, fencing): its
lifecycle, its health, and the Store protocol's operations, each a read of the mirror
or a write handed to the write queue. It touches only keys under its prefix and never a
registry or the sync logic. The jobs behind it live in one module each:

* :mod:`pysyncer.store.etcd_layout`: the keys and the encoding of every value;
* :mod:`pysyncer.store.etcd_mirror`: the in-memory copy of the prefix that every read
  of the Store protocol is answered from (so reads never wait on etcd and keep working
  while it is unreachable, possibly stale for other members' writes then);
* :mod:`pysyncer.store.etcd_writes`: the ordered write queue, outages (degraded
  health, writes applied ahead as pending) and fenced-off drops;
* :mod:`pysyncer.store.etcd_txn`: committing one write in transactions within etcd's
  limits, appends numbered under the log counter, and fencing;
* :mod:`pysyncer.store.etcd_spool`: the write-behind spool under the data dir that
  keeps the writes acknowledged during an outage across a crash, and their recovery;
* :mod:`pysyncer.store.etcd_watch`: the prefix watch that brings other members' writes
  into the mirror;
* :mod:`pysyncer.store.etcd_coordinator`: member leases, leader, slot table CAS;
* :mod:`pysyncer.store.etcd_client`: the conversation with etcd.

Only this module imports them all; none of them imports this one.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pysyncer.etcdchannels import EtcdSecurity
from pysyncer.model import Record
from pysyncer.store.base import (
    Fence,
    LogInfo,
    MappingEntry,
    MappingKey,
    PeerCursor,
    SlotTable,
    StoreClosedError,
    StoreError,
    StoreHealth,
    check_cursor,
    check_limit,
    check_slot,
    check_trim,
)
from pysyncer.store.codec import record_body
from pysyncer.store.etcd_client import (
    Compare,
    EtcdClient,
    EtcdUnavailableError,
    Op,
    parse_endpoints,
)
from pysyncer.store.etcd_coordinator import (
    ChangeSignal,
    MemberLease,
    leader,
    live_members,
    read_slot_table,
    write_slot_table,
)
from pysyncer.store.etcd_layout import (
    Layout,
    encode_counter,
    encode_cursor,
    encode_mapping,
    encode_meta,
    encode_trust,
)
from pysyncer.store.etcd_mirror import Mirror, Mutation
from pysyncer.store.etcd_spool import Recovery, WriteSpool, spool_path
from pysyncer.store.etcd_txn import Write
from pysyncer.store.etcd_watch import PrefixWatch
from pysyncer.store.etcd_writes import WriteQueue

__all__ = ["EtcdStore"]

log = logging.getLogger(__name__)


class EtcdStore:
    """The etcd :class:`~pysyncer.store.base.Store` and :class:`Coordinator`.

    ``endpoints``: ``"HOST:PORT[,HOST:PORT]"`` or pairs (failover in order).
    ``prefix``: the data center's key prefix (by default
    :data:`~pysyncer.store.etcd_layout.DEFAULT_PREFIX` with the data center's name); every
    syncer of one data center uses the same one.
    ``member``: this syncer's node name; its peer cursors are kept apart from the
    other members' (each member streams from the peers independently).
    ``open_timeout``: how long :meth:`open` waits for etcd before raising StoreError.
    ``request_timeout``: deadline of one etcd request; ``max_queue``: bound of the
    write queue in operations; ``max_txn_ops`` / ``max_txn_bytes``: etcd's limits
    (``--max-txn-ops``, ``--max-request-bytes``); ``close_timeout``: how long
    :meth:`close` waits for queued writes to drain; ``security``: TLS files and login.
    ``spool_dir``: the data dir, where writes acknowledged while etcd is unreachable are
    spooled (:mod:`pysyncer.store.etcd_spool`); None keeps them in memory only (lost if
    the process dies).
    """

    def __init__(
        self,
        endpoints: str | Sequence[tuple[str, int]],
        *,
        prefix: str,
        member: str,
        open_timeout: float = 30.0,
        request_timeout: float = 5.0,
        max_queue: int = 100_000,
        max_txn_ops: int = 128,
        max_txn_bytes: int = 1024 * 1024,
        close_timeout: float = 5.0,
        security: EtcdSecurity | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        pairs = parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints)
        client = EtcdClient(pairs, request_timeout, security)
        self._client = client
        self._layout = Layout(prefix)
        self._member = member
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._open = False
        self._last_error: str | None = None
        self._mirror = Mirror(self._layout, member)
        self._changes = ChangeSignal()
        self._membership = MemberLease(client, self._layout, note_error=self._note_error)
        self._spool = (
            None
            if spool_dir is None
            else WriteSpool(spool_path(Path(spool_dir), self._layout.prefix_text))
        )
        self.replayed = 0  # spooled writes replayed by the last open()
        self._writes = WriteQueue(
            client,
            self._mirror,
            max_queue=max_queue,
            max_txn_ops=max_txn_ops,
            max_txn_bytes=max_txn_bytes,
            lease_of=self._membership.lease_of,
            reload=self._reload,
            note_error=self._note_error,
            last_error=lambda: self._last_error,
            spool=self._spool,
        )
        self._watch = PrefixWatch(
            client,
            self._mirror,
            notify=self._changes.notify,
            request_reload=self._writes.request_reload,
            note_error=self._note_error,
        )

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<EtcdStore {self._client.endpoint_text} {self._layout.prefix_text} {state}>"

    @property
    def prefix(self) -> str:
        return self._layout.prefix_text

    @property
    def member(self) -> str:
        return self._member

    @property
    def endpoints(self) -> str:
        return self._client.endpoint_text

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and load the mirror; with a spool, replay the writes it kept (a new
        log epoch first if the last run did not close the store) before returning."""
        if self._open:
            return
        recovery = self._spool.open() if self._spool is not None else None
        try:
            await self._client.wait_ready(self._open_timeout)
            await self._init_meta()
            if recovery is not None and recovery.unclean:
                await self._new_epoch(recovery)
            await self._load()
        except EtcdUnavailableError as exc:
            await self._abort_open()
            raise StoreError(
                f"etcd store {self._layout.prefix_text} at {self._client.endpoint_text}: {exc}"
            ) from None
        except BaseException:
            await self._abort_open()
            raise
        self._open = True
        self._writes.start()
        self._watch.start()
        if recovery is not None and recovery.writes:
            await self._replay(recovery)

    async def _abort_open(self) -> None:
        await self._renew_client()
        if self._spool is not None:
            self._spool.file.release()  # unlock; its records stay for the next open

    async def _new_epoch(self, recovery: Recovery) -> None:
        """A new log epoch: the last run died with writes applied ahead of etcd, so
        revisions it showed may be given to other records now (peers repair by digests)."""
        log.warning(
            "etcd store %s: the last run did not close the store and its spool %s holds "
            "%d write(s): new log epoch",
            self._layout.prefix_text,
            self._spool.path if self._spool is not None else "",
            len(recovery.writes),
        )
        await self._client.txn([], [Op("put", self._layout.meta, encode_meta(uuid.uuid4().hex))])

    async def _replay(self, recovery: Recovery) -> None:
        """Commit the spooled writes in order (or queue them again if etcd goes away)."""
        futures = self._writes.replay(recovery.writes)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        self._writes.dropped += len(failed)  # fenced off: the slots' owner replays them
        self.replayed = len(recovery.writes)
        log.info(
            "etcd store %s: replayed %d spooled write(s) from %s%s",
            self._layout.prefix_text,
            len(recovery.writes),
            self._spool.path if self._spool is not None else "",
            f", {len(failed)} refused (first: {failed[0]})" if failed else "",
        )

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        await self._writes.drain(self._close_timeout)
        if len(self._writes):
            log.error(
                "etcd store %s: closing with %d queued writes (%d operations) not written%s",
                self._layout.prefix_text,
                len(self._writes),
                self._writes.queued_ops,
                "" if self._spool is None else f" (kept in {self._spool.path} for the next open)",
            )
        await self._writes.stop()
        if self._spool is not None:
            try:
                await self._spool.close()
            except OSError as exc:
                log.error("etcd store %s: closing the spool: %s", self._layout.prefix_text, exc)
        await self._watch.stop()
        await self._membership.leave()
        self._changes.notify()
        await self._renew_client()
        self._mirror.clear()

    async def _renew_client(self) -> None:
        """Close the client and give every part a fresh one (a closed one cannot reopen)."""
        old = self._client
        await old.close()
        client = EtcdClient(old.endpoints, old.request_timeout, old.security)
        self._client = client
        self._membership.client = client
        self._writes.committer.client = client
        self._watch.client = client

    async def __aenter__(self) -> EtcdStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosedError(
                f"etcd store {self._layout.prefix_text} at {self._client.endpoint_text} is not open"
            )

    async def _init_meta(self) -> None:
        layout = self._layout
        await self._client.txn(
            [Compare(layout.meta, "create", "==", 0)],
            [
                Op("put", layout.meta, encode_meta(uuid.uuid4().hex)),
                Op("put", layout.counter, encode_counter(0, "")),
            ],
        )

    async def _load(self) -> None:
        """Read the whole prefix at one revision into the mirror."""
        await self._mirror.load(self._client)
        self._watch.ok = True
        self._changes.notify()

    async def _reload(self) -> None:
        """Reload the mirror and restart the watch after it (the write queue's call)."""
        await self._watch.stop()
        try:
            await self._load()
        finally:
            self._watch.start()

    # -- health --------------------------------------------------------------------------

    def _note_error(self, text: str) -> None:
        self._last_error = text

    def health(self) -> StoreHealth:
        """``ok``, or ``degraded`` while writes wait in the queue or etcd is unreachable."""
        degraded = self._writes.degraded or (self._open and not self._watch.ok)
        return StoreHealth(
            status="degraded" if degraded else "ok",
            queued=self._writes.queued_ops,
            dropped=self._writes.dropped,
            last_error=self._last_error,
            endpoint=self._client.current_endpoint,
        )

    @property
    def renumbered(self) -> int:
        """Queued appends renumbered after an outage (each changed the log epoch)."""
        return self._writes.renumbered

    async def _submit(self, write: Write) -> Any:
        self._check_open()
        return await self._writes.submit(write)

    # -- mapping table -------------------------------------------------------------------

    async def get_mapping(self, origin_dc: str, origin_instance_id: str) -> MappingEntry | None:
        self._check_open()
        return self._mirror.mappings.get(origin_dc, {}).get(origin_instance_id)

    async def list_mappings(
        self, origin_dc: str, after: str | None = None, limit: int = 1000
    ) -> list[MappingEntry]:
        check_limit(limit)
        self._check_open()
        ids = self._mirror.sorted_ids(origin_dc)
        start = 0 if after is None else bisect.bisect_right(ids, after)
        table = self._mirror.mappings.get(origin_dc, {})
        return [table[i] for i in ids[start : start + limit]]

    async def mappings_in_slots(
        self, slots: Collection[int], origin_dc: str | None = None
    ) -> list[MappingEntry]:
        wanted = {check_slot(slot) for slot in slots}
        self._check_open()
        by_slot = self._mirror.mappings_by_slot
        found = [
            entry
            for slot in wanted
            for entry in by_slot.get(slot, {}).values()
            if origin_dc is None or entry.origin_dc == origin_dc
        ]
        found.sort(key=lambda entry: entry.key)
        return found

    async def count_mappings(self, origin_dc: str | None = None) -> int:
        self._check_open()
        mappings = self._mirror.mappings
        if origin_dc is None:
            return sum(len(table) for table in mappings.values())
        return len(mappings.get(origin_dc, ()))

    async def mapping_counts(self) -> dict[str, int]:
        self._check_open()
        return {dc: len(t) for dc, t in sorted(self._mirror.mappings.items()) if t}

    def _mapping_mutations(self, entries: Sequence[MappingEntry]) -> dict[bytes, Mutation]:
        layout = self._layout
        out: dict[bytes, Mutation] = {}
        for entry in entries:
            key = layout.mapping(entry.origin_dc, entry.origin_instance_id)
            out.pop(key, None)
            out[key] = (key, encode_mapping(entry), entry)  # validates slot and digest
        return out

    async def put_mappings(
        self, entries: Sequence[MappingEntry], *, fence: Fence | None = None
    ) -> None:
        mutations = list(self._mapping_mutations(entries).values())
        self._writes.committer.fence_compares(fence)
        if mutations:
            await self._submit(Write(fence, len(mutations), mutations))

    async def delete_mappings(
        self, keys: Sequence[MappingKey], *, fence: Fence | None = None
    ) -> int:
        layout = self._layout
        unique = {layout.mapping(str(dc), str(oid)): None for dc, oid in keys}
        self._writes.committer.fence_compares(fence)
        if not unique:
            return 0
        mutations: list[Mutation] = [(key, None, None) for key in unique]
        result = await self._submit(Write(fence, len(mutations), mutations, counts_deletes=True))
        return int(result)

    # -- cursors and atomic apply --------------------------------------------------------

    async def get_cursor(self, peer_dc: str) -> PeerCursor | None:
        self._check_open()
        return self._mirror.cursors.get(peer_dc)

    async def list_cursors(self) -> list[PeerCursor]:
        self._check_open()
        return [self._mirror.cursors[dc] for dc in sorted(self._mirror.cursors)]

    async def set_cursor(self, peer_dc: str, revision: int, epoch: str) -> None:
        await self.apply_batch(peer_dc, (), (), revision, epoch)

    async def delete_cursor(self, peer_dc: str) -> None:
        key = self._layout.cursor(self._member, peer_dc)
        await self._submit(Write(None, 1, [(key, None, None)]))

    async def apply_batch(
        self,
        peer_dc: str,
        upserts: Sequence[MappingEntry],
        deletes: Sequence[MappingKey],
        cursor: int,
        epoch: str | None = None,
        *,
        fence: Fence | None = None,
    ) -> None:
        check_cursor(cursor)
        final = self._mapping_mutations(upserts)
        layout = self._layout
        for dc, oid in deletes:
            key = layout.mapping(str(dc), str(oid))
            final.pop(key, None)
            final[key] = (key, None, None)
        self._writes.committer.fence_compares(fence)
        self._check_open()
        if epoch is None:
            stored = self._mirror.cursors.get(peer_dc)
            epoch = "" if stored is None else stored.epoch
        cursor_key = layout.cursor(self._member, peer_dc)
        final.pop(cursor_key, None)
        mutations = [*final.values(), (cursor_key, encode_cursor(cursor, epoch), None)]
        await self._submit(Write(fence, len(mutations), mutations))

    # -- trust of remote data centers ----------------------------------------------------

    async def trusted_groups(self) -> dict[str, str]:
        self._check_open()
        return dict(self._mirror.trusted)

    async def set_trusted_group(self, peer_dc: str, group: str | None) -> None:
        key = self._layout.trust(peer_dc)
        value = None if group is None else encode_trust(group)
        await self._submit(Write(None, 1, [(key, value, None)]))

    # -- change log and exported state ---------------------------------------------------

    async def append_changes(
        self, records: Sequence[Record], *, fence: Fence | None = None
    ) -> list[Record]:
        bodies = [record_body(record) for record in records]  # validates before writing
        self._writes.committer.fence_compares(fence)
        if not records:
            self._check_open()
            return []
        write = Write(fence, 2 * len(records), records=list(records), bodies=bodies)
        result: list[Record] = await self._submit(write)
        return result

    async def read_changes(self, since_revision: int, limit: int = 1000) -> list[Record]:
        check_limit(limit)
        self._check_open()
        mirror = self._mirror
        entries = mirror.log
        revision = max(since_revision + 1, mirror.log_first())
        out: list[Record] = []
        while revision <= mirror.log_last and len(out) < limit:
            record = entries.get(revision)
            if record is not None:
                out.append(record)
            revision += 1
        return out

    async def current_revision(self) -> int:
        self._check_open()
        return self._mirror.log_last

    async def log_info(self) -> LogInfo:
        self._check_open()
        mirror = self._mirror
        return LogInfo(
            epoch=mirror.epoch,
            first_revision=mirror.log_first(),
            last_revision=mirror.log_last,
            entries=len(mirror.log),
        )

    async def trim_changes(
        self, *, keep_last: int | None = None, through_revision: int | None = None
    ) -> int:
        check_trim(keep_last, through_revision)
        self._check_open()
        mirror = self._mirror
        if through_revision is None:
            assert keep_last is not None
            through_revision = mirror.log_last - keep_last
        layout = self._layout
        doomed = [r for r in mirror.log if r <= through_revision]
        if not doomed:
            return 0
        mutations: list[Mutation] = [(layout.log(r), None, None) for r in sorted(doomed)]
        write = Write(
            None,
            1,
            mutations,
            delete_range=(layout.log_prefix, layout.log(through_revision + 1)),
        )
        return int(await self._submit(write))

    async def exported_records(self, slots: Collection[int] | None = None) -> list[Record]:
        wanted = None if slots is None else {check_slot(slot) for slot in slots}
        self._check_open()
        mirror = self._mirror
        if wanted is None:
            items = list(mirror.exported.items())
        else:
            by_slot = mirror.exported_by_slot
            items = [item for slot in wanted for item in by_slot.get(slot, {}).items()]
        items.sort(key=lambda item: item[0])
        return [record for _, record in items]

    async def count_exported(self) -> int:
        self._check_open()
        return len(self._mirror.exported)

    # -- coordination --------------------------------------------------------------------

    async def join(self, node: str, info: Mapping[str, str], ttl: float) -> None:
        self._check_open()
        await self._membership.join(node, info, ttl)

    async def leave(self) -> None:
        await self._membership.leave()

    async def live_members(self) -> dict[str, dict[str, str]]:
        self._check_open()
        return await live_members(self._client, self._layout)

    async def leader(self) -> str | None:
        self._check_open()
        return await leader(self._client, self._layout)

    async def check_fence(self, fence: Fence) -> None:
        """Raise FencedError unless ``fence`` would pass now (one etcd round trip)."""
        self._check_open()
        result = await self._client.txn(self._writes.committer.fence_compares(fence), [])
        if not result.succeeded:
            raise self._writes.committer.fenced(fence)

    async def watch(self) -> AsyncGenerator[None, None]:
        self._check_open()
        async for _ in self._changes.watch(lambda: self._open):
            yield None

    async def read_slot_table(self) -> SlotTable:
        self._check_open()
        table = await read_slot_table(self._client, self._layout)
        await self._mirror_reaches(table.revision)
        return table

    async def write_slot_table(
        self, owners: Sequence[str], expected_revision: int
    ) -> SlotTable | None:
        self._check_open()
        table = await write_slot_table(self._client, self._layout, owners, expected_revision)
        if table is not None:
            await self._mirror_reaches(table.revision)
        return table

    async def _mirror_reaches(self, revision: int) -> None:
        """Wait until the mirror holds every write up to ``revision`` (a slot table's).

        A member playing back the slots a table gives it reads their mappings from the
        mirror, which the watch fills a moment after etcd commits: the previous owner's
        last writes (fenced, so committed before the table changed or never) must be in
        it, or the playback holds none of them and removes their copies as orphans.
        StoreError after the request timeout (the playback is retried).
        """
        mirror = self._mirror
        if mirror.revision >= revision:
            return
        try:
            async with asyncio.timeout(self._client.request_timeout):
                async for _ in self._changes.watch(lambda: self._open):
                    if mirror.revision >= revision:
                        return
        except TimeoutError:
            pass
        raise StoreError(
            f"etcd store {self._layout.prefix_text}: the watch has not reached revision "
            f"{revision} (at {mirror.revision}) after {self._client.request_timeout} s"
        )
