"""Records to and from the wire of the ``pysyncer.sync.v1`` RPC, bounded and validated.

Owns the payload encoding, nothing else: no sockets, no asyncio. A batch carries its
records as msgpack in one ``bytes`` field (chosen by ``benchmarks/bench_rpc_payload.py``:
about twice as fast as one protobuf message per record, and smaller; docs/rpc.md). The
payload is ``[services, rows]``:

* ``services``: ``[[project, environment, app, name, version], ...]``, each service once;
* ``rows``: ``[[service_index, instance_id, revision, instance], ...]`` where
  ``instance`` is nil for a deletion (tombstone) or
  ``[host, [endpoints...], status, {properties}, health_interval, health_times]``.

Every record of a batch has the batch's data center as origin (a syncer exports only its
own instances), so the origin is sent once, in the message.

Bounds, one place for all of them: a batch holds at most :data:`MAX_BATCH_RECORDS`
records and :data:`MAX_PAYLOAD_BYTES` of payload (``RECORD_BYTES`` per record of the
largest batch: twice a typical instance), and gRPC channels and servers refuse messages
past :data:`MAX_MESSAGE_BYTES`; a batch of larger records is split into several
messages by :func:`encode_parts`. One slot's state is at most :data:`MAX_SLOT_RECORDS`
records (every instance of a service shares its slot). Decoding never trusts the
peer: sizes are bounded before and while unpacking, every field is type-checked, and any
defect raises :class:`~pysyncer.rpc.errors.PayloadError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from sys import intern
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from pysyncer._core import digest
from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc.errors import OversizedPayloadError, PayloadError

__all__ = [
    "MAX_BATCH_RECORDS",
    "MAX_MESSAGE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_SLOT_RECORDS",
    "MAX_STRING_BYTES",
    "Digests",
    "PeerBatch",
    "ServiceKeys",
    "SlotRecords",
    "decode_records",
    "encode_parts",
    "encode_records",
    "peer_batch",
    "read_digest_table",
    "read_peer_batch",
    "read_slot_batch",
    "slot_batch",
]

MAX_BATCH_RECORDS = 10_000  # records in one batch: the most a Watch or PullRange batch holds
RECORD_BYTES = 400  # room per record; an instance with 2 endpoints and 6 properties takes ~190
MAX_PAYLOAD_BYTES = MAX_BATCH_RECORDS * RECORD_BYTES  # the largest legitimate batch (~3.8 MiB)
MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024  # gRPC send/receive limit: payload + fields
MAX_SLOT_RECORDS = 100_000  # records of one slot in a PullSlots answer (a slot holds services)
MAX_STRING_BYTES = 64 * 1024  # any one string: ids, hosts, endpoints, property values
MAX_LIST_ITEMS = 4096  # endpoints of an instance
MAX_PROPERTIES = 4096  # properties of an instance
SERVICES_KEPT = 4096  # service keys a decoder keeps (ServiceKeys) for its next batches
_U32 = 0xFFFF_FFFF
SLOT_COUNT = digest.SLOT_COUNT
TABLE_BYTES = digest.TABLE_BYTES  # 131072
_U64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class PeerBatch:
    """One batch of a data center's changes from a peer syncer, as the client sees it
    (a ``Watch`` stream item or a ``PullRange`` answer).

    After applying ``records`` the receiver has every change up to ``revision``.
    ``reset``: the requested revision is no longer in the change log (or the log was
    replaced: another ``epoch``); fall back to digests. ``heartbeat``: a keepalive without
    records. ``more``: a ranged pull was cut by its limit; pull again from ``revision``.
    """

    dc: str
    epoch: str
    revision: int
    records: tuple[Record, ...] = ()
    reset: bool = False
    heartbeat: bool = False
    more: bool = False
    committed_at: float = 0.0  # origin wall clock of the newest record's commit (0: unknown)


class SlotRecords(NamedTuple):
    """Part (or all, when ``last``) of the current state of one slot."""

    slot: int
    records: list[Record]
    last: bool


class Digests(NamedTuple):
    """A data center's slot digest table (``SlotDigestTable.from_bytes(table)``)."""

    revision: int
    epoch: str
    table: bytes


# -- encoding ------------------------------------------------------------------------------


