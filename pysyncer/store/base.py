"""The backend-neutral :class:`Store` protocol, its value types and its errors.

Owns the contract every store backend (embedded SQLite now, etcd later) keeps; it does
not touch any backend, registry or network. Three kinds of data live in a store:

* the **mapping table**, the authority on copies: ``(origin_dc, origin_instance_id)``
  -> :class:`MappingEntry` (where the copy lives in the local registry, which origin
  revision and digest it reflects);
* the **peer cursors**: per remote data center, the last origin revision applied and
  the origin's log epoch (a changed epoch means the origin's log was reset);
* this data center's **change log** of exports (:class:`~pysyncer.model.Record` with
  consecutive revisions assigned by the store) and the **exported state** (the latest
  live record per ``(service, instance_id)``).

Atomicity is part of the contract: :meth:`Store.apply_batch` writes mapping changes and
the peer cursor in one transaction, :meth:`Store.append_changes` writes the log and the
exported state in one transaction, so a crash leaves each batch wholly present or
wholly absent and never a cursor ahead of or behind its mapping. Every method is a
coroutine; a backend never blocks the event loop. A cancelled call may still complete
in the backend (at-least-once: the caller repeats it, and every write is idempotent
when repeated with the same arguments).

Errors are :class:`StoreError` (a :class:`~pysyncer.errors.PysyncerError` and an
:class:`OSError`) and its subclasses; a backend's own exceptions never escape. Invalid
arguments (a digest outside ``0..2**64-1``, a slot outside ``0..16383``) raise
:class:`ValueError` before anything is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from pysyncer._core import slots as core_slots
from pysyncer.errors import PysyncerError
from pysyncer.model import Record

__all__ = [
    "DIGEST_MAX",
    "SLOT_COUNT",
    "Coordinator",
    "CursorBatch",
    "Fence",
    "FencedError",
    "LogInfo",
    "MappingEntry",
    "MappingKey",
    "PeerCursor",
    "SlotTable",
    "Store",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreHealth",
    "StoreLockedError",
    "apply_batches",
    "check_cursor",
    "check_digest",
    "check_limit",
    "check_slot",
    "check_trim",
    "iter_mappings",
]

SLOT_COUNT: int = core_slots.SLOT_COUNT
"""Redis Cluster hash slots: a slot is in ``0..SLOT_COUNT-1``."""

DIGEST_MAX: int = 2**64 - 1
"""Digests are unsigned 64-bit integers."""


def check_slot(slot: int) -> int:
    """``slot`` if it is in ``0..SLOT_COUNT-1``; ValueError otherwise."""
    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} is outside 0..{SLOT_COUNT - 1}")
    return slot


def check_limit(limit: int) -> int:
    """``limit`` (a page size) if it is positive; ValueError otherwise."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
    return limit


def check_cursor(cursor: int) -> int:
    """``cursor`` (a peer's revision) if it is >= 0; ValueError otherwise."""
    if cursor < 0:
        raise ValueError(f"cursor must be >= 0, not {cursor}")
    return cursor


def check_trim(keep_last: int | None, through_revision: int | None) -> None:
    """The arguments of :meth:`Store.trim_changes`: exactly one given, ``keep_last`` >= 0."""
    if (keep_last is None) == (through_revision is None):
        raise ValueError("trim_changes takes exactly one of keep_last, through_revision")
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, not {keep_last}")


def check_digest(digest: int) -> int:
    """``digest`` if it is in ``0..DIGEST_MAX``; ValueError otherwise."""
    if not 0 <= digest <= DIGEST_MAX:
        raise ValueError(f"digest {digest} is not an unsigned 64-bit integer")
    return digest


MappingKey = tuple[str, str]
"""``(origin_dc, origin_instance_id)``: the identity of a copy."""


class StoreError(PysyncerError, OSError):
    """The store cannot do what was asked; the message names the file and the cause."""


class StoreCorruptError(StoreError):
    """The data file is not a store, is damaged, or holds undecodable values."""


class StoreLockedError(StoreError):
    """Another process (or another open store) holds the data file."""


class StoreFullError(StoreError):
    """The disk (or the configured size limit) is full; the write was rolled back."""


class StoreClosedError(StoreError):
    """The store is not open (never opened, or already closed)."""


class FencedError(StoreError):
    """A fenced write was refused: the slot table's epoch moved on, or this member's
    lease is gone. Nothing of the refused transaction was written."""


class MappingEntry(NamedTuple):
    """One copy of a remote instance in the local registry (a named tuple: one is made
    per copy written, several times faster than a frozen dataclass).

    ``digest`` is the origin record's unsigned 64-bit digest; ``registered_at`` and
    ``renewed_at`` are wall-clock seconds (``time.time()``), kept exactly.
    """

    origin_dc: str
    origin_instance_id: str
    service_text: str
    slot: int
    digest: int
    origin_revision: int
    local_service_id: str
    local_instance_id: str
    registered_at: float
    renewed_at: float

    @property
    def key(self) -> MappingKey:
        return (self.origin_dc, self.origin_instance_id)


