"""LZW codec: Go compress/lzw (LSB, literal width 8) vectors, width/clear rules, round trips.

Golden vectors come from Go's own tests (``src/compress/lzw/reader_test.go`` ``lzwTests``
and ``writer_test.go`` ``TestStartsWithClearCode``). Byte-exactness against a live Go
writer is proven in ``test_serf_encrypt_interop.py`` on the real Serf agent's output.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.errors import MalformedDataError
from pysyncer.gossip.lzw import CLEAR_CODE, EOF_CODE, MAX_CODE, compress, decompress

TOBE = b"TOBEORNOTTOBEORTOBEORNOT"
# Go reader_test.go, "tobe;LSB;8": written by a Go writer of before Go 1.17 (no leading clear).
GO_TOBE_LSB8 = bytes.fromhex("549e0829f2448a9327540412 34b8b0e0c1840101")
# Go reader_test.go, "gif;LSB;8" (the Wikipedia GIF example).
GO_GIF_RAW = b"\x28\xff\xff\xff\x28" + b"\xff" * 10
GO_GIF_LSB8 = bytes.fromhex("0051fc1b2870a0c1830101")


def pack_codes(codes: list[tuple[int, int]]) -> bytes:
    """Pack (code, width) pairs LSB first, zero-padding the last byte, like Go's writer."""
    acc = 0
    nbits = 0
    for code, width in codes:
        assert 0 <= code < 1 << width
        acc |= code << nbits
        nbits += width
    return acc.to_bytes((nbits + 7) // 8, "little")


def unpack_codes(data: bytes, width: int, count: int) -> list[int]:
    """The first ``count`` fixed-width codes of an LSB-first stream."""
    acc = int.from_bytes(data, "little")
    return [(acc >> (i * width)) & ((1 << width) - 1) for i in range(count)]


def literal_stream(
    data: bytes, *, leading_clear: bool = True, clear_when_full: bool = True
) -> bytes:
    """The stream Go's writer produces when no (prefix, byte) pair ever repeats.

    Every byte is then sent as a literal code. The width rule (Go writer ``incHi``): after
    each data code, hi += 1; when hi reaches 1 << width the next codes are one bit wider;
    when hi reaches 4095 a clear code (at the current width) follows and width returns
    to 9. ``clear_when_full=False`` builds what a writer that never clears would send.
    """
    codes = [(CLEAR_CODE, 9)] if leading_clear else []
    width, hi = 9, EOF_CODE
    for byte in data:
        codes.append((byte, width))
        hi += 1
        if hi == 1 << width and width < 12:
            width += 1
        if hi == MAX_CODE and clear_when_full:
            codes.append((CLEAR_CODE, width))
            width, hi = 9, EOF_CODE
        elif hi > MAX_CODE:
            hi = MAX_CODE
    codes.append((EOF_CODE, width))
    return pack_codes(codes)


def de_bruijn_pairs(k: int = 256) -> bytes:
    """A sequence over 0..k-1 in which every ordered pair of neighbours occurs once."""
    sequence: list[int] = []
    a = [0] * (2 * k)

    def db(t: int, p: int) -> None:
        if t > 2:
            if 2 % p == 0:
                sequence.extend(a[1 : p + 1])
            return
        a[t] = a[t - p]
        db(t + 1, p)
        for j in range(a[t - p] + 1, k):
            a[t] = j
            db(t + 1, t)

    db(1, 1)
    return bytes([*sequence, sequence[0]])  # close the cycle: the wrap-around pair too


# -- Go's vectors ------------------------------------------------------------------------


def test_go_reader_vectors() -> None:
    assert decompress(b"\x01\x01") == b""  # "empty;LSB;8": a lone EOF code
    assert decompress(GO_TOBE_LSB8) == TOBE
    assert decompress(GO_GIF_LSB8) == GO_GIF_RAW


def test_go_truncated_vector_is_rejected() -> None:
    with pytest.raises(MalformedDataError, match="ends without its end code"):
        decompress(GO_TOBE_LSB8[:11])  # "tobe-truncated;LSB;8": io.ErrUnexpectedEOF in Go


def test_writer_starts_with_clear_code_like_go() -> None:
    # Go >= 1.17 writes a clear code first, then the same codes as before (the state
    # after a clear is the initial state), so the tobe vector gains a leading 256.
    old_codes = unpack_codes(GO_TOBE_LSB8, 9, 17)
    assert old_codes[:9] == list(TOBE[:9]) and old_codes[-1] == EOF_CODE
    expected = pack_codes([(code, 9) for code in [CLEAR_CODE, *old_codes]])
    assert compress(TOBE) == expected
    assert compress(TOBE)[:4] == bytes.fromhex("00a93c11")
    assert compress(b"") == b"\x00\x03\x02"  # clear + EOF, 9 bits each
    assert compress(b"Hi") == pack_codes([(256, 9), (72, 9), (105, 9), (257, 9)])


def test_gif_vector_round_trips() -> None:
    assert decompress(compress(GO_GIF_RAW)) == GO_GIF_RAW


# -- width growth and table-full rules ---------------------------------------------------


def test_de_bruijn_sequence_has_no_repeated_pair() -> None:
    seq = de_bruijn_pairs()
    assert len(seq) == 65537
    assert len({(seq[i], seq[i + 1]) for i in range(len(seq) - 1)}) == 65536


@pytest.mark.parametrize(
    "length",
    [
        1,
        2,
        254,
        255,
        256,
        257,
        510,
        511,
        1790,
        1791,
        3837,
        3838,
        3839,
        3840,
        7676,
        7677,
        7678,
        20000,
    ],
)
def test_writer_width_and_clear_rule(length: int) -> None:
    # No pair repeats, so Go's writer sends only literals: compare with the rule itself.
    data = de_bruijn_pairs()[:length]
    expected = literal_stream(data)
    assert compress(data) == expected
    assert decompress(expected) == data


def test_width_grows_after_the_code_that_makes_hi_512() -> None:
    # After a clear, data code k leaves hi = 257 + k: codes 1..255 are 9 bits wide, the
    # 256th is the first 10-bit code (no TIFF-style early change).
    data = de_bruijn_pairs()[:300]
    stream = literal_stream(data)
    acc = int.from_bytes(stream, "little")
    offset = 9 + 255 * 9  # past the clear code and 255 nine-bit codes
    assert (acc >> offset) & 0x3FF == data[255]
    early = pack_codes(
        [(CLEAR_CODE, 9)]
        + [(b, 9 if i < 254 else 10) for i, b in enumerate(data)]
        + [(EOF_CODE, 10)]
    )
    try:
        result: bytes | None = decompress(early)
    except MalformedDataError:
        result = None
    assert result != data


def test_writer_clears_when_hi_reaches_4095() -> None:
    data = de_bruijn_pairs()[:3839]
    stream = literal_stream(data)
    # 3838 data codes take hi from 257 to 4095; the clear follows, 12 bits wide.
    widths = [9] + [9] * 255 + [10] * 512 + [11] * 1024 + [12] * 2047
    assert len(widths) == 1 + 3838
    offset = sum(widths)
    acc = int.from_bytes(stream, "little")
    assert (acc >> offset) & 0xFFF == CLEAR_CODE
    assert (acc >> (offset + 12)) & 0x1FF == data[3838]  # back to 9 bits
    assert compress(data) == stream


def test_reader_keeps_decoding_a_full_table_without_clear() -> None:
    data = de_bruijn_pairs()[:6000]
    stream = literal_stream(data, clear_when_full=False)
    assert decompress(stream) == data


def test_reader_accepts_stream_without_leading_clear() -> None:
    data = de_bruijn_pairs()[:5000]
    assert decompress(literal_stream(data, leading_clear=False)) == data


def test_kwkwk_case() -> None:
    # "aaa...": each new code is the one being defined (code == hi in the reader).
    for n in (1, 2, 3, 4, 5, 100, 10_000, 200_000):
        assert decompress(compress(b"a" * n)) == b"a" * n


# -- hostile input -------------------------------------------------------------------------


def test_invalid_code_is_rejected() -> None:
    with pytest.raises(MalformedDataError, match="invalid LZW code 300"):
        decompress(pack_codes([(CLEAR_CODE, 9), (300, 9), (EOF_CODE, 9)]))
    with pytest.raises(MalformedDataError, match="invalid LZW code 258"):
        decompress(pack_codes([(CLEAR_CODE, 9), (258, 9), (EOF_CODE, 9)]))


def test_empty_and_truncated_input() -> None:
    with pytest.raises(MalformedDataError):
        decompress(b"")
    with pytest.raises(MalformedDataError):
        decompress(b"\x00")
    stream = compress(os.urandom(1000))
    for cut in (1, 2, 100, len(stream) - 2):
        with pytest.raises(MalformedDataError):
            decompress(stream[:cut])


def test_trailing_bytes_after_eof_are_ignored() -> None:
    assert decompress(compress(TOBE) + b"garbage") == TOBE


def test_output_limit() -> None:
    data = b"x" * 100_000
    stream = compress(data)
    assert len(stream) < 1000
    assert decompress(stream, max_size=100_000) == data
    with pytest.raises(MalformedDataError, match="more than 99999 bytes"):
        decompress(stream, max_size=99_999)
    with pytest.raises(ValueError):
        decompress(stream, max_size=-1)


def test_bomb_is_stopped_at_the_default_limit() -> None:
    # Grow runs of zeros 1, 2, ... 3839 long (each code is the one being defined), let
    # the table fill up without a clear, then repeat the longest run: ~17 KiB of input
    # that would expand to ~50 MiB. The default 40 MiB bound must trip.
    def width(k: int) -> int:  # width of the k-th data code after a clear
        return 9 if k <= 255 else 10 if k <= 767 else 11 if k <= 1791 else 12

    codes = [(CLEAR_CODE, 9), (0, 9)]
    codes += [(code, width(code - 256)) for code in range(258, MAX_CODE + 1)]
    head = pack_codes([*codes, (EOF_CODE, 12)])
    assert decompress(head) == bytes(sum(range(1, 3840)))
    codes += [(MAX_CODE, 12)] * 12_000
    stream = pack_codes([*codes, (EOF_CODE, 12)])
    assert len(stream) < 24_000
    assert (
        len(decompress(stream, max_size=100 * 1024 * 1024)) == sum(range(1, 3840)) + 12_000 * 3839
    )
    with pytest.raises(MalformedDataError, match="more than 41943040 bytes"):
        decompress(stream)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_random_input_never_hangs_or_leaks_other_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedDataError):
        decompress(data, max_size=1 << 20)


# -- round trips ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_round_trip_binary(data: bytes) -> None:
    assert decompress(compress(data)) == data


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=3000),
    st.randoms(use_true_random=False),
)
def test_round_trip_repetitive_across_table_resets(
    words: list[bytes], count: int, rnd: random.Random
) -> None:
    data = b"".join(rnd.choice(words) for _ in range(count))
    assert decompress(compress(data)) == data


@pytest.mark.parametrize(
    "data",
    [
        os.urandom(300_000),  # ~75 table resets
        bytes(range(256)) * 3000,
        b"abcabcabd" * 50_000,
        de_bruijn_pairs() * 2,
    ],
    ids=["random", "ramp", "repetitive", "de-bruijn"],
)
def test_round_trip_large(data: bytes) -> None:
    assert decompress(compress(data)) == data
