"""The etcd store's write-behind spool: what a queued write looks like on disk, and recovery.

Owns the records of the etcd store's :class:`~pysyncer.store.spool.Spool` file
(``<data-dir>/etcd-spool/<prefix hash>.spool``) and reading them back. While etcd is
unreachable the write queue (:mod:`pysyncer.store.etcd_writes`) acknowledges writes
before etcd has them; each such write is spooled first (:meth:`WriteSpool.record`, then
one group fsync) so that a killed process loses nothing it acknowledged. Records, each a
msgpack list starting with the format version:

* ``write``: a :class:`SpooledWrite`, the part of a queued write etcd does not have yet
  (mutations, or the records of an append with the log revisions they were given);
* ``done``: the write of that sequence number is in etcd (or was dropped);
* ``degraded``: written and fsynced before the first write of an outage is applied
  ahead of etcd, so a spool that is not empty means revisions may have been shown
  that etcd does not hold;
* ``closed``: the store was closed cleanly (the last record of a clean shutdown).

:func:`recover` reads a spool back: the writes not ``done``, in order, and whether the
last run ended cleanly. An unclean end with records in the spool makes the store write
a new log epoch before replaying (revisions shown to peers may otherwise be reused).
The file is emptied once the queue is (everything in etcd). Must not import the store
facade, the write queue, the mirror, the watch or the coordinator.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

from pysyncer.store.base import Fence, StoreCorruptError, StoreError
from pysyncer.store.spool import Spool

__all__ = ["SPOOL_DIR", "Recovery", "SpooledWrite", "WriteSpool", "recover", "spool_path"]

log = logging.getLogger(__name__)

SPOOL_DIR: Final = "etcd-spool"
"""Directory of the etcd store's spool files inside ``--data-dir``."""
_VERSION = 1
_WRITE, _DONE, _DEGRADED, _CLOSED = "write", "done", "degraded", "closed"

Mutation = tuple[bytes, bytes | None]
Entry = tuple[str, str, list[Any]]  # origin dc, instance id, record body (store.codec)


def spool_path(data_dir: Path, prefix: str) -> Path:
    """The spool file of the store under ``prefix`` in ``data_dir``."""
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:16]
    return data_dir / SPOOL_DIR / f"{digest}.spool"


@dataclass(frozen=True)
class SpooledWrite:
    """What etcd does not have yet of one acknowledged write.

    ``lease``: the member's lease when the write was queued (a fenced write replayed
    after a restart compares it: an expired lease fences the write off).
    ``first_revision``: for an append, the log revision its first entry was given.
    """

    seq: int
    fence: Fence | None
    lease: int
    size: int
    mutations: list[Mutation] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    delete_range: tuple[bytes, bytes] | None = None
    counts_deletes: bool = False
    first_revision: int = 0

    def encode(self) -> bytes:
        fence = None if self.fence is None else [self.fence.node, self.fence.epoch]
        body = [
            _VERSION, _WRITE, self.seq, fence, self.lease, self.size,
            [list(m) for m in self.mutations], [list(e) for e in self.entries],
            None if self.delete_range is None else list(self.delete_range),
            self.counts_deletes, self.first_revision,
        ]  # fmt: skip
        data: bytes = msgpack.packb(body, use_bin_type=True)
        return data

    @classmethod
    def decode(cls, fields: list[Any]) -> SpooledWrite:
        seq, fence, lease, size, mutations, entries, delete_range, counts, first = fields
        return cls(
            seq=int(seq),
            fence=None if fence is None else Fence(str(fence[0]), int(fence[1])),
            lease=int(lease),
            size=int(size),
            mutations=[(bytes(k), None if v is None else bytes(v)) for k, v in mutations],
            entries=[(str(dc), str(oid), list(body)) for dc, oid, body in entries],
            delete_range=None if delete_range is None else (delete_range[0], delete_range[1]),
            counts_deletes=bool(counts),
            first_revision=int(first),
        )


@dataclass(frozen=True)
class Recovery:
    """What a spool held at open: writes to replay (in order) and how the last run ended."""

    writes: list[SpooledWrite]
    records: int  # records of any kind in the file
    clean: bool  # the last record is ``closed``

    @property
    def unclean(self) -> bool:
        """Records are there and the run that wrote them did not close the store."""
        return self.records > 0 and not self.clean


def recover(payloads: list[bytes], where: str) -> Recovery:
    """The :class:`Recovery` of a spool's payloads; StoreCorruptError names ``where``."""
    writes: dict[int, SpooledWrite] = {}
    last_kind = ""
    for payload in payloads:
        try:
            item = msgpack.unpackb(payload, raw=False)
            version, kind, *fields = item
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
            raise StoreCorruptError(f"spool {where}: undecodable record: {exc}") from None
        if version != _VERSION:
            raise StoreCorruptError(
                f"spool {where}: record format {version}, this pysyncer reads {_VERSION} "
                "(upgrade pysyncer)"
            )
        try:
            if kind == _WRITE:
                write = SpooledWrite.decode(fields)
                writes[write.seq] = write
            elif kind == _DONE:
                writes.pop(int(fields[0]), None)
            elif kind not in (_DEGRADED, _CLOSED):
                raise ValueError(f"unknown record kind {kind!r}")
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreCorruptError(f"spool {where}: bad {kind!r} record: {exc}") from None
        last_kind = kind
    return Recovery(list(writes.values()), len(payloads), last_kind == _CLOSED)


class WriteSpool:
    """The etcd store's records on one :class:`Spool` (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.file = Spool(path)
        self._next_seq = 1

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def empty(self) -> bool:
        return self.file.empty

    def open(self) -> Recovery:
        """Lock and read the file; sequence numbers go on after the ones it holds."""
        payloads = self.file.open()
        try:
            recovery = recover(payloads, str(self.file.path))
        except BaseException:
            self.file.release()
            raise
        self._next_seq = max((w.seq for w in recovery.writes), default=0) + 1
        return recovery

    def next_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def record(self, write: SpooledWrite) -> None:
        """Buffer ``write``: durable after :meth:`sync`."""
        self.file.append(write.encode())

    async def sync(self) -> None:
        await self.file.sync()

    def degraded(self) -> None:
        """Durably mark that writes are about to be applied ahead of etcd (blocking);
        StoreError if the disk refuses."""
        self.file.append(_record(_DEGRADED))
        try:
            self.file.sync_now()
        except OSError as exc:
            raise StoreError(f"spool {self.file.path}: {exc}") from None

    def done(self, seq: int) -> None:
        """Note that write ``seq`` needs no replay (handed to the kernel, no fsync: a
        lost note only replays a write that is already in etcd, so a failure is logged)."""
        self.file.append(_record(_DONE, seq))
        try:
            self.file.push()
        except OSError as exc:
            log.warning("spool %s: cannot note a write done: %s", self.file.path, exc)

    def reset(self) -> None:
        """Empty the file: etcd holds every spooled write (a failure is logged: the
        writes would be replayed again, which repeats them harmlessly)."""
        try:
            self.file.reset()
        except OSError as exc:
            log.warning("spool %s: cannot empty it: %s", self.file.path, exc)

    async def close(self) -> None:
        """Close; a spool that still holds writes ends with the clean-shutdown record."""
        if not self.file.empty:
            self.file.append(_record(_CLOSED))
        await self.file.close()


def _record(kind: str, *fields: Any) -> bytes:
    data: bytes = msgpack.packb([_VERSION, kind, *fields], use_bin_type=True)
    return data
