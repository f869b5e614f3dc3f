"""A durable append-only file of framed records, fsynced in groups: the write-behind spool.

Owns the spool file's format and durability, not the meaning of its records (the etcd
store's records are :mod:`pysyncer.store.etcd_spool`'s). Each record is one frame:
``[payload length, u32 big-endian][CRC-32 of the payload, u32][payload]``.

* :meth:`Spool.append` buffers a frame; :meth:`Spool.sync` writes every buffered frame
  and fsyncs the file once for all of them; callers that arrive while an fsync runs
  share the next one (group commit), so a burst of writes costs a few fsyncs, not one
  each. The fsync runs in a worker thread: the event loop never waits on the disk.
* :meth:`Spool.push` hands buffered frames to the kernel without an fsync: they survive
  a killed process, not a power loss (for records whose loss is harmless).
* :meth:`Spool.open` takes an exclusive ``flock`` on the file (a second opener gets
  :class:`~pysyncer.store.base.StoreLockedError`) and returns the payloads of the valid
  frames; a torn or corrupt tail (the process died mid-write) is cut off.
* :meth:`Spool.reset` empties the file, durably.

Must not import a store backend or know what a payload means.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

from pysyncer.store.base import StoreError, StoreLockedError

__all__ = ["Spool"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")  # payload length, CRC-32
MAX_FRAME = 256 * 1024 * 1024  # a longer length field is damage, not a record


class Spool:
    """One spool file (see the module doc); open it before use, close it after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._buffer = bytearray()
        self._appended = 0  # frames appended since open
        self._durable = 0  # frames known to be on disk
        self._round: asyncio.Future[None] | None = None
        self.size = 0  # bytes in the file, buffered frames included
        self.fsyncs = 0

    def __repr__(self) -> str:
        return f"<Spool {self.path} {self.size} bytes>"

    @property
    def empty(self) -> bool:
        return self.size == 0

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> list[bytes]:
        """Lock the file (created if absent) and read it: the payloads of its frames."""
        if self._fd is not None:
            raise StoreError(f"spool {self.path} is already open")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"spool {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreLockedError(
                f"spool {self.path} is held by another process (same data dir?)"
            ) from None
        try:
            payloads, valid = self._read(fd)
            end = os.lseek(fd, 0, os.SEEK_END)
            if valid < end:
                log.warning(
                    "spool %s: cut a torn tail of %d bytes (the process died mid-write)",
                    self.path,
                    end - valid,
                )
                os.ftruncate(fd, valid)
                os.fsync(fd)
            os.lseek(fd, valid, os.SEEK_SET)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"spool {self.path}: {exc.strerror}") from None
        self._fd = fd
        self.size = valid
        self._appended = self._durable = 0
        return payloads

    @staticmethod
    def _read(fd: int) -> tuple[list[bytes], int]:
        """The payloads of the valid frames from the start, and where they end."""
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
        payloads: list[bytes] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if length > MAX_FRAME or len(payload) < length or zlib.crc32(payload) != crc:
                break
            payloads.append(payload)
            offset = start + length
        return payloads, offset

    async def close(self) -> None:
        """Write and fsync what is buffered, then release the file and its lock."""
        if self._fd is None:
            return
        if self._round is not None:
            with contextlib.suppress(OSError):
                await asyncio.shield(self._round)
        try:
            self.sync_now()
        finally:
            self.release()

    def release(self) -> None:
        """Close the file without writing what is buffered (drops the lock)."""
        fd, self._fd = self._fd, None
        self._buffer.clear()
        if fd is not None:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Buffer one frame (durable after the next :meth:`sync`)."""
        self._buffer += _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        self.size += _HEADER.size + len(payload)
        self._appended += 1

    def push(self) -> None:
        """Hand the buffered frames to the kernel (survives a killed process, no fsync)."""
        fd = self._check_open()
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            _write_all(fd, data)

    async def sync(self) -> None:
        """Return once every frame appended so far is on disk (group commit)."""
        target = self._appended
        while self._durable < target:
            if self._round is None:
                self._round = asyncio.ensure_future(self._fsync_round())
            await asyncio.shield(self._round)

    async def _fsync_round(self) -> None:
        try:
            upto = self._appended
            try:
                self.push()
                await asyncio.to_thread(os.fsync, self._check_open())
            except OSError as exc:
                raise StoreError(f"spool {self.path}: write failed: {exc}") from None
            self.fsyncs += 1
            self._durable = max(self._durable, upto)
        finally:
            self._round = None

    def sync_now(self) -> None:
        """:meth:`sync`, blocking (once per outage, at close)."""
        if self._durable >= self._appended:
            return
        upto = self._appended
        self.push()
        os.fsync(self._check_open())
        self.fsyncs += 1
        self._durable = max(self._durable, upto)

    def reset(self) -> None:
        """Empty the file, durably (its records are no longer needed)."""
        fd = self._check_open()
        self._buffer.clear()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.fsync(fd)
        self.fsyncs += 1
        self.size = 0
        self._durable = self._appended

    def _check_open(self) -> int:
        if self._fd is None:
            raise StoreError(f"spool {self.path} is not open")
        return self._fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
