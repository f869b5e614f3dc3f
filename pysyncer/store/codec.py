"""The record body: how both store backends serialise a change record's content.

Owns the one encoding of a :class:`~pysyncer.model.Record`'s service key and instance
that the SQLite store keeps in its ``body`` columns and the etcd store nests inside its
log and exported-state values: ``[[app, name, version, environment, project],
Instance.fields() | None]`` (``None`` for a tombstone). The service key travels as its
five parts, not its text, so every field round-trips exactly, ``/`` in names included.
The record's origin data center, instance id and revision are kept beside the body by
each backend. Pure functions only: must not import a backend, a registry or the sync
logic, and does no I/O.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.store.base import StoreCorruptError

__all__ = ["pack_record_body", "record_body", "record_from_body", "unpack_record_body"]


def record_body(record: Record) -> list[Any]:
    """The body of ``record`` as a msgpack-ready list; ValueError if it is inconsistent."""
    service = record.service
    instance = record.instance
    if instance is not None and (
        instance.service != service or instance.instance_id != record.instance_id
    ):
        raise ValueError(
            f"record {service.text()}/{record.instance_id} carries an instance of "
            f"{instance.service.text()}/{instance.instance_id}"
        )
    key = [service.app, service.name, service.version, service.environment, service.project]
    return [key, None if instance is None else instance.fields()]


def record_from_body(
    origin_dc: object, instance_id: object, revision: int, body: Any, what: str
) -> Record:
    """The record whose body is ``body``; StoreCorruptError names ``what`` if it is not one."""
    try:
        key, fields = body
        service = ServiceKey(*(str(part) for part in key))
        instance = None if fields is None else Instance.from_fields(service, fields)
    except (ValueError, TypeError) as exc:
        raise StoreCorruptError(f"undecodable {what}: {exc}") from None
    return Record(str(origin_dc), service, str(instance_id), revision, instance)


def pack_record_body(record: Record) -> bytes:
    """:func:`record_body` as msgpack bytes (a column of its own)."""
    data: bytes = msgpack.packb(record_body(record), use_bin_type=True)
    return data


def unpack_record_body(
    origin_dc: object, instance_id: object, revision: int, data: bytes, what: str
) -> Record:
    """The record of :func:`pack_record_body` bytes; StoreCorruptError if undecodable."""
    try:
        body = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise StoreCorruptError(f"undecodable {what}: {exc}") from None
    return record_from_body(origin_dc, instance_id, revision, body, what)
