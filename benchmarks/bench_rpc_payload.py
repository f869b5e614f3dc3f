# mypy: disable-error-code="import-untyped"
"""Benchmark of the syncer-to-syncer RPC payload: protobuf messages against msgpack bytes.

Usage::

    python -m benchmarks.bench_rpc_payload [--repeats R] [--json]

Decides how :mod:`pysyncer.rpc` carries records (docs/rpc.md has the decision). Each
candidate turns a batch of :class:`pysyncer.model.Record` into the bytes of a whole
``PeerBatch`` message and back into records (what a server and a client do per batch),
for batches of 1, 100 and 10,000 typical instances (6 properties, 2 endpoints, 40
services, 5% tombstones):

* ``protobuf``: one protobuf message per record (``repeated WireRecord``), services
  interned in a ``repeated WireService`` table of the batch;
* ``msgpack``: the same shape as msgpack arrays in one ``bytes`` field of the batch;
* ``codec``: the shipped :mod:`pysyncer.rpc.codec` (the winner, with its bounds and
  validation), for the cost of the checks on top of the bare candidate.

The protobuf candidate's classes are built at run time from a text descriptor (no
generated file). Figures are the median [min .. max] of ``R`` runs, in records/s for
encode+decode together and separately, and the encoded size in bytes (per batch and per
record). The ratio is msgpack against protobuf, median against median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import msgpack
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.rpc import codec, sync_pb2

BATCH_SIZES = (1, 100, 10_000)
DC = "dc-east"

_PROTO = """
name: "bench_payload.proto"
package: "bench.v1"
syntax: "proto3"
message_type {
  name: "WireService"
  field { name: "project" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "environment" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "app" number: 3 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "name" number: 4 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "version" number: 5 type: TYPE_STRING label: LABEL_OPTIONAL }
}
message_type {
  name: "WireInstance"
  field { name: "host" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "endpoints" number: 2 type: TYPE_STRING label: LABEL_REPEATED }
  field { name: "status" number: 3 type: TYPE_STRING label: LABEL_OPTIONAL }
  field {
    name: "properties" number: 4 type: TYPE_MESSAGE label: LABEL_REPEATED
    type_name: ".bench.v1.WireInstance.PropertiesEntry"
  }
  field { name: "interval" number: 5 type: TYPE_UINT32 label: LABEL_OPTIONAL }
  field { name: "times" number: 6 type: TYPE_UINT32 label: LABEL_OPTIONAL }
  nested_type {
    name: "PropertiesEntry"
    field { name: "key" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
    field { name: "value" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL }
    options { map_entry: true }
  }
}
message_type {
  name: "WireRecord"
  field { name: "service" number: 1 type: TYPE_UINT32 label: LABEL_OPTIONAL }
  field { name: "instance_id" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "revision" number: 3 type: TYPE_UINT64 label: LABEL_OPTIONAL }
  field {
    name: "instance" number: 4 type: TYPE_MESSAGE label: LABEL_OPTIONAL
    type_name: ".bench.v1.WireInstance"
  }
}
message_type {
  name: "PbBatch"
  field { name: "dc" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "revision" number: 2 type: TYPE_UINT64 label: LABEL_OPTIONAL }
  field {
    name: "services" number: 3 type: TYPE_MESSAGE label: LABEL_REPEATED
    type_name: ".bench.v1.WireService"
  }
  field {
    name: "records" number: 4 type: TYPE_MESSAGE label: LABEL_REPEATED
    type_name: ".bench.v1.WireRecord"
  }
}
message_type {
  name: "MpBatch"
  field { name: "dc" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "revision" number: 2 type: TYPE_UINT64 label: LABEL_OPTIONAL }
  field { name: "records" number: 3 type: TYPE_BYTES label: LABEL_OPTIONAL }
}
"""


def _classes() -> tuple[Any, Any]:
    proto = text_format.Parse(_PROTO, descriptor_pb2.FileDescriptorProto())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("bench.v1.PbBatch")), get(
        pool.FindMessageTypeByName("bench.v1.MpBatch")
    )


PbBatch, MpBatch = _classes()


def typical_records(n: int) -> list[Record]:
    """``n`` records of a data center: 40 services, 6 properties, 2 endpoints, 5% deleted."""
    out = []
    for i in range(n):
        service = ServiceKey("shop", f"orders-{i % 40}", "1.4.2", "production")
        host = f"10.{i % 200}.{(i >> 8) % 250}.{i % 250}"
        iid = f"{i:016x}{(i * 2654435761) & 0xFFFFFFFF:08x}"
        instance = None
        if i % 20 != 19:
            instance = Instance(
                service,
                iid,
                f"node-{i % 300}.dc1.example.com",
                (f"rest://{host}:8080", f"highway://{host}:7070"),
                "UP",
                MappingProxyType(
                    {
                        "zone": f"az{i % 3}",
                        "region": "eu-west-1",
                        "canary": "true" if i % 10 == 0 else "false",
                        "weight": "100",
                        "build": f"2024.06.{i % 28 + 1}",
                        "team": "checkout",
                    }
                ),
                30,
                3,
            )
        out.append(Record(DC, service, iid, 1_000_000 + i, instance))
    return out


# -- candidate 1: protobuf messages --------------------------------------------------------


def pb_encode(records: Sequence[Record], revision: int) -> bytes:
    batch = PbBatch(dc=DC, revision=revision)
    services: dict[ServiceKey, int] = {}
    add_service = batch.services.add
    add_record = batch.records.add
    for rec in records:
        key = rec.service
        index = services.get(key)
        if index is None:
            index = services[key] = len(services)
            add_service(
                project=key.project,
                environment=key.environment,
                app=key.app,
                name=key.name,
                version=key.version,
            )
        inst = rec.instance
        if inst is None:
            add_record(service=index, instance_id=rec.instance_id, revision=rec.revision)
        else:
            w = add_record(service=index, instance_id=rec.instance_id, revision=rec.revision)
            wi = w.instance
            wi.host = inst.host_name
            wi.endpoints.extend(inst.endpoints)
            wi.status = inst.status
            wi.properties.update(inst.properties)
            wi.interval = inst.health_interval
            wi.times = inst.health_times
    data: bytes = batch.SerializeToString()
    return data


def pb_decode(data: bytes) -> list[Record]:
    batch = PbBatch.FromString(data)
    dc = batch.dc
    services = [
        ServiceKey(s.app, s.name, s.version, s.environment, s.project) for s in batch.services
    ]
    out = []
    for w in batch.records:
        key = services[w.service]
        inst = None
        if w.HasField("instance"):
            wi = w.instance
            inst = Instance(
                key,
                w.instance_id,
                wi.host,
                tuple(wi.endpoints),
                wi.status,
                MappingProxyType(dict(wi.properties)),
                wi.interval,
                wi.times,
            )
        out.append(Record(dc, key, w.instance_id, w.revision, inst))
    return out


# -- candidate 2: msgpack arrays in one bytes field ---------------------------------------


def mp_encode(records: Sequence[Record], revision: int) -> bytes:
    services: dict[ServiceKey, int] = {}
    table: list[tuple[str, str, str, str, str]] = []
    rows: list[tuple[Any, ...]] = []
    for rec in records:
        key = rec.service
        index = services.get(key)
        if index is None:
            index = services[key] = len(table)
            table.append((key.project, key.environment, key.app, key.name, key.version))
        inst = rec.instance
        if inst is None:
            rows.append((index, rec.instance_id, rec.revision, None))
        else:
            rows.append(
                (
                    index,
                    rec.instance_id,
                    rec.revision,
                    (
                        inst.host_name,
                        inst.endpoints,
                        inst.status,
                        dict(inst.properties),
                        inst.health_interval,
                        inst.health_times,
                    ),
                )
            )
    payload = msgpack.packb((table, rows), use_bin_type=True)
    data: bytes = MpBatch(dc=DC, revision=revision, records=payload).SerializeToString()
    return data


def mp_decode(data: bytes) -> list[Record]:
    batch = MpBatch.FromString(data)
    dc = batch.dc
    table, rows = msgpack.unpackb(batch.records, raw=False, use_list=False)
    services = [ServiceKey(a, n, v, e, p) for p, e, a, n, v in table]
    out = []
    for index, iid, revision, fields in rows:
        key = services[index]
        inst = None
        if fields is not None:
            host, endpoints, status, props, interval, times = fields
            inst = Instance(
                key, iid, host, endpoints, status, MappingProxyType(props), interval, times
            )
        out.append(Record(dc, key, iid, revision, inst))
    return out


# -- the shipped codec ---------------------------------------------------------------------


def codec_encode(records: Sequence[Record], revision: int) -> bytes:
    data: bytes = codec.peer_batch(DC, "epoch-1", revision, records).SerializeToString()
    return data


def codec_decode(data: bytes) -> list[Record]:
    return list(codec.read_peer_batch(sync_pb2.PeerBatch.FromString(data)).records)


CANDIDATES: dict[str, tuple[Callable[[Sequence[Record], int], bytes], Callable[[bytes], Any]]] = {
    "protobuf": (pb_encode, pb_decode),
    "msgpack": (mp_encode, mp_decode),
    "codec": (codec_encode, codec_decode),
}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(repeats: int) -> dict[str, Any]:
    """All measurements as a JSON-ready dict."""
    results: dict[str, Any] = {}
    for size in BATCH_SIZES:
        records = typical_records(size)
        revision = records[-1].revision
        # small batches are timed in loops so each sample lasts long enough to measure
        loops = max(1, 20_000 // size)
        row: dict[str, Any] = {}
        for name, (encode, decode) in CANDIDATES.items():
            data = encode(records, revision)
            if decode(data) != records:
                raise RuntimeError(f"{name} does not round-trip a batch of {size}")
            enc_s, dec_s = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(loops):
                    encode(records, revision)
                mid = time.perf_counter()
                for _ in range(loops):
                    decode(data)
                end = time.perf_counter()
                enc_s.append(mid - start)
                dec_s.append(end - mid)
            items = size * loops
            row[name] = {
                "bytes": len(data),
                "bytes_per_record": len(data) / size,
                "round_trip_records_per_s": _stats(
                    [items / (e + d) for e, d in zip(enc_s, dec_s, strict=True)]
                ),
                "encode_records_per_s": _stats([items / e for e in enc_s]),
                "decode_records_per_s": _stats([items / d for d in dec_s]),
            }
        pb_rt = row["protobuf"]["round_trip_records_per_s"]["median"]
        mp_rt = row["msgpack"]["round_trip_records_per_s"]["median"]
        row["ratio_msgpack_vs_protobuf"] = {
            "round_trip_speed": mp_rt / pb_rt,
            "bytes": row["msgpack"]["bytes"] / row["protobuf"]["bytes"],
        }
        results[str(size)] = row
    return {
        "repeats": repeats,
        "python": sys.version.split()[0],
        "protobuf_backend": _protobuf_backend(),
        "batches": results,
    }


def _protobuf_backend() -> str:
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


def _k(value: float) -> str:
    return f"{value / 1e3:,.0f} k"


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"pysyncer RPC payload benchmark: {report['repeats']} repeats, Python {report['python']},"
        f" protobuf backend {report['protobuf_backend']}; records/s median [min .. max]"
    )
    print(f"{'batch':>7}  {'encoding':<9}{'round trip':<28}{'encode':<12}{'decode':<12}bytes")
    for size, row in report["batches"].items():
        for name in CANDIDATES:
            m = row[name]
            rt = m["round_trip_records_per_s"]
            print(
                f"{size:>7}  {name:<9}"
                f"{_k(rt['median']) + ' [' + _k(rt['min']) + ' .. ' + _k(rt['max']) + ']':<28}"
                f"{_k(m['encode_records_per_s']['median']):<12}"
                f"{_k(m['decode_records_per_s']['median']):<12}"
                f"{m['bytes']:,} ({m['bytes_per_record']:.1f}/record)"
            )
        ratio = row["ratio_msgpack_vs_protobuf"]
        print(
            f"{'':>7}  msgpack vs protobuf: {ratio['round_trip_speed']:.2f}x speed, "
            f"{ratio['bytes']:.2f}x bytes"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
