"""Key layout and value codec of the etcd store backend.

Owns the mapping between the store's data and etcd keys/values under one prefix (by
default :data:`DEFAULT_PREFIX`): which key holds what (:data:`KEY_TABLE`, rendered into
``docs/store.md`` by :func:`render_markdown` and checked against it by the tests), how
names are escaped inside keys, and the versioned msgpack encoding of every value. The
record body inside log and exported-state values is :mod:`pysyncer.store.codec`'s. Pure
functions only: must not import the etcd client or the store, and does no I/O.

Every value is msgpack of a list whose first element is :data:`FORMAT_VERSION`; a
reader refuses a value with a newer version (a newer pysyncer wrote it) and a later
release migrates older ones. Names (data centers, instance ids, service texts, member
names) are percent-escaped in keys, so ``/`` inside a name never splits a key and every
name maps to exactly one key.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import msgpack

from pysyncer.model import Record
from pysyncer.store.base import (
    SLOT_COUNT,
    MappingEntry,
    PeerCursor,
    StoreCorruptError,
    StoreError,
    check_digest,
    check_slot,
)
from pysyncer.store.codec import record_from_body

__all__ = [
    "DEFAULT_PREFIX",
    "FORMAT_VERSION",
    "KEY_TABLE",
    "KeyRow",
    "Kind",
    "Layout",
    "ParsedKey",
    "decode_counter",
    "decode_cursor",
    "decode_epoch",
    "decode_exported",
    "decode_log",
    "decode_mapping",
    "decode_member",
    "decode_meta",
    "decode_slot_table",
    "decode_trust",
    "encode_counter",
    "encode_cursor",
    "encode_epoch",
    "encode_exported",
    "encode_log",
    "encode_mapping",
    "encode_member",
    "encode_meta",
    "encode_slot_table",
    "encode_trust",
    "render_markdown",
]

DEFAULT_PREFIX = "/pysyncer/{dc}/"
"""Key prefix of a data center's store; ``{dc}`` is replaced by the data center name."""

FORMAT_VERSION: int = 1
"""Version written as the first element of every value."""

_REVISION_DIGITS = 20  # zero-padded revisions sort like numbers


class Kind(enum.Enum):
    """What a key under the prefix holds."""

    META = "meta"
    COUNTER = "counter"
    LOG = "log"
    EXPORTED = "exported"
    MAPPING = "mapping"
    CURSOR = "cursor"
    TRUST = "trust"
    MEMBER = "member"
    SLOT_TABLE = "slot_table"
    SLOT_EPOCH = "slot_epoch"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key split into its kind and the names inside it."""

    kind: Kind
    parts: tuple[str, ...] = ()
    revision: int = 0


_FIXED_KEYS: dict[Kind, str] = {
    Kind.META: "meta",
    Kind.COUNTER: "log/last",
    Kind.SLOT_TABLE: "slots/table",
    Kind.SLOT_EPOCH: "slots/epoch",
}
"""Keys that hold one value each, relative to the prefix."""

_FIXED_BY_KEY = {key: kind for kind, key in _FIXED_KEYS.items()}

_NAMED_KEYS: dict[Kind, tuple[str, tuple[str, ...]]] = {
    Kind.LOG: ("log/r/", (f"revision, {_REVISION_DIGITS} digits",)),
    Kind.EXPORTED: ("exp/", ("service text", "instance id")),
    Kind.MAPPING: ("map/", ("origin dc", "origin instance id")),
    Kind.CURSOR: ("cur/", ("member", "peer dc")),
    Kind.TRUST: ("trust/", ("peer dc",)),
    Kind.MEMBER: ("members/", ("node",)),
}
"""Key families: the head under the prefix and the escaped names after it."""

_OTHER = ParsedKey(Kind.OTHER)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One row of the key table: what a key holds and who writes it."""

    kind: Kind
    value: str
    written_by: str

    def pattern(self) -> str:
        """The key under the prefix ``<P>``, names in angle brackets."""
        if self.kind in _FIXED_KEYS:
            return "<P>" + _FIXED_KEYS[self.kind]
        head, names = _NAMED_KEYS[self.kind]
        return "<P>" + head + "/".join(f"<{name}>" for name in names)


