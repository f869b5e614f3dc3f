# mypy: disable-error-code="import-untyped"
"""Fuzz targets: one per decoder that reads bytes from the network, and their seeds.

Each target takes one input (bytes chosen by the fuzzer) and feeds it to a decoder the
way the daemon does with bytes from a peer. A decoder may refuse an input only with its
documented error (listed per target); any other exception, a wrong round trip or a
disagreement between the compiled and the pure wire codec is a bug, reported by the
fuzzer as a crash. The first input byte often picks options (keyring, label, which
record to decode): the fuzzer explores those as well.

``seeds()`` of each target returns small valid inputs (golden packets captured from real
Serf agents in ``tests/golden/gossip`` and messages built here); ``fuzz/run.py
--make-seeds`` writes them to ``fuzz/corpus/<target>/``.

This module only decodes: no sockets, no files (except the golden packets read by
``seeds``), no state kept between inputs beyond constants and one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from pysyncer._core import _wire_py as wire_py
from pysyncer._core import wire
from pysyncer.adapters.zk import proto as zk
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import lzw
from pysyncer.gossip import messages as m
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.keyring import Keyring, encrypt_packet
from pysyncer.gossip.packet import PacketError, decode_packet, encode_packet
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.stream import (
    StreamClosedError,
    StreamError,
    frame_stream_message,
    read_stream_message,
)
from pysyncer.httpbody import BodyError, parse_json_object
from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.rpc import codec
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc.errors import PayloadError
from pysyncer.rpc.listing import listing_message, read_listing
from pysyncer.servicecenter.errors import RegistryError
from pysyncer.servicecenter.validation import validate_instance, validate_service

__all__ = ["TARGETS", "Target"]

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "gossip"
KEYRING = Keyring(bytes(range(16)))
LABEL = "fuzz"
STREAM_BUDGET = 1024 * 1024  # smaller than the default: more inputs per second
LZW_BUDGET = 64 * 1024  # small: garbage expands to it quickly, and more inputs a second
DC = "dc-a"

_LOOP = asyncio.new_event_loop()

try:  # the compiled twin, when this install has one: the wire target compares the two
    wire_c: Any = importlib.import_module("pysyncer._core._wire_c")
except ImportError:
    wire_c = None

_MESSAGE_CLASSES: dict[int, Callable[[bytes], object]] = {
    wire.PING_MSG: m.Ping.from_bytes,
    wire.INDIRECT_PING_MSG: m.IndirectPingReq.from_bytes,
    wire.ACK_RESP_MSG: m.AckResp.from_bytes,
    wire.NACK_RESP_MSG: m.NackResp.from_bytes,
    wire.ERR_MSG: m.ErrResp.from_bytes,
    wire.SUSPECT_MSG: m.Suspect.from_bytes,
    wire.ALIVE_MSG: m.Alive.from_bytes,
    wire.DEAD_MSG: m.Dead.from_bytes,
    wire.COMPRESS_MSG: m.Compress.from_bytes,
    wire.PUSH_PULL_MSG: m.decode_push_pull,
}


class Target(NamedTuple):
    name: str
    test_one_input: Callable[[bytes], None]
    seeds: Callable[[], Iterable[bytes]]


def _flags(data: bytes) -> tuple[int, bytes]:
    return (data[0], data[1:]) if data else (0, b"")


def _decode_message(message: bytes) -> None:
    """What the node does with one plain message: decode it by its type byte."""
    try:
        if message[0] == wire.USER_MSG:
            payload = message[1:]
            if payload[:1] == bytes((sm.SerfMessageType.RELAY,)):
                _, payload = sm.decode_relay(payload)
            sm.decode_serf(payload)
            return
        decode = _MESSAGE_CLASSES.get(message[0])
        if decode is not None:
            decoded = decode(message)
            if isinstance(decoded, m.PushPull) and decoded.user_state:
                sm.SerfPushPull.from_bytes(decoded.user_state)  # what the Serf layer merges
    except MalformedDataError:
        pass


# -- gossip packets -----------------------------------------------------------------------


def gossip_packet(data: bytes) -> None:
    """decode_packet (label, keyring, CRC, compression, compound), then each message.

    Documented errors: PacketError from the packet, MalformedDataError from a message.
    """
    flags, body = _flags(data)
    try:
        parts, _ = decode_packet(
            body,
            keyring=KEYRING if flags & 1 else None,
            label=LABEL if flags & 2 else "",
            verify_incoming=not flags & 4,
        )
    except PacketError:
        return
    for part in parts:
        _decode_message(part)


def _gossip_messages() -> list[bytes]:
    addr = b"\x7f\x00\x00\x01"
    return [
        m.Ping(1, "node-a", addr, 7946, "node-b").to_bytes(),
        m.AckResp(1, b"payload").to_bytes(),
        m.Alive(3, "node-a", addr, 7946, b"\xff\x80", bytes(6)).to_bytes(),
        m.Suspect(3, "node-a", "node-b").to_bytes(),
        m.Dead(3, "node-a", "node-b").to_bytes(),
    ]


def _gossip_packet_seeds() -> Iterable[bytes]:
    for path in sorted(GOLDEN.glob("*.bin")):
        if "stream" not in path.name and "push_pull" not in path.name:
            yield b"\x00" + path.read_bytes()
    messages = _gossip_messages()
    yield b"\x00" + encode_packet(messages, compress=True, crc=True)
    yield b"\x02" + encode_packet(messages[:2], label=LABEL)
    yield b"\x01" + encode_packet(messages[:1], keyring=KEYRING)
    yield b"\x00" + encrypt_packet(KEYRING, messages[0], "")


# -- a gossip node: what it does with what it decodes -------------------------------------

_NODE_INPUTS_PER_POOL = 1000  # a fresh node now and then: membership does not pile up
_SOURCE = ("10.9.9.9", 7946)  # a sender outside the simulated pool: replies are dropped


class _NodePool:
    def __init__(self) -> None:
        self.inputs = 0
        self.node = Simulation(1).nodes["n0"].node

    def next_node(self) -> Any:
        self.inputs += 1
        if self.inputs % _NODE_INPUTS_PER_POOL == 0:
            self.node = Simulation(1).nodes["n0"].node
        return self.node


_POOL = _NodePool()


def gossip_node(data: bytes) -> None:
    """A node handling a packet (never raises: a bug counts ``internal_error``) or a
    stream message (documented error: MalformedDataError).
    """
    flags, body = _flags(data)
    node = _POOL.next_node()
    if flags & 1:
        with contextlib.suppress(MalformedDataError):
            node.handle_stream_message(body)
        return
    node.handle_packet(body, _SOURCE)
    if node.stats.counters["packets_dropped_internal_error"]:
        raise AssertionError("the node failed on a message (packets_dropped_internal_error)")


def _gossip_node_seeds() -> Iterable[bytes]:
    for seed in _gossip_packet_seeds():
        if seed[0] == 0:
            yield seed
    for name in ("py_push_pull_join.bin", "serf_push_pull_reply.bin"):
        path = GOLDEN / name
        if path.exists():
            yield b"\x01" + path.read_bytes()


# -- gossip streams -----------------------------------------------------------------------


async def _read_stream(data: bytes, keyring: Keyring | None, label_header: bool) -> bytes:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_stream_message(
        reader,
        keyring=keyring,
        label=LABEL if label_header else "",
        timeout=5.0,
        max_size=STREAM_BUDGET,
        label_header=label_header,
    )


def gossip_stream(data: bytes) -> None:
    """read_stream_message (label, encryption, compression, message walk), then the message.

    Documented errors: StreamError and StreamClosedError (MalformedDataError and
    ConnectionError); a message that was read decodes or raises MalformedDataError.
    """
    flags, body = _flags(data)
    keyring = KEYRING if flags & 1 else None
    try:
        message = _LOOP.run_until_complete(_read_stream(body, keyring, bool(flags & 2)))
    except (StreamError, StreamClosedError):
        return
    _decode_message(message)


def _gossip_stream_seeds() -> Iterable[bytes]:
    for name in ("py_push_pull_join.bin", "serf_push_pull_reply.bin", "layout_user_stream.bin"):
        path = GOLDEN / name
        if path.exists():
            yield b"\x00" + path.read_bytes()
    ping = _gossip_messages()[0]
    yield b"\x00" + frame_stream_message(ping, keyring=None, compress=True)
    yield b"\x02" + frame_stream_message(ping, keyring=None, label=LABEL)
    yield b"\x01" + frame_stream_message(ping, keyring=KEYRING)
    yield b"\x00" + wire.encode_user_stream(b"user payload")


# -- LZW ----------------------------------------------------------------------------------


def lzw_codec(data: bytes) -> None:
    """lzw.decompress within a budget; what it decodes, and any input, round-trips.

    Documented error: MalformedDataError (DecompressionLimitError past the budget).
    """
    if lzw.decompress(lzw.compress(data), LZW_BUDGET) != data:
        raise AssertionError("compress then decompress changed the data")
    try:
        out = lzw.decompress(data, LZW_BUDGET)
    except MalformedDataError:
        return
    if len(out) > LZW_BUDGET:
        raise AssertionError(f"decompressed {len(out)} bytes past the budget")


def _lzw_seeds() -> Iterable[bytes]:
    yield lzw.compress(b"")
    yield lzw.compress(b"abracadabra abracadabra")
    yield lzw.compress(bytes(range(256)) * 20)
    yield lzw.compress(b"\x00" * 5000)


# -- the wire codec: compiled and pure twins must agree -----------------------------------

_WIRE_CALLS: tuple[Callable[[Any, bytes], object], ...] = (
    lambda w, d: w.unpack(d),
    lambda w, d: w.unpack_from(d, 0),
    lambda w, d: w.decode_message(d),
    lambda w, d: w.split_compound(d),
    lambda w, d: w.strip_label(d),
    lambda w, d: w.verify_crc(d),
    lambda w, d: w.decode_tags(d),
    lambda w, d: w.decode_push_pull(d),
    lambda w, d: w.decode_user_stream(d),
)


def _outcome(twin: Any, call: Callable[[Any, bytes], object], data: bytes) -> str:
    try:
        return "ok " + repr(call(twin, data))
    except MalformedDataError as exc:
        return "refused " + ("incomplete" if "Incomplete" in type(exc).__name__ else "")


def wire_codec(data: bytes) -> None:
    """Old-spec MessagePack and memberlist framing: the compiled twin and the pure one.

    Documented error: MalformedDataError (IncompleteDataError for a short buffer); both
    twins must return equal values or both refuse the input.
    """
    flags, body = _flags(data)
    call = _WIRE_CALLS[flags % len(_WIRE_CALLS)]
    pure = _outcome(wire_py, call, body)
    compiled = pure if wire_c is None else _outcome(wire_c, call, body)
    if compiled != pure:
        raise AssertionError(f"compiled and pure wire codecs disagree: {compiled} / {pure}")


def _wire_seeds() -> Iterable[bytes]:
    messages = _gossip_messages()
    for index in range(len(_WIRE_CALLS)):
        yield bytes((index,)) + messages[index % len(messages)]
    yield bytes((1,)) + wire.pack({"a": [1, 2.5, None, True, b"x" * 40, {"b": -7}]})
    yield bytes((3,)) + wire.build_compound(messages)
    yield bytes((4,)) + wire.add_label(messages[0], LABEL)
    yield bytes((5,)) + wire.add_crc(messages[0])
    yield bytes((6,)) + wire.encode_tags({"dc": DC, "role": "syncer"})
    yield bytes((8,)) + wire.encode_user_stream(b"payload")


# -- the sync RPC payload codec -----------------------------------------------------------


def _records() -> list[Record]:
    service = ServiceKey("shop", "cart", "1.0.0", "production")
    instance = Instance(service, "i1", "h1", ("rest://10.0.0.1:8080",), properties={"z": "a"})
    return [Record(DC, service, "i1", 5, instance), Record(DC, service, "i2", 6, None)]


def rpc_codec(data: bytes) -> None:
    """What a peer answers: record batches (the msgpack payload, whole PeerBatch and
    SlotBatch messages), digest tables and service listings.

    Documented errors: PayloadError (a ValueError); protobuf's DecodeError for bytes
    that are no message at all (grpc refuses those before our code runs). Records that
    decode must encode back to the same records.
    """
    flags, body = _flags(data)
    try:
        kind = flags % 5
        if kind == 0:  # the next byte: the record count the batch announces
            count, payload = (body[0], body[1:]) if body else (0, b"")
            records = codec.decode_records(DC, payload, count, tombstones=True)
            again = codec.encode_records(DC, records)
            if codec.decode_records(DC, again, len(records)) != records:
                raise AssertionError("records changed on a round trip")
        elif kind == 1:
            codec.read_peer_batch(pb.PeerBatch.FromString(body))
        elif kind == 2:
            codec.read_slot_batch(pb.SlotBatch.FromString(body), None)
        elif kind == 3:
            codec.read_digest_table(pb.DigestTable.FromString(body))
        else:
            read_listing(pb.ServiceListing.FromString(body))
    except (PayloadError, DecodeError):
        return


def _rpc_seeds() -> Iterable[bytes]:
    records = _records()
    payload = codec.encode_records(DC, records)
    yield bytes((0, len(records))) + payload
    yield b"\x01" + codec.peer_batch(DC, "e1", 6, records).SerializeToString()
    live = records[:1]
    yield b"\x02" + codec.slot_batch(DC, live[0].slot, live, last=True).SerializeToString()
    yield b"\x03" + pb.DigestTable(dc=DC, table=bytes(codec.TABLE_BYTES)).SerializeToString()
    instances = [r.instance for r in records if r.instance is not None]
    listing = listing_message(DC, "n1", instances, "", 0, "")
    yield b"\x04" + listing.SerializeToString()


# -- the embedded registry's JSON bodies --------------------------------------------------


def registry_json(data: bytes) -> None:
    """The embedded Service-Center's request bodies: JSON, then the service or instance.

    Documented errors: BodyError (not a JSON object, or nested too deep: 400) and
    RegistryError (a field the registry refuses: 400001).
    """
    try:
        body = parse_json_object(data)
        validate_service(body.get("service", body))
        validate_instance(body.get("instance", body))
    except (BodyError, RegistryError):
        return


def _registry_seeds() -> Iterable[bytes]:
    service = {"appId": "shop", "serviceName": "cart", "version": "1.0.0", "level": "BACK"}
    instance = {
        "hostName": "h1",
        "endpoints": ["rest://10.0.0.1:8080"],
        "status": "UP",
        "properties": {"zone": "a"},
        "healthCheck": {"mode": "push", "interval": 30, "times": 3},
    }
    yield json.dumps({"service": service}).encode()
    yield json.dumps({"instance": instance}).encode()
    yield json.dumps({"service": service, "instance": instance}).encode()
    yield b"{}"


# -- ZooKeeper replies --------------------------------------------------------------------


def zk_reply(data: bytes) -> None:
    """Reply frames from a ZooKeeper server, decoded as the client does for each request.

    Documented error: ValueError.
    """
    flags, body = _flags(data)
    try:
        kind = flags % 8
        if kind == 0:
            zk.ConnectResponse.decode(body)
            return
        if kind == 1:
            zk.frame_length(body[:4].ljust(4, b"\x00"))
            return
        r = zk.Reader(body)
        zk.reply_header(r)
        if kind == 2:
            zk.WatcherEvent.decode(r)
        elif kind == 3:
            zk.decode_multi(r)
        elif kind == 4:
            r.buffer()
            r.stat()
        elif kind == 5:
            r.strings()
            r.stat()
        elif kind == 6:
            r.string()
        else:
            r.stat()
    except ValueError:
        return


def _zk_seeds() -> Iterable[bytes]:
    stat = bytes(68)
    header = zk.Writer().i32(7).i64(42).i32(0).getvalue()
    yield b"\x00" + zk.ConnectResponse(0, 30000, 99, bytes(16), False).encode()
    yield b"\x01" + bytes((0, 0, 1, 0))
    yield (
        b"\x02"
        + zk.Writer().i32(-1).i64(1).i32(0).getvalue()
        + zk.WatcherEvent(3, 3, "/services").encode()
    )
    multi = zk.Writer().i32(zk.Op.CREATE).boolean(False).i32(0).string("/a")
    yield b"\x03" + header + multi.i32(-1).boolean(True).i32(-1).getvalue()
    yield b"\x04" + header + zk.Writer().buffer(b"data").getvalue() + stat
    yield b"\x05" + header + zk.Writer().strings(["a", "b"]).getvalue() + stat
    yield b"\x06" + header + zk.Writer().string("/created").getvalue()
    yield b"\x07" + header + stat


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("gossip_packet", gossip_packet, _gossip_packet_seeds),
        Target("gossip_stream", gossip_stream, _gossip_stream_seeds),
        Target("gossip_node", gossip_node, _gossip_node_seeds),
        Target("lzw", lzw_codec, _lzw_seeds),
        Target("wire", wire_codec, _wire_seeds),
        Target("rpc_codec", rpc_codec, _rpc_seeds),
        Target("registry_json", registry_json, _registry_seeds),
        Target("zk_reply", zk_reply, _zk_seeds),
    )
}
