"""Tests of pysyncer.gossip.stream: memberlist TCP stream framing, both directions.

Round trips go through real loopback TCP pairs and through StreamReaders fed in small
(or hypothesis-chosen) chunks; every read is bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import lzw
from pysyncer.gossip.keyring import Keyring, encrypt_stream_payload
from pysyncer.gossip.messages import (
    AckResp,
    Compress,
    ErrResp,
    Ping,
    PushNodeState,
    PushPull,
    decode_push_pull,
    encode_push_pull,
)
from pysyncer.gossip.serf_messages import SerfPushPull
from pysyncer.gossip.stream import (
    LabelMismatchError,
    StreamClosedError,
    StreamError,
    frame_stream_message,
    read_stream_message,
    stream_message_end,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 17))
TRAILER = b"\x00NEXT-MESSAGE-BYTES"
VSN = bytes((1, 5, 2, 2, 5, 4))


def _node(index: int) -> PushNodeState:
    return PushNodeState(
        name=f"node-{index}",
        addr=bytes((127, 0, 0, 1 + index % 200)),
        port=7946 + index,
        meta=wire.encode_tags({"role": "syncer", "dc": "dc1"}),
        incarnation=index,
        state=index % 4,
        vsn=VSN,
    )


def _serf_state() -> bytes:
    return SerfPushPull(
        ltime=7,
        status_ltimes={"node-0": 3},
        left_members=(),
        event_ltime=1,
        events=(),
        query_ltime=1,
    ).to_bytes()


MESSAGES: dict[str, bytes] = {
    "push_pull": encode_push_pull(
        PushPull(join=True, nodes=tuple(_node(i) for i in range(5)), user_state=_serf_state())
    ),
    "push_pull_empty": encode_push_pull(PushPull(join=False, nodes=(), user_state=b"")),
    "ping": Ping(seq_no=42, node="s1").to_bytes(),
    "ack": AckResp(seq_no=42, payload=b"\x01\x02").to_bytes(),
    "user": wire.encode_user_stream(b"\x07serf-payload" * 10),
    "user_empty": wire.encode_user_stream(b""),
    "err": ErrResp(error="remote state is encrypted and encryption is not configured").to_bytes(),
}


def _reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def _feed(reader: asyncio.StreamReader, data: bytes, sizes: Iterable[int]) -> None:
    """Feed ``data`` in chunks of the given sizes (cycled), yielding between chunks."""
    sizes = list(sizes) or [1]
    pos = 0
    index = 0
    while pos < len(data):
        size = max(1, sizes[index % len(sizes)])
        reader.feed_data(data[pos : pos + size])
        pos += size
        index += 1
        await asyncio.sleep(0)


async def _read_chunked(
    data: bytes, sizes: Iterable[int], **kwargs: object
) -> tuple[bytes, asyncio.StreamReader]:
    reader = asyncio.StreamReader()
    feeder = asyncio.create_task(_feed(reader, data, sizes))
    try:
        message = await read_stream_message(reader, timeout=5.0, **kwargs)  # type: ignore[arg-type]
    finally:
        await feeder
    return message, reader


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """What the reader left unread."""
    reader.feed_eof()
    return await reader.read()


# -------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("label", ["", "cluster-a"], ids=["nolabel", "label"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "lzw"])
async def test_round_trip_one_byte_chunks(
    name: str, encrypted: bool, label: str, compress: bool
) -> None:
    message = MESSAGES[name]
    keyring = Keyring(KEY_A) if encrypted else None
    framed = frame_stream_message(message, keyring=keyring, label=label, compress=compress)
    got, reader = await _read_chunked(framed + TRAILER, [1], keyring=keyring, label=label)
    assert got == message
    # Exactly one message was consumed: the bytes after it are still in the reader.
    assert await reader.readexactly(len(TRAILER)) == TRAILER


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("label", ["", "cluster-a"], ids=["nolabel", "label"])
async def test_request_reply_over_loopback_tcp(encrypted: bool, label: str) -> None:
    """The dialer sends a labelled push/pull; the reply carries no label header."""
    keyring = Keyring(KEY_A) if encrypted else None
    request = MESSAGES["push_pull"]
    reply = encode_push_pull(PushPull(join=False, nodes=(_node(9),), user_state=_serf_state()))
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_stream_message(reader, keyring=keyring, label=label, timeout=5))
        writer.write(
            frame_stream_message(
                reply, keyring=keyring, label=label, compress=True, label_header=False
            )
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(frame_stream_message(request, keyring=keyring, label=label, compress=True))
        await writer.drain()
        got = await read_stream_message(
            reader, keyring=keyring, label=label, timeout=5, label_header=False
        )
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
    assert seen == [request]
    assert got == reply
    assert decode_push_pull(got).nodes == (_node(9),)


async def test_large_push_pull_random_chunks() -> None:
    nodes = tuple(_node(i) for i in range(2000))
    message = encode_push_pull(PushPull(join=False, nodes=nodes, user_state=os.urandom(70000)))
    framed = frame_stream_message(message, keyring=None)
    got, reader = await _read_chunked(framed + TRAILER, [1, 7, 1500, 3, 65536, 2], keyring=None)
    assert got == message
    assert await _rest(reader) == TRAILER


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(MESSAGES)),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20),
    encrypted=st.booleans(),
    compress=st.booleans(),
    label=st.sampled_from(["", "x", "a-much-longer-label/üñí"]),
)
def test_round_trip_random_chunking(
    name: str, sizes: list[int], encrypted: bool, compress: bool, label: str
) -> None:
    message = MESSAGES[name]
    keyring = Keyring(KEY_A) if encrypted else None
    framed = frame_stream_message(message, keyring=keyring, label=label, compress=compress)

    async def run() -> tuple[bytes, bytes]:
        got, reader = await _read_chunked(framed + TRAILER, sizes, keyring=keyring, label=label)
        return got, await _rest(reader)

    got, rest = asyncio.run(run())
    assert got == message
    assert rest == TRAILER


def test_frame_layout() -> None:
    ping = MESSAGES["ping"]
    assert frame_stream_message(ping, keyring=None) == ping
    assert frame_stream_message(ping, keyring=None, label="ab") == b"\xf4\x02ab" + ping
    assert frame_stream_message(ping, keyring=None, label="ab", label_header=False) == ping
    compressed = frame_stream_message(ping, keyring=None, compress=True)
    assert compressed[0] == wire.COMPRESS_MSG
    assert lzw.decompress(Compress.from_bytes(compressed).buf) == ping
    keyring = Keyring(KEY_A)
    encrypted = frame_stream_message(ping, keyring=keyring, label="ab")
    assert encrypted[:3] == b"\xf4\x02a"
    body = encrypted[4:]
    assert body[0] == wire.ENCRYPT_MSG
    (length,) = struct.unpack(">I", body[1:5])
    assert length == len(body) - 5 == 1 + 12 + len(ping) + 16
    with pytest.raises(ValueError):
        frame_stream_message(b"", keyring=None)
    with pytest.raises(ValueError):
        frame_stream_message(ping, keyring=None, label="x" * 256)


def test_stream_message_end() -> None:
    for message in MESSAGES.values():
        assert stream_message_end(message + b"junk") == len(message)
        with pytest.raises(wire.IncompleteDataError):
            stream_message_end(message[:-1])
    with pytest.raises(MalformedDataError):
        stream_message_end(b"\x63\x80")  # unknown type


async def test_secondary_key_decrypts() -> None:
    framed = frame_stream_message(MESSAGES["ping"], keyring=Keyring(KEY_B))
    got = await read_stream_message(
        _reader_with(framed), keyring=Keyring([KEY_A, KEY_B]), timeout=1
    )
    assert got == MESSAGES["ping"]


async def test_version_0_padded_encryption_accepted() -> None:
    keyring = Keyring(KEY_A)
    framed = frame_stream_message(MESSAGES["err"], keyring=keyring, encryption_version=0)
    assert (
        await read_stream_message(_reader_with(framed), keyring=keyring, timeout=1)
        == (MESSAGES["err"])
    )


async def test_plaintext_accepted_without_verify_incoming() -> None:
    framed = frame_stream_message(MESSAGES["ping"], keyring=None)
    got = await read_stream_message(
        _reader_with(framed), keyring=Keyring(KEY_A), verify_incoming=False, timeout=1
    )
    assert got == MESSAGES["ping"]


# -------------------------------------------------------------------- rejections


@pytest.mark.parametrize("name", ["push_pull", "ping", "user", "err"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "lzw"])
async def test_truncated_stream_raises_connection_error(
    name: str, encrypted: bool, compress: bool
) -> None:
    keyring = Keyring(KEY_A) if encrypted else None
    framed = frame_stream_message(MESSAGES[name], keyring=keyring, label="lbl", compress=compress)
    for cut in range(len(framed)):
        with pytest.raises(StreamClosedError) as info:
            await read_stream_message(
                _reader_with(framed[:cut]), keyring=keyring, label="lbl", timeout=1
            )
        assert isinstance(info.value, ConnectionError)
    with pytest.raises(StreamClosedError) as info:
        await read_stream_message(_reader_with(b""), keyring=None, timeout=1)
    assert info.value.received == 0


def _push_pull_header(nodes: int, state_len: int) -> bytes:
    return bytes((wire.PUSH_PULL_MSG,)) + wire.pack(
        {"Join": False, "Nodes": nodes, "UserStateLen": state_len}
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x0a\xff\xff\xff\xff", id="encrypted-4GiB"),
        pytest.param(b"\x0a" + struct.pack(">I", 21 * 1024 * 1024), id="encrypted-21MiB"),
        pytest.param(_push_pull_header(0, wire.MAX_PUSH_STATE_BYTES + 1), id="user-state"),
        pytest.param(_push_pull_header(wire.MAX_PUSH_STATE_NODES + 1, 0), id="node-count"),
        pytest.param(
            _push_pull_header(wire.MAX_PUSH_STATE_NODES, wire.MAX_PUSH_STATE_BYTES),
            id="nodes-plus-state",
        ),
        pytest.param(
            bytes((wire.USER_MSG,)) + wire.pack({"UserMsgLen": wire.MAX_USER_MSG_BYTES + 1}),
            id="user-msg",
        ),
        pytest.param(b"\x00\x81\xa4Node\xdb\x10\x00\x00\x00", id="ping-256MiB-string"),
        pytest.param(b"\x09\xdf\xff\xff\xff\xff", id="compress-huge-map"),
        pytest.param(b"\x00\xdd\x7f\xff\xff\xff", id="ping-huge-array"),
    ],
)
async def test_oversized_declared_lengths_rejected_before_reading(data: bytes) -> None:
    # The reader is left open: a reader that waited for the declared bytes would time out.
    keyring = Keyring(KEY_A) if data[0] == wire.ENCRYPT_MSG else None
    with pytest.raises(StreamError):
        await read_stream_message(_reader_with(data, eof=False), keyring=keyring, timeout=2)


async def test_max_size_parameter() -> None:
    message = MESSAGES["push_pull"]
    with pytest.raises(StreamError, match="limit"):
        await read_stream_message(
            _reader_with(message, eof=False), keyring=None, timeout=2, max_size=len(message) - 1
        )
    got = await read_stream_message(
        _reader_with(message), keyring=None, timeout=2, max_size=len(message)
    )
    assert got == message


async def test_wrong_key_rejected() -> None:
    framed = frame_stream_message(MESSAGES["push_pull"], keyring=Keyring(KEY_A))
    with pytest.raises(StreamError, match="decrypt"):
        await read_stream_message(_reader_with(framed), keyring=Keyring(KEY_B), timeout=1)


async def test_encrypted_without_keyring_rejected() -> None:
    framed = frame_stream_message(MESSAGES["ping"], keyring=Keyring(KEY_A))
    with pytest.raises(StreamError, match="not configured"):
        await read_stream_message(_reader_with(framed), keyring=None, timeout=1)


async def test_plaintext_with_keyring_rejected() -> None:
    framed = frame_stream_message(MESSAGES["ping"], keyring=None)
    with pytest.raises(StreamError, match="not encrypted"):
        await read_stream_message(_reader_with(framed), keyring=Keyring(KEY_A), timeout=1)


async def test_label_is_authenticated_data() -> None:
    """Same key, label header rewritten: decryption fails (the AAD holds the label)."""
    keyring = Keyring(KEY_A)
    framed = frame_stream_message(MESSAGES["ping"], keyring=keyring, label="aa")
    forged = b"\xf4\x02bb" + framed[4:]
    with pytest.raises(StreamError):
        await read_stream_message(_reader_with(forged), keyring=keyring, label="bb", timeout=1)


@pytest.mark.parametrize(
    ("sent_label", "expected_label", "label_header"),
    [
        ("", "lbl", True),  # missing label
        ("other", "lbl", True),  # wrong label
        ("lbl", "", True),  # unexpected label
        ("lbl", "lbl", False),  # label header on a reply
    ],
)
async def test_label_checks(sent_label: str, expected_label: str, label_header: bool) -> None:
    framed = frame_stream_message(MESSAGES["ping"], keyring=None, label=sent_label)
    with pytest.raises(LabelMismatchError):
        await read_stream_message(
            _reader_with(framed),
            keyring=None,
            label=expected_label,
            label_header=label_header,
            timeout=1,
        )


async def test_empty_label_header_rejected() -> None:
    with pytest.raises(LabelMismatchError):
        await read_stream_message(
            _reader_with(b"\xf4\x00" + MESSAGES["ping"]), keyring=None, label="x", timeout=1
        )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x07\x01\x00\x01\x00", id="compound-type"),
        pytest.param(b"\x63\x80", id="unknown-type"),
        pytest.param(b"\x00\xc1", id="reserved-msgpack-byte"),
        pytest.param(b"\x00\xd4\x01\x02", id="msgpack-ext"),
        pytest.param(b"\x00" + b"\x91" * 40 + b"\x00", id="too-deep"),
        pytest.param(b"\x06\x93\x01\x02\x03", id="push-pull-header-not-map"),
        pytest.param(b"\x06\x81\xa5Nodes\xff", id="push-pull-negative-nodes"),
        pytest.param(_push_pull_header(1, 0) + b"\x91\x80", id="push-pull-nested-node"),
        pytest.param(b"\x08\x81\xaaUserMsgLen\xa1x", id="user-len-not-int"),
        pytest.param(Compress(algo=1, buf=lzw.compress(b"\x00\x80")).to_bytes(), id="unknown-algo"),
        pytest.param(Compress(algo=0, buf=lzw.compress(b"")).to_bytes(), id="empty-decompressed"),
        pytest.param(
            Compress(algo=0, buf=lzw.compress(Compress(algo=0, buf=b"").to_bytes())).to_bytes(),
            id="nested-compress",
        ),
        pytest.param(
            Compress(algo=0, buf=lzw.compress(MESSAGES["push_pull"][:-3])).to_bytes(),
            id="truncated-inside-compress",
        ),
        pytest.param(Compress(algo=0, buf=b"\xff\xff\xff").to_bytes(), id="bad-lzw"),
    ],
)
async def test_malformed_messages_rejected(data: bytes) -> None:
    with pytest.raises(StreamError):
        await read_stream_message(_reader_with(data), keyring=None, timeout=1)


async def test_encrypted_payload_checks() -> None:
    keyring = Keyring(KEY_A)
    inner = encrypt_stream_payload(keyring, b"\x0a" + b"x" * 10)  # encrypted inside encrypted
    with pytest.raises(StreamError):
        await read_stream_message(_reader_with(inner), keyring=keyring, timeout=1)
    short = b"\x0a" + struct.pack(">I", 5) + b"\x01abcd"
    with pytest.raises(StreamError):
        await read_stream_message(_reader_with(short), keyring=keyring, timeout=1)
    truncated_inner = encrypt_stream_payload(keyring, MESSAGES["push_pull"][:-1])
    with pytest.raises(StreamError, match="truncated"):
        await read_stream_message(_reader_with(truncated_inner), keyring=keyring, timeout=1)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
async def test_timeout_on_stalled_peer(encrypted: bool) -> None:
    """A real TCP peer sends half a message and stalls: TimeoutError at the deadline."""
    keyring = Keyring(KEY_A) if encrypted else None
    framed = frame_stream_message(MESSAGES["push_pull"], keyring=keyring)
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(framed[: len(framed) // 2])
        await writer.drain()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await read_stream_message(reader, keyring=keyring, timeout=0.3)
        assert 0.25 <= loop.time() - started < 10.0  # its own timeout, not a hang
        writer.close()
        await writer.wait_closed()
    finally:
        release.set()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