def encode_records(dc: str, records: Sequence[Record], *, tombstones: bool = True) -> bytes:
    """The msgpack payload of ``records``, all of which must have ``dc`` as their origin.

    Raises PayloadError for a record of another origin, a tombstone where none is allowed,
    an inconsistent record, or too many records; OversizedPayloadError when the payload
    exceeds what one message can carry (send fewer records per batch).
    """
    if len(records) > MAX_BATCH_RECORDS:
        raise PayloadError(f"{len(records)} records in one batch; the limit is {MAX_BATCH_RECORDS}")
    services: dict[ServiceKey, int] = {}
    table: list[tuple[str, str, str, str, str]] = []
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for rec in records:
        if rec.origin_dc != dc:
            raise PayloadError(
                f"cannot send record {rec.instance_id!r} of data center {rec.origin_dc!r} "
                f"in a batch of {dc!r}: a syncer exports only its own data center"
            )
        key = rec.service
        index = services.get(key)
        if index is None:
            index = services[key] = len(table)
            table.append((key.project, key.environment, key.app, key.name, key.version))
        inst = rec.instance
        if inst is None:
            if not tombstones:
                raise PayloadError(f"tombstone {rec.instance_id!r} where only live records go")
            append((index, rec.instance_id, rec.revision, None))
            continue
        if inst.service != key or inst.instance_id != rec.instance_id:
            raise PayloadError(
                f"record {rec.instance_id!r} holds instance {inst.instance_id!r} "
                f"of {inst.service.text()!r}, not of {key.text()!r}"
            )
        append(
            (
                index,
                rec.instance_id,
                rec.revision,
                (
                    inst.host_name,
                    inst.endpoints,
                    inst.status,
                    inst.properties_dict(),
                    inst.health_interval,
                    inst.health_times,
                ),
            )
        )
    try:
        payload: bytes = msgpack.packb((table, rows), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"cannot encode records: {exc}") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise OversizedPayloadError(
            f"{len(records)} records encode to {len(payload)} bytes; "
            f"the limit is {MAX_PAYLOAD_BYTES} (send fewer records per batch)"
        )
    return payload


def encode_parts(
    dc: str, records: Sequence[Record], *, tombstones: bool = True
) -> list[tuple[Sequence[Record], bytes]]:
    """``records`` encoded in as few payloads as fit a message each (halving when too big).

    Raises OversizedPayloadError only when a single record does not fit.
    """
    try:
        return [(records, encode_records(dc, records, tombstones=tombstones))]
    except OversizedPayloadError:
        if len(records) <= 1:
            raise
    half = len(records) // 2
    return encode_parts(dc, records[:half], tombstones=tombstones) + encode_parts(
        dc, records[half:], tombstones=tombstones
    )


def peer_batch(
    dc: str,
    epoch: str,
    revision: int,
    records: Sequence[Record] = (),
    *,
    payload: bytes | None = None,
    reset: bool = False,
    heartbeat: bool = False,
    more: bool = False,
    committed_at: float = 0.0,
) -> pb.PeerBatch:
    """The wire message of one batch of changes (see :class:`PeerBatch`).

    ``payload``: the records already encoded by :func:`encode_parts` (not again).
    """
    if payload is None:
        payload = encode_records(dc, records) if records else b""
    return pb.PeerBatch(
        dc=dc,
        epoch=epoch,
        revision=revision,
        reset=reset,
        heartbeat=heartbeat,
        more=more,
        count=len(records),
        records=payload,
        committed_at=committed_at,
    )


def slot_batch(
    dc: str,
    slot: int,
    records: Sequence[Record],
    *,
    last: bool,
    payload: bytes | None = None,
) -> pb.SlotBatch:
    """The wire message of (part of) one slot's current state: live records of that slot."""
    for rec in records:
        if rec.slot != slot:
            raise PayloadError(f"record {rec.instance_id!r} is in slot {rec.slot}, not {slot}")
    if payload is None:
        payload = encode_records(dc, records, tombstones=False) if records else b""
    return pb.SlotBatch(dc=dc, slot=slot, last=last, count=len(records), records=payload)


# -- decoding ------------------------------------------------------------------------------


def _fail(what: str) -> PayloadError:
    return PayloadError(f"malformed record batch: {what}")


def _string(value: object, what: str) -> str:
    if type(value) is not str:
        raise _fail(f"{what} is {type(value).__name__}, not a string")
    return value