KEY_TABLE: tuple[KeyRow, ...] = (
    KeyRow(
        Kind.META,
        "`[log epoch]`",
        "`open()` of the first store (create-if-absent txn); a renumbering flush",
    ),
    KeyRow(
        Kind.COUNTER,
        "`[last revision, writer token]` (the revision counter)",
        "every append txn",
    ),
    KeyRow(
        Kind.LOG,
        "`[origin dc, instance id, [service key 5-tuple, instance fields or nil]]`",
        "append; trimmed by one range delete",
    ),
    KeyRow(
        Kind.EXPORTED,
        "`[revision, origin dc, instance id, record body]` (live records only)",
        "append",
    ),
    KeyRow(
        Kind.MAPPING,
        "`[service text, slot, digest, origin revision, local service id, local instance "
        "id, registered at, renewed at]`",
        "`apply_batch`, `put_mappings`, `delete_mappings`",
    ),
    KeyRow(
        Kind.CURSOR,
        "`[revision, epoch]`",
        "`apply_batch`, `set_cursor`, `delete_cursor` of that member",
    ),
    KeyRow(
        Kind.TRUST,
        "`[ownership group]` followed for that data center (shared by the members)",
        "`set_trusted_group` when a link establishes or forgets a group",
    ),
    KeyRow(
        Kind.MEMBER,
        "`[{info}]`, bound to the member's lease",
        "`join`; gone on `leave` or lease expiry",
    ),
    KeyRow(
        Kind.SLOT_TABLE,
        "`[epoch, [owner names], [[name index, run length], ...]]` (run-length encoded: "
        "a few dozen bytes for a balanced table)",
        "`write_slot_table` (CAS on its `mod_revision`)",
    ),
    KeyRow(
        Kind.SLOT_EPOCH,
        "`[epoch]` (compared byte for byte by fenced writes)",
        "`write_slot_table`, same txn",
    ),
)
"""Every key under the prefix, in the order ``docs/store.md`` lists them."""


def render_markdown() -> str:
    """:data:`KEY_TABLE` as the Markdown table that ``docs/store.md`` carries."""
    lines = ["| key | value (after the version) | written by |", "|---|---|---|"]
    for row in KEY_TABLE:
        lines.append(f"| `{row.pattern()}` | {row.value} | {row.written_by} |")
    return "\n".join(lines)


def _q(name: str) -> str:
    return quote(name, safe="")


class Layout:
    """The keys of one store: everything lives under ``prefix`` (e.g. ``/pysyncer/dc1/``)."""

    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd key prefix must start and end with '/': {prefix!r}")
        self.prefix_text = prefix
        self.prefix = prefix.encode()
        fixed = {kind: self.prefix + key.encode() for kind, key in _FIXED_KEYS.items()}
        heads = {kind: self.prefix + head.encode() for kind, (head, _) in _NAMED_KEYS.items()}
        self.meta = fixed[Kind.META]
        self.counter = fixed[Kind.COUNTER]
        self.slot_table = fixed[Kind.SLOT_TABLE]
        self.slot_epoch = fixed[Kind.SLOT_EPOCH]
        self.log_prefix = heads[Kind.LOG]
        self.exported_prefix = heads[Kind.EXPORTED]
        self.mapping_prefix = heads[Kind.MAPPING]
        self.cursor_prefix = heads[Kind.CURSOR]
        self.trust_prefix = heads[Kind.TRUST]
        self.member_prefix = heads[Kind.MEMBER]

    def log(self, revision: int) -> bytes:
        return self.log_prefix + f"{revision:0{_REVISION_DIGITS}d}".encode()

    def exported(self, service_text: str, instance_id: str) -> bytes:
        return self.exported_prefix + f"{_q(service_text)}/{_q(instance_id)}".encode()

    def mapping(self, origin_dc: str, origin_instance_id: str) -> bytes:
        return self.mapping_prefix + f"{_q(origin_dc)}/{_q(origin_instance_id)}".encode()

    def cursor(self, member: str, peer_dc: str) -> bytes:
        return self.cursor_prefix + f"{_q(member)}/{_q(peer_dc)}".encode()

    def trust(self, peer_dc: str) -> bytes:
        return self.trust_prefix + _q(peer_dc).encode()

    def member(self, node: str) -> bytes:
        return self.member_prefix + _q(node).encode()

    def parse(self, key: bytes) -> ParsedKey:
        """Kind and names of a key under the prefix (``OTHER`` for foreign keys)."""
        if not key.startswith(self.prefix):
            return ParsedKey(Kind.OTHER)
        rest = key[len(self.prefix) :].decode("utf-8", "replace")
        for kind, (head, names) in _NAMED_KEYS.items():
            if not rest.startswith(head):
                continue
            tail = rest[len(head) :]
            if kind is Kind.LOG:
                return ParsedKey(Kind.LOG, revision=int(tail)) if tail.isdigit() else _OTHER
            parts = tail.split("/")
            if len(parts) != len(names):
                return _OTHER
            return ParsedKey(kind, tuple(unquote(part) for part in parts))
        return ParsedKey(_FIXED_BY_KEY.get(rest, Kind.OTHER))


# -- value codec ----------------------------------------------------------------------


def _pack(*items: Any) -> bytes:
    data: bytes = msgpack.packb([FORMAT_VERSION, *items], use_bin_type=True)
    return data


