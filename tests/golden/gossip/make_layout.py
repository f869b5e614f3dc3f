"""Write the golden packets built from the documented layout (see README.md here).

Usage: ``python tests/golden/gossip/make_layout.py``

Independent of pysyncer's codec: bodies are packed by the ``msgpack`` package
(``use_bin_type=False``: old-spec raw strings, as go-msgpack writes) with struct keys
sorted by name (go-msgpack v0.5 order), and the framing is written byte by byte.
Also stores the LZW-decompressed inner packets of two captured compressed packets.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

from pysyncer.gossip import lzw

HERE = Path(__file__).resolve().parent


def _msg(msg_type: int, fields: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(dict(sorted(fields.items())), use_bin_type=False)
    return bytes((msg_type,)) + body


def layout() -> dict[str, bytes]:
    ip = b"\x7f\x00\x00\x01"
    ping = _msg(0, {"SeqNo": 7, "Node": "g1"})
    suspect = _msg(3, {"Incarnation": 3, "Node": "n2", "From": "n1"})
    dead = _msg(5, {"Incarnation": 4, "Node": "n2", "From": "n2"})
    parts = [ping, suspect, dead]
    compound = bytes((7, len(parts))) + b"".join(struct.pack(">H", len(p)) for p in parts)
    compound += b"".join(parts)
    crc = bytes((12,)) + struct.pack(">I", zlib.crc32(compound)) + compound
    label = b"pool-a"
    user = b"\x03" + msgpack.packb(
        {"CC": False, "LTime": 9, "Name": "deploy", "Payload": b"\x00\xff"}, use_bin_type=False
    )
    relay_header = {"DestAddr": {"IP": ip, "Port": 7946, "Zone": ""}, "DestName": "n3"}
    response = {"Flags": 1, "From": "n3", "ID": 99, "LTime": 5, "Payload": None}
    return {
        "layout_suspect.bin": suspect,
        "layout_dead.bin": dead,
        "layout_nack.bin": _msg(11, {"SeqNo": 300}),
        "layout_err.bin": _msg(13, {"Error": "unexpected message"}),
        "layout_indirect_ping.bin": _msg(
            1,
            {
                "SeqNo": 70000,
                "Target": ip,
                "Port": 7946,
                "Node": "n2",
                "Nack": True,
                "SourceAddr": ip,
                "SourcePort": 7947,
                "SourceNode": "n1",
            },
        ),
        "layout_compound.bin": compound,
        "layout_crc_compound.bin": crc,
        "layout_labeled_crc_compound.bin": bytes((244, len(label))) + label + crc,
        "layout_user_stream.bin": bytes((8,))
        + msgpack.packb({"UserMsgLen": len(user)}, use_bin_type=False)
        + user,
        "layout_serf_user_event.bin": user,
        "layout_serf_join.bin": _msg(1, {"LTime": 2**40, "Node": "n1"}),
        "layout_serf_leave.bin": _msg(0, {"LTime": 12, "Node": "n1", "Prune": True}),
        "layout_serf_query_response.bin": _msg(5, response),
        "layout_serf_key_request.bin": _msg(7, {"Key": bytes(range(16))}),
        "layout_serf_key_response.bin": _msg(
            8,
            {
                "Result": True,
                "Message": "",
                "Keys": ["a2V5MQ==", "a2V5Mg=="],
                "PrimaryKey": "a2V5MQ==",
            },
        ),
        "layout_serf_relay.bin": _msg(9, relay_header) + _msg(5, response),
    }


def decompressed() -> dict[str, bytes]:
    out = {}
    for source, target in [
        ("serf_ack_compressed.bin", "serf_ack_compound.bin"),
        ("serf_gossip_crc_compressed.bin", "serf_gossip_compound.bin"),
    ]:
        data = (HERE / source).read_bytes()
        if data[0] == 12:
            data = data[5:]
        envelope = msgpack.unpackb(data[1:], raw=True)
        out[target] = lzw.decompress(envelope[b"Buf"])
    return out


if __name__ == "__main__":
    for name, data in {**layout(), **decompressed()}.items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