def _count(value: object, what: str, high: int) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise _fail(f"{what} {value!r} is not an integer in 0..{high}")
    return value


def _service(raw: object) -> ServiceKey:
    if type(raw) is not tuple or len(raw) != 5:
        raise _fail(f"service {raw!r} is not [project, environment, app, name, version]")
    project, environment, app, name, version = (_string(v, "a service field") for v in raw)
    return ServiceKey(app, name, version, environment, project)


ServiceKeys = dict[object, ServiceKey]
"""The service keys a decoder has checked, by their wire form: a stream's batches name
the same services again and again (one per decoder; at most :data:`SERVICES_KEPT`)."""


def _services(raw_services: tuple[object, ...], known: ServiceKeys | None) -> list[ServiceKey]:
    """The checked service key of each wire form, from ``known`` when it holds it."""
    if known is None:
        return [_service(raw) for raw in raw_services]
    keys = []
    for raw in raw_services:
        try:
            key = known.get(raw)
        except TypeError:  # not hashable, so not a service either: _service names why
            key = None
        if key is None:
            key = _service(raw)
            if len(known) >= SERVICES_KEPT:
                known.clear()
            known[raw] = key
        keys.append(key)
    return keys


_STR_ONLY = frozenset((str,))


def _instance(service: ServiceKey, iid: str, raw: object) -> Instance:
    # one combined check on the fast path; the slow path below names the defect
    if (
        type(raw) is tuple
        and len(raw) == 6
        and type(raw[0]) is str
        and type(raw[1]) is tuple
        and len(raw[1]) <= MAX_LIST_ITEMS
        and _STR_ONLY.issuperset(map(type, raw[1]))
        and type(raw[2]) is str
        and type(raw[3]) is dict
        and _STR_ONLY.issuperset(map(type, raw[3]))
        and _STR_ONLY.issuperset(map(type, raw[3].values()))
        and type(raw[4]) is int
        and 0 <= raw[4] <= _U32
        and type(raw[5]) is int
        and 0 <= raw[5] <= _U32
    ):
        host, endpoints, status, props, interval, times = raw
        # interned: a handful of words, one string each instead of one per copy held
        status = intern(status)
        return Instance(
            service, iid, host, endpoints, status, MappingProxyType(props), interval, times
        )
    raise _instance_defect(iid, raw)


def _instance_defect(iid: str, raw: object) -> PayloadError:
    if type(raw) is not tuple or len(raw) != 6:
        return _fail(f"instance {iid!r} is not [host, endpoints, status, properties, i, t]")
    host, endpoints, status, props, interval, times = raw
    try:
        _string(host, f"host of {iid!r}")
        if type(endpoints) is not tuple or len(endpoints) > MAX_LIST_ITEMS:
            raise _fail(f"endpoints of {iid!r} are not a list of at most {MAX_LIST_ITEMS}")
        for endpoint in endpoints:
            _string(endpoint, f"an endpoint of {iid!r}")
        _string(status, f"status of {iid!r}")
        if type(props) is not dict:
            raise _fail(f"properties of {iid!r} are not a map")
        for k, v in props.items():
            _string(k, f"a property name of {iid!r}")
            _string(v, f"property {k!r} of {iid!r}")
        _count(interval, f"health interval of {iid!r}", _U32)
        _count(times, f"health times of {iid!r}", _U32)
    except PayloadError as exc:
        return exc
    return _fail(f"instance {iid!r} is malformed")  # pragma: no cover - the checks agree