@dataclass(frozen=True, slots=True)
class PeerCursor:
    """How far this data center has applied a remote data center's change log."""

    peer_dc: str
    revision: int
    epoch: str


@dataclass(frozen=True, slots=True)
class LogInfo:
    """State of the local change log.

    ``first_revision`` is the oldest revision still retained (``last_revision + 1``
    when the log is empty): a peer whose cursor ``c`` satisfies
    ``c >= first_revision - 1`` can resume from the log, any other falls back to digest
    comparison. ``last_revision`` is the highest revision ever assigned (0 before the
    first append); trimming never lowers it, so revisions are never reused. ``epoch``
    identifies this log: it is created with the store and changes only when the store
    is recreated from nothing.
    """

    epoch: str
    first_revision: int
    last_revision: int
    entries: int


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of slot ownership carried by a write (etcd store, several members).

    ``node`` is this member's name (as given to :meth:`Coordinator.join`) and ``epoch``
    the slot table's epoch the caller's ownership comes from. A fenced write commits
    only if, at commit time, the slot table still has that epoch and the member's lease
    key still exists; otherwise it raises :class:`FencedError` and writes nothing.
    """

    node: str
    epoch: int


@dataclass(frozen=True, slots=True)
class SlotTable:
    """Owner of each of the 16384 slots (``""``: unassigned) at one epoch.

    ``revision`` is the CAS token for :meth:`Coordinator.write_slot_table` (the etcd
    ``mod_revision`` of the table; 0 while no table was ever written).
    """

    epoch: int
    owners: tuple[str, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Health of a store whose backend can be unreachable (etcd).

    ``status`` is ``"ok"`` or ``"degraded"`` (writes queued in memory, or the backend
    unreachable); ``queued`` counts queued write operations, ``dropped`` fenced writes
    dropped after an outage, ``last_error`` the last backend failure (or None).
    """

    status: Literal["ok", "degraded"]
    queued: int
    dropped: int
    last_error: str | None
    endpoint: str


@runtime_checkable
class Coordinator(Protocol):
    """Membership, slot table and leader election shared by the syncers of one data center.

    Optional: only stores shared by several members implement it (the etcd store).
    Slot ownership builds on it: members :meth:`join` with a lease, one of them (the
    :meth:`leader`) writes the :class:`SlotTable` by compare-and-swap, and every member
    fences its writes (:class:`Fence`) with the epoch it owns slots under.
    """

    async def join(self, node: str, info: Mapping[str, str], ttl: float) -> None:
        """Register this member (a key bound to a lease of ``ttl`` seconds) and keep the
        lease alive in the background until :meth:`leave` or close. Joining again
        replaces the info. If the lease is lost (an outage longer than ``ttl``) the
        member re-joins with a new lease once the backend answers again."""
        ...

    async def leave(self) -> None:
        """Revoke the lease (the member key disappears at once); idempotent."""
        ...

    async def live_members(self) -> dict[str, dict[str, str]]:
        """Every live member's info, by node name."""
        ...

    def watch(self) -> AsyncIterator[None]:
        """Yields once at once, then whenever members or the slot table (may) have
        changed; changes are coalesced, so read the current state after each yield."""
        ...

    async def read_slot_table(self) -> SlotTable:
        """The current slot table (epoch 0, all unassigned, revision 0 if none yet)."""
        ...

    async def write_slot_table(
        self, owners: Sequence[str], expected_revision: int
    ) -> SlotTable | None:
        """Replace the table if its revision is still ``expected_revision``; the new
        table (epoch + 1), or None when another writer got there first."""
        ...

    async def leader(self) -> str | None:
        """The live member with the lowest lease creation revision (None: no member)."""
        ...

    async def check_fence(self, fence: Fence) -> None:
        """Raise :class:`FencedError` unless a write fenced with ``fence`` would commit
        now (epoch current, member lease held); StoreError when the store is unreachable.
        Callers check before side effects outside the store (registry writes)."""
        ...


