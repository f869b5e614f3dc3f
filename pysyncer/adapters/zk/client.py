"""The request API of the asyncio ZooKeeper client: one method per ZooKeeper operation.

Owns what each request sends and reads (create with its flags and ACLs, ensure_path,
delete, exists, get/set data, children, sync, multi), path checks, and which watch
table a watching read arms on success. The session, connection, reconnection and watch
delivery are :class:`~pysyncer.adapters.zk.session.ZkSession`'s; this module adds no
state of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from pysyncer.adapters.zk import proto
from pysyncer.adapters.zk.errors import BadArgumentsError, NodeExistsError, NoNodeError, error_for
from pysyncer.adapters.zk.proto import CreateFlag, Err, MultiOp, Op, Reader, Stat, Writer
from pysyncer.adapters.zk.session import SessionEvent, Watcher, WatchEvent, ZkSession, parse_hosts

__all__ = ["SessionEvent", "WatchEvent", "ZkClient", "parse_hosts"]


class ZkClient(ZkSession):
    """One ZooKeeper session and the requests it sends."""

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        ephemeral: bool = False,
        sequential: bool = False,
        make_parents: bool = False,
    ) -> str:
        """Create a node; returns its path (with the sequence suffix when sequential)."""
        _check_path(path)
        flags = (CreateFlag.EPHEMERAL if ephemeral else 0) | (
            CreateFlag.SEQUENTIAL if sequential else 0
        )
        body = Writer().string(path).buffer(data).acl(self.acl).i32(flags).getvalue()
        try:
            return str(await self._call(Op.CREATE, body, path, _read_string))
        except NoNodeError:
            if not make_parents:
                raise
        await self.ensure_path(path.rsplit("/", 1)[0] or "/")
        return str(await self._call(Op.CREATE, body, path, _read_string))

    async def ensure_path(self, path: str) -> None:
        """Create ``path`` and its missing parents as persistent empty nodes."""
        if path in ("", "/"):
            return
        _check_path(path)
        if await self.exists(path) is not None:
            return
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:depth])
            with contextlib.suppress(NodeExistsError):
                body = Writer().string(sub).buffer(b"").acl(self.dir_acl).i32(0).getvalue()
                await self._call(Op.CREATE, body, sub, _read_string)

    async def delete(self, path: str, version: int = -1) -> None:
        _check_path(path)
        await self._call(Op.DELETE, Writer().string(path).i32(version).getvalue(), path)

    async def exists(self, path: str, watch: Watcher | None = None) -> Stat | None:
        """The node's Stat, or None; ``watch`` fires on create, change or delete."""
        _check_path(path)
        body = Writer().string(path).boolean(watch is not None).getvalue()
        on_ok = on_no_node = None
        if watch is not None:
            on_ok = self._adder(self._data_watches, path, watch)
            on_no_node = self._adder(self._exist_watches, path, watch)
        try:
            stat: Stat = await self._call(
                Op.EXISTS, body, path, Reader.stat, on_ok=on_ok, on_no_node=on_no_node
            )
        except NoNodeError:
            return None
        return stat

    async def get_data(self, path: str, watch: Watcher | None = None) -> tuple[bytes, Stat]:
        _check_path(path)
        body = Writer().string(path).boolean(watch is not None).getvalue()
        on_ok = self._adder(self._data_watches, path, watch) if watch is not None else None
        result: tuple[bytes, Stat] = await self._call(
            Op.GET_DATA, body, path, _read_data, on_ok=on_ok
        )
        return result

    async def set_data(self, path: str, data: bytes, version: int = -1) -> Stat:
        _check_path(path)
        body = Writer().string(path).buffer(data).i32(version).getvalue()
        stat: Stat = await self._call(Op.SET_DATA, body, path, Reader.stat)
        return stat

    async def get_children(self, path: str, watch: Watcher | None = None) -> list[str]:
        """Child names (getChildren); ``watch`` fires when the set of children changes."""
        _check_path(path)
        body = Writer().string(path).boolean(watch is not None).getvalue()
        on_ok = self._adder(self._child_watches, path, watch) if watch is not None else None
        children: list[str] = await self._call(
            Op.GET_CHILDREN, body, path, Reader.strings, on_ok=on_ok
        )
        return children

    async def get_children2(
        self, path: str, watch: Watcher | None = None
    ) -> tuple[list[str], Stat]:
        """Child names and the parent's Stat (getChildren2)."""
        _check_path(path)
        body = Writer().string(path).boolean(watch is not None).getvalue()
        on_ok = self._adder(self._child_watches, path, watch) if watch is not None else None
        result: tuple[list[str], Stat] = await self._call(
            Op.GET_CHILDREN2, body, path, _read_children2, on_ok=on_ok
        )
        return result

    async def sync(self, path: str) -> None:
        _check_path(path)
        await self._call(Op.SYNC, Writer().string(path).getvalue(), path, _read_string)

    async def multi(self, ops: Sequence[MultiOp]) -> list[str | Stat | None]:
        """Apply ``ops`` atomically; raises the first failing op's error (nothing applied)."""
        for op in ops:
            _check_path(op.path)
        results = await self._call(Op.MULTI, proto.encode_multi(ops), "", proto.decode_multi)
        values: list[str | Stat | None] = []
        for index, (_op, err, value) in enumerate(results):
            if err not in (Err.OK, Err.RUNTIME_INCONSISTENCY):
                raise error_for(err, f"multi op {index}", ops[index].path)
            values.append(value)
        return values


def _check_path(path: str) -> None:
    if not path.startswith("/") or (len(path) > 1 and path.endswith("/")) or "//" in path:
        raise BadArgumentsError(f"zookeeper path {path!r} is not absolute and normalised")


def _read_string(r: Reader) -> str:
    return r.string() or ""


def _read_data(r: Reader) -> tuple[bytes, Stat]:
    data = r.buffer() or b""
    return data, r.stat()


def _read_children2(r: Reader) -> tuple[list[str], Stat]:
    children = r.strings()
    return children, r.stat()