def decode_records(
    dc: str,
    payload: bytes,
    count: int,
    *,
    tombstones: bool = True,
    max_revision: int | None = None,
    known: ServiceKeys | None = None,
) -> list[Record]:
    """The records of a payload from data center ``dc``; inverse of :func:`encode_records`.

    ``count`` is the number of records the message announces; ``max_revision`` bounds
    the records' revisions (a batch never carries changes past its own revision);
    ``known``: service keys decoded before, reused (and added to).
    Raises PayloadError (OversizedPayloadError for size) on any defect.
    """
    if not dc:
        raise _fail("the batch names no origin data center")
    if count > MAX_BATCH_RECORDS:
        raise OversizedPayloadError(f"a batch of {count} records; the limit is {MAX_BATCH_RECORDS}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise OversizedPayloadError(
            f"a payload of {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    if count == 0:
        if payload:
            raise _fail(f"{len(payload)} bytes of records in a batch announcing none")
        return []
    try:
        unpacked = msgpack.unpackb(
            payload,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=MAX_STRING_BYTES,
            max_bin_len=0,
            max_ext_len=0,
            max_array_len=max(count, MAX_LIST_ITEMS),
            max_map_len=MAX_PROPERTIES,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # includes ExtraData
        raise _fail(f"not a valid msgpack payload ({type(exc).__name__}: {exc})") from None
    if type(unpacked) is not tuple or len(unpacked) != 2:
        raise _fail("the payload is not [services, records]")
    raw_services, rows = unpacked
    if type(raw_services) is not tuple or type(rows) is not tuple:
        raise _fail("the payload is not [services, records]")
    if len(rows) != count:
        raise _fail(f"{len(rows)} records where the batch announces {count}")
    services = _services(raw_services, known)
    limit = _U64 if max_revision is None else max_revision
    out: list[Record] = []
    n_services = len(services)
    for row in rows:
        if (
            type(row) is tuple
            and len(row) == 4
            and type(row[0]) is int
            and 0 <= row[0] < n_services
            and type(row[1]) is str
            and row[1]
            and type(row[2]) is int
            and 0 <= row[2] <= limit
        ):
            index, iid, revision, fields = row
        else:
            raise _row_defect(row, n_services, limit)
        service = services[index]
        if fields is None:
            if not tombstones:
                raise _fail(f"tombstone {iid!r} where only live records go")
            out.append(Record(dc, service, iid, revision, None))
        else:
            out.append(Record(dc, service, iid, revision, _instance(service, iid, fields)))
    return out


def _row_defect(row: object, n_services: int, limit: int) -> PayloadError:
    if type(row) is not tuple or len(row) != 4:
        return _fail(f"record {row!r:.80} is not [service, id, revision, instance]")
    index, iid, revision, _ = row
    if type(index) is not int or not 0 <= index < n_services:
        return _fail(f"service index {index!r} is not one of the {n_services} services")
    if type(iid) is not str or not iid:
        return _fail(f"instance id {iid!r:.80} is not a non-empty string")
    return _fail(f"revision {revision!r} of {iid!r} is not an integer in 0..{limit}")


def read_peer_batch(msg: pb.PeerBatch, known: ServiceKeys | None = None) -> PeerBatch:
    """The :class:`PeerBatch` of a wire message; raises PayloadError when malformed.

    ``known``: as for :func:`decode_records`.
    """
    if (msg.reset or msg.heartbeat) and msg.count:
        raise _fail("a reset or heartbeat batch carries records")
    records = decode_records(msg.dc, msg.records, msg.count, max_revision=msg.revision, known=known)
    return PeerBatch(
        dc=msg.dc,
        epoch=msg.epoch,
        revision=msg.revision,
        records=tuple(records),
        reset=msg.reset,
        heartbeat=msg.heartbeat,
        more=msg.more,
        committed_at=msg.committed_at,
    )


def read_slot_batch(msg: pb.SlotBatch, wanted: Iterable[int] | None = None) -> SlotRecords:
    """The records of one slot batch; every record must belong to the batch's slot."""
    if msg.slot >= SLOT_COUNT:
        raise _fail(f"slot {msg.slot} is outside 0..{SLOT_COUNT - 1}")
    if wanted is not None and msg.slot not in wanted:
        raise _fail(f"slot {msg.slot} was not asked for")
    records = decode_records(msg.dc, msg.records, msg.count, tombstones=False)
    checked = None  # the records of one service share its key object: checked once
    for rec in records:
        if rec.service is not checked:
            if rec.slot != msg.slot:
                raise _fail(f"record {rec.instance_id!r} is in slot {rec.slot}, not {msg.slot}")
            checked = rec.service
    return SlotRecords(msg.slot, records, msg.last)


def read_digest_table(msg: pb.DigestTable) -> Digests:
    """The digest table of a wire message; the table must be exactly TABLE_BYTES long."""
    if len(msg.table) != TABLE_BYTES:
        raise _fail(f"a slot digest table is {TABLE_BYTES} bytes, not {len(msg.table)}")
    return Digests(msg.revision, msg.epoch, msg.table)