def _unpack(value: bytes, what: str, size: int) -> list[Any]:
    try:
        items = msgpack.unpackb(value, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise StoreCorruptError(f"etcd store: undecodable {what}: {exc}") from None
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        raise StoreCorruptError(f"etcd store: {what} is not a versioned value")
    if items[0] > FORMAT_VERSION:
        raise StoreError(
            f"etcd store: {what} has format version {items[0]}, newer than "
            f"{FORMAT_VERSION} known to this pysyncer: upgrade pysyncer"
        )
    if len(items) != size + 1:
        raise StoreCorruptError(f"etcd store: {what} has {len(items) - 1} fields, not {size}")
    return items[1:]


def encode_meta(epoch: str) -> bytes:
    return _pack(epoch)


def decode_meta(value: bytes) -> str:
    (epoch,) = _unpack(value, "meta", 1)
    return str(epoch)


def encode_counter(last: int, token: str) -> bytes:
    return _pack(last, token)


def decode_counter(value: bytes) -> tuple[int, str]:
    last, token = _unpack(value, "log counter", 2)
    return int(last), str(token)


def _record(origin_dc: Any, instance_id: Any, revision: int, body: Any, what: str) -> Record:
    return record_from_body(origin_dc, instance_id, revision, body, f"etcd store {what}")


def encode_log(record: Record, body: list[Any]) -> bytes:
    return _pack(record.origin_dc, record.instance_id, body)


def decode_log(revision: int, value: bytes) -> Record:
    what = f"log record at revision {revision}"
    origin_dc, instance_id, body = _unpack(value, what, 3)
    return _record(origin_dc, instance_id, revision, body, what)


def encode_exported(record: Record, body: list[Any]) -> bytes:
    return _pack(record.revision, record.origin_dc, record.instance_id, body)


def decode_exported(value: bytes) -> Record:
    revision, origin_dc, instance_id, body = _unpack(value, "exported record", 4)
    return _record(origin_dc, instance_id, int(revision), body, "exported record")


def encode_mapping(entry: MappingEntry) -> bytes:
    return _pack(
        entry.service_text,
        check_slot(entry.slot),
        check_digest(entry.digest),
        entry.origin_revision,
        entry.local_service_id,
        entry.local_instance_id,
        float(entry.registered_at),
        float(entry.renewed_at),
    )


def decode_mapping(origin_dc: str, origin_instance_id: str, value: bytes) -> MappingEntry:
    fields = _unpack(value, f"mapping entry {origin_dc}/{origin_instance_id}", 8)
    service_text, slot, digest, revision, local_service, local_instance, reg, renewed = fields
    return MappingEntry(
        origin_dc=origin_dc,
        origin_instance_id=origin_instance_id,
        service_text=str(service_text),
        slot=int(slot),
        digest=int(digest),
        origin_revision=int(revision),
        local_service_id=str(local_service),
        local_instance_id=str(local_instance),
        registered_at=float(reg),
        renewed_at=float(renewed),
    )


def encode_cursor(revision: int, epoch: str) -> bytes:
    return _pack(revision, epoch)


def decode_cursor(peer_dc: str, value: bytes) -> PeerCursor:
    revision, epoch = _unpack(value, f"cursor of {peer_dc}", 2)
    return PeerCursor(peer_dc, int(revision), str(epoch))


def encode_trust(group: str) -> bytes:
    return _pack(group)


def decode_trust(peer_dc: str, value: bytes) -> str:
    (group,) = _unpack(value, f"trusted group of {peer_dc}", 1)
    return str(group)


def encode_member(info: dict[str, str]) -> bytes:
    return _pack(info)


def decode_member(value: bytes) -> dict[str, str]:
    (info,) = _unpack(value, "member", 1)
    if not isinstance(info, dict):
        raise StoreCorruptError("etcd store: member info is not a map")
    return {str(k): str(v) for k, v in info.items()}


def encode_epoch(epoch: int) -> bytes:
    """The slot-table epoch key's value; fenced writes compare it byte for byte."""
    return _pack(epoch)


def decode_epoch(value: bytes) -> int:
    (epoch,) = _unpack(value, "slot epoch", 1)
    return int(epoch)


def encode_slot_table(epoch: int, owners: Sequence[str]) -> bytes:
    """Run-length encoded: ``[epoch, [name, ...], [[name index, run length], ...]]``."""
    if len(owners) != SLOT_COUNT:
        raise ValueError(f"a slot table has {SLOT_COUNT} owners, not {len(owners)}")
    names: dict[str, int] = {}
    runs: list[list[int]] = []
    for owner in owners:
        index = names.setdefault(owner, len(names))
        if runs and runs[-1][0] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, 1])
    return _pack(epoch, list(names), runs)


def decode_slot_table(value: bytes) -> tuple[int, tuple[str, ...]]:
    epoch, names, runs = _unpack(value, "slot table", 3)
    owners: list[str] = []
    try:
        for index, length in runs:
            owners.extend([str(names[index])] * int(length))
    except (ValueError, TypeError, IndexError) as exc:
        raise StoreCorruptError(f"etcd store: undecodable slot table: {exc}") from None
    if len(owners) != SLOT_COUNT:
        raise StoreCorruptError(f"etcd store: slot table covers {len(owners)} slots")
    return int(epoch), tuple(owners)