@runtime_checkable
class Store(Protocol):
    """Persistent state of one syncer: mapping table, peer cursors, change log."""

    async def open(self) -> None:
        """Open (creating or migrating the schema when needed); idempotent."""
        ...

    async def close(self) -> None:
        """Flush and release the store; idempotent. Later calls raise StoreClosedError."""
        ...

    async def __aenter__(self) -> Store: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- mapping table ---------------------------------------------------------------

    async def get_mapping(self, origin_dc: str, origin_instance_id: str) -> MappingEntry | None:
        """The copy of one origin instance, or None."""
        ...

    async def list_mappings(
        self, origin_dc: str, after: str | None = None, limit: int = 1000
    ) -> list[MappingEntry]:
        """One page of an origin's copies, ordered by origin instance id.

        Pass the last id of a page as ``after`` to get the next one (keyset paging: no
        row is skipped or repeated while others are written). See :func:`iter_mappings`.
        """
        ...

    async def mappings_in_slots(
        self, slots: Collection[int], origin_dc: str | None = None
    ) -> list[MappingEntry]:
        """Every copy whose slot is in ``slots`` (of one origin, or of all)."""
        ...

    async def count_mappings(self, origin_dc: str | None = None) -> int:
        """Number of copies of one origin, or of all origins."""
        ...

    async def mapping_counts(self) -> dict[str, int]:
        """Number of copies per origin data center."""
        ...

    async def put_mappings(
        self, entries: Sequence[MappingEntry], *, fence: Fence | None = None
    ) -> None:
        """Insert or replace entries without touching cursors (re-registration, renewals).

        ``fence`` (here and in the other writes): see :class:`Fence`; a backend with a
        single member (embedded) accepts and ignores it.
        """
        ...

    async def delete_mappings(
        self, keys: Sequence[MappingKey], *, fence: Fence | None = None
    ) -> int:
        """Remove entries (missing ones are ignored); returns how many existed."""
        ...

    # -- peer cursors and atomic apply -------------------------------------------------

    async def get_cursor(self, peer_dc: str) -> PeerCursor | None:
        """The cursor of one remote data center, or None before its first apply."""
        ...

    async def list_cursors(self) -> list[PeerCursor]:
        """Every cursor, ordered by data center name."""
        ...

    async def set_cursor(self, peer_dc: str, revision: int, epoch: str) -> None:
        """Set a cursor alone (after a full resync, or to record a new origin epoch)."""
        ...

    async def delete_cursor(self, peer_dc: str) -> None:
        """Forget a remote data center's cursor (its mapping entries are kept)."""
        ...

    # -- trust of remote data centers ----------------------------------------------------

    async def trusted_groups(self) -> dict[str, str]:
        """The ownership group followed for each remote data center (``peer dc -> group``,
        see :mod:`pysyncer.sync.trust`), as recorded by :meth:`set_trusted_group`."""
        ...

    async def set_trusted_group(self, peer_dc: str, group: str | None) -> None:
        """Record the group followed for ``peer_dc``; None forgets it."""
        ...

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
        """Apply mapping changes and advance ``peer_dc``'s cursor in ONE transaction.

        Upserts are written first (last one wins for a repeated key), then deletes.
        The cursor is set to ``cursor`` as given (not max-ed: the caller decides);
        ``epoch`` replaces the stored epoch when given, else the stored one is kept
        (empty for a new cursor). Repeating a batch is harmless.
        """
        ...

    # -- change log and exported state -------------------------------------------------

    async def append_changes(
        self, records: Sequence[Record], *, fence: Fence | None = None
    ) -> list[Record]:
        """Append records to the log and update the exported state in ONE transaction.

        The store assigns consecutive revisions (the records' own are ignored) and
        returns the records with them, in order. A record with ``instance`` set
        replaces the exported entry of its ``(service, instance_id)``; a tombstone
        removes it. ``record.instance`` must match the record's service and id.
        """
        ...

    async def read_changes(self, since_revision: int, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records with revision > ``since_revision``, in revision order."""
        ...

    async def current_revision(self) -> int:
        """The highest revision ever assigned (0 before the first append)."""
        ...

    async def log_info(self) -> LogInfo:
        """Epoch, retained revision range and size of the change log."""
        ...

    async def trim_changes(
        self, *, keep_last: int | None = None, through_revision: int | None = None
    ) -> int:
        """Drop old log entries: keep at most ``keep_last`` newest entries, or drop
        every entry with revision <= ``through_revision`` (exactly one of the two).
        The exported state is untouched. Returns the number of entries dropped."""
        ...

    async def exported_records(self, slots: Collection[int] | None = None) -> list[Record]:
        """The exported state: the latest live record per ``(service, instance_id)``,
        of every slot or of ``slots`` only, ordered by (service text, instance id)."""
        ...

    async def count_exported(self) -> int:
        """Number of live exported instances."""
        ...


async def iter_mappings(
    store: Store, origin_dc: str, page_size: int = 1000
) -> AsyncIterator[MappingEntry]:
    """Every copy of ``origin_dc``, fetched page by page (bounded memory for 100k+ rows)."""
    after: str | None = None
    while True:
        page = await store.list_mappings(origin_dc, after, page_size)
        for entry in page:
            yield entry
        if len(page) < page_size:
            return
        after = page[-1].origin_instance_id


@dataclass(frozen=True, slots=True)
class CursorBatch:
    """One remote data center's part of :func:`apply_batches`: the arguments of
    :meth:`Store.apply_batch`."""

    peer_dc: str
    upserts: Sequence[MappingEntry]
    deletes: Sequence[MappingKey]
    cursor: int
    epoch: str | None = None


async def apply_batches(
    store: Store, batches: Sequence[CursorBatch], *, fence: Fence | None = None
) -> None:
    """:meth:`Store.apply_batch` of each of ``batches`` (several remote data centers, or
    one several times), in order: in ONE transaction when the backend offers it (an
    ``apply_batches`` method: the embedded store, where a transaction's fixed cost is
    most of a small batch's), else one after another, each atomic as ever."""
    together = getattr(store, "apply_batches", None)
    if callable(together):
        await together(batches, fence=fence)
        return
    for batch in batches:
        await store.apply_batch(
            batch.peer_dc, batch.upserts, batch.deletes, batch.cursor, batch.epoch, fence=fence
        )
