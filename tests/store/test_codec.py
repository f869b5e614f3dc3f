"""The record body both store backends write: exact round trips, one shape, clear errors.

The SQLite store keeps :func:`pack_record_body` bytes in its ``body`` columns and the
etcd store nests :func:`record_body` inside its log and exported-state values; both
must read back exactly the record that was written.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.store import StoreCorruptError
from pysyncer.store.codec import (
    pack_record_body,
    record_body,
    record_from_body,
    unpack_record_body,
)
from pysyncer.store.etcd_layout import encode_log
from tests.store.test_store import _instances


def _record(inst: Instance, dead: bool, revision: int = 7) -> Record:
    return Record("dc-x", inst.service, inst.instance_id, revision, None if dead else inst)


@settings(max_examples=60, deadline=None)
@given(_instances, st.booleans(), st.integers(1, 2**40))
def test_body_round_trips_exactly(inst: Instance, dead: bool, revision: int) -> None:
    record = _record(inst, dead, revision)
    body = record_body(record)
    assert record_from_body("dc-x", inst.instance_id, revision, body, "it") == record
    data = pack_record_body(record)
    assert unpack_record_body("dc-x", inst.instance_id, revision, data, "it") == record


def test_both_backends_write_the_same_body() -> None:
    service = ServiceKey("app", "svc/with/slash", "1.0.0", "prod", "proj")
    inst = Instance(service, "id-1", host_name="h", endpoints=("rest://10.0.0.1:8080",))
    record = _record(inst, dead=False)
    body = record_body(record)
    assert body[0] == ["app", "svc/with/slash", "1.0.0", "prod", "proj"]
    assert body[1] == inst.fields()
    assert msgpack.unpackb(pack_record_body(record), raw=False) == body
    etcd_value = msgpack.unpackb(encode_log(record, body), raw=False)
    assert etcd_value[-1] == body
    assert record_body(_record(inst, dead=True))[1] is None


def test_inconsistent_record_is_refused_before_writing() -> None:
    inst = Instance(ServiceKey("app", "svc", "1"), "id-1", "h")
    wrong = Record("dc-x", ServiceKey("app", "other", "1"), "id-1", 1, inst)
    with pytest.raises(ValueError, match="carries an instance of"):
        record_body(wrong)
    with pytest.raises(ValueError, match="carries an instance of"):
        pack_record_body(Record("dc-x", inst.service, "id-2", 1, inst))


@pytest.mark.parametrize("data", [b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb("x")])
def test_undecodable_body_is_reported_corrupt(data: bytes) -> None:
    with pytest.raises(StoreCorruptError, match="undecodable record at revision 3"):
        unpack_record_body("dc-x", "id", 3, data, "record at revision 3")
