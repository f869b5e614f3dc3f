"""Gossip encryption keys and memberlist's AES-GCM framing, wire-compatible with Serf.

Owns:

* :class:`Keyring` -- the ordered key list of memberlist's ``Keyring``: index 0 is the
  primary key, the only one used to encrypt; decryption tries every key in order (there
  is no key id on the wire). Keys are 16, 24 or 32 bytes (AES-128/192/256). Keys travel
  as standard base64, the format ``serf keygen`` prints and ``serf agent -encrypt``
  takes, and persist in Serf's keyring file: a JSON list of base64 keys, primary first.
* The encrypted-payload layout of memberlist ``security.go``:
  ``[version u8][nonce 12 B][ciphertext][GCM tag 16 B]``. Version 1 (the default, used
  by memberlist at protocol >= 2) encrypts the message as is; version 0 PKCS#7-pads it
  to a multiple of 16 bytes first. Both are accepted on input.
* The two framings memberlist wraps around it (``net.go``):

  - UDP packets (:func:`encrypt_packet`): the encrypted payload is the whole packet
    body; the additional authenticated data (AAD) is the label's bytes (empty without a
    label). The ``[244][len][label]`` label header itself is prepended by the transport
    (memberlist's ``labelWrappedTransport``), not here.
  - TCP streams (:func:`encrypt_stream_payload`): ``[10 encryptMsg][u32 BE n][payload]``
    where ``n`` is the length of the encrypted payload (version byte included) and the
    AAD is those first 5 bytes followed by the label's bytes.

Every failure to decrypt (too short, unknown version, no key opens it, bad padding)
raises :class:`~pysyncer.errors.MalformedDataError`; exceptions of the ``cryptography``
package never escape. Invalid keys and key files raise :class:`~pysyncer.errors.ConfigError`.
Key rotation across a cluster (Serf's internal key queries) belongs to the Serf layer.
Must not import other gossip modules.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pysyncer._core import wire
from pysyncer.errors import ConfigError, MalformedDataError

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_ENCRYPTION_VERSION",
    "ENCRYPTION_VERSION_PADDED",
    "ENCRYPTION_VERSION_UNPADDED",
    "ENCRYPT_MSG_TYPE",
    "KEY_SIZES",
    "LABEL_MAX_SIZE",
    "MAX_STREAM_PAYLOAD",
    "NONCE_SIZE",
    "OVERHEAD_V0",
    "OVERHEAD_V1",
    "STREAM_HEADER_SIZE",
    "TAG_SIZE",
    "VERSION_SIZE",
    "BytesLike",
    "Keyring",
    "decode_key",
    "decrypt_packet",
    "decrypt_stream_payload",
    "encode_key",
    "encrypt_packet",
    "encrypt_stream_payload",
    "encrypted_length",
    "label_bytes",
    "stream_payload_length",
    "validate_key",
]

KEY_SIZES: tuple[int, ...] = (16, 24, 32)
"""Accepted key lengths in bytes: AES-128, AES-192, AES-256."""

ENCRYPTION_VERSION_PADDED: int = 0
"""Version 0: PKCS#7 padding to the AES block size before sealing (memberlist protocol 1)."""

ENCRYPTION_VERSION_UNPADDED: int = 1
"""Version 1: no padding (memberlist protocol >= 2)."""

DEFAULT_ENCRYPTION_VERSION: int = ENCRYPTION_VERSION_UNPADDED
"""What memberlist sends at every protocol version Serf speaks today."""

VERSION_SIZE: int = 1
NONCE_SIZE: int = 12
TAG_SIZE: int = 16
BLOCK_SIZE: int = 16
"""AES block size: the PKCS#7 padding unit of version 0."""

OVERHEAD_V0: int = VERSION_SIZE + NONCE_SIZE + BLOCK_SIZE + TAG_SIZE
"""45: largest growth of a message under version 0 (memberlist ``encryptOverhead(0)``)."""

OVERHEAD_V1: int = VERSION_SIZE + NONCE_SIZE + TAG_SIZE
"""29: exact growth of a message under version 1 (memberlist ``encryptOverhead(1)``)."""

ENCRYPT_MSG_TYPE: int = 10
"""memberlist ``encryptMsg``: first byte of an encrypted TCP stream."""

STREAM_HEADER_SIZE: int = 5
"""``[10][u32 BE length]`` in front of an encrypted stream payload."""

MAX_STREAM_PAYLOAD: int = 20 * 1024 * 1024
"""memberlist ``maxPushStateBytes``: largest encrypted stream payload accepted."""

LABEL_MAX_SIZE: int = wire.LABEL_MAX_SIZE
"""memberlist ``LabelMaxSize``: labels are at most 255 bytes."""

BytesLike = bytes | bytearray | memoryview
"""What the decrypting functions accept (read without copying)."""

_STREAM_HEADER = struct.Struct(">BI")
_VERSIONS = (ENCRYPTION_VERSION_PADDED, ENCRYPTION_VERSION_UNPADDED)
_PAYLOAD_START = VERSION_SIZE + NONCE_SIZE


def validate_key(key: BytesLike) -> bytes:
    """``key`` as immutable ``bytes`` if it is 16, 24 or 32 bytes long, else ConfigError."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"an encryption key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if len(key) not in KEY_SIZES:
        raise ConfigError(
            f"encryption key is {len(key)} bytes; it must be 16, 24 or 32 bytes "
            "(AES-128, AES-192 or AES-256)"
        )
    return key


def decode_key(text: str) -> bytes:
    """Decode a standard-base64 key as printed by ``serf keygen``; surrounding blanks ignored."""
    if not isinstance(text, str):
        raise TypeError(f"a base64 key must be str, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ConfigError("encryption key is empty; expected base64 text (see 'serf keygen')")
    try:
        key = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ConfigError(
            f"encryption key is not valid standard base64 ({exc}); see 'serf keygen'"
        ) from None
    return validate_key(key)


def encode_key(key: bytes) -> str:
    """Standard base64 of a valid key, the form ``serf agent -encrypt`` takes."""
    return base64.b64encode(validate_key(key)).decode("ascii")


def encrypted_length(version: int, plaintext_length: int) -> int:
    """Bytes of the encrypted payload for a message of ``plaintext_length`` bytes."""
    if version == ENCRYPTION_VERSION_UNPADDED:
        return OVERHEAD_V1 + plaintext_length
    if version == ENCRYPTION_VERSION_PADDED:
        padding = BLOCK_SIZE - plaintext_length % BLOCK_SIZE
        return OVERHEAD_V1 + plaintext_length + padding
    raise ValueError(f"unknown encryption version {version} (known: 0, 1)")


def label_bytes(label: str | bytes) -> bytes:
    """The bytes of a pool label; ConfigError (a ValueError) when it is too long."""
    data = label.encode() if isinstance(label, str) else bytes(label)
    if len(data) > LABEL_MAX_SIZE:
        raise ConfigError(f"label is {len(data)} bytes; at most {LABEL_MAX_SIZE} are allowed")
    return data


class Keyring:
    """Ordered AES-GCM keys; ``keys[0]`` is the primary key, the only one that encrypts.

    Built from one key or an iterable of keys (at least one); duplicates are dropped
    (first occurrence wins), as in memberlist's ``NewKeyring``. Mutations swap an
    immutable tuple, so a concurrent reader sees either the old or the new key list,
    never a mix. ``repr`` never shows key material.
    """

    __slots__ = ("_ring",)

    _ring: tuple[tuple[bytes, AESGCM], ...]

    def __init__(self, keys: Iterable[bytes] | bytes) -> None:
        candidates: Iterable[bytes] = (keys,) if isinstance(keys, bytes) else keys
        ordered: list[bytes] = []
        for key in candidates:
            valid = validate_key(key)
            if valid not in ordered:
                ordered.append(valid)
        if not ordered:
            raise ConfigError("a keyring needs at least one key (the primary key)")
        self._ring = tuple((key, AESGCM(key)) for key in ordered)

    # -- constructors ----------------------------------------------------------------

    @classmethod
    def from_base64(cls, keys: str | Iterable[str]) -> Keyring:
        """A keyring from one base64 key or several, primary first."""
        texts = (keys,) if isinstance(keys, str) else tuple(keys)
        decoded: list[bytes] = []
        for position, text in enumerate(texts):
            try:
                decoded.append(decode_key(text))
            except ConfigError as exc:
                raise ConfigError(f"key #{position + 1}: {exc}") from None
        return cls(decoded)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read a Serf keyring file: a JSON list of base64 keys, primary first."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read keyring file {file}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"keyring file {file} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise ConfigError(f"keyring file {file} must hold a JSON list of base64 strings")
        if not data:
            raise ConfigError(f"keyring file {file} contains no keys")
        try:
            return cls.from_base64(data)
        except ConfigError as exc:
            raise ConfigError(f"keyring file {file}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the keyring in Serf's format, atomically, with mode 0600.

        The file is written to a temporary sibling, flushed to disk, then renamed over
        ``path`` (and the directory flushed), so a crash leaves the old or the new file.
        """
        file = Path(path)
        text = json.dumps([encode_key(key) for key in self.keys], indent=2)
        tmp: str | None = None
        try:
            # mkstemp: a unique name in the same directory (same filesystem), mode 0600.
            fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
            try:
                os.write(fd, text.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, file)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise ConfigError(f"cannot write keyring file {file}: {exc}") from None
        with contextlib.suppress(OSError):  # not every filesystem can fsync a directory
            dir_fd = os.open(file.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- key management --------------------------------------------------------------

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Installed keys, primary first."""
        return tuple(key for key, _ in self._ring)

    @property
    def primary(self) -> bytes:
        """The key used to encrypt."""
        return self._ring[0][0]

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys)

    def __contains__(self, key: object) -> bool:
        return any(key == installed for installed, _ in self._ring)

    def __repr__(self) -> str:
        return f"<Keyring {len(self._ring)} key(s)>"

    def add(self, key: bytes) -> None:
        """Install ``key`` for decryption (appended last); no-op if already installed."""
        key = validate_key(key)
        if key not in self:
            self._ring = (*self._ring, (key, AESGCM(key)))

    def use(self, key: bytes) -> None:
        """Make an installed ``key`` the primary one; the others keep their order."""
        key = validate_key(key)
        for entry in self._ring:
            if entry[0] == key:
                self._ring = (entry, *(other for other in self._ring if other is not entry))
                return
        raise ConfigError("cannot use a key that is not installed in the keyring; add it first")

    def remove(self, key: bytes) -> None:
        """Uninstall a secondary ``key``; no-op if absent. The primary key cannot be removed."""
        key = validate_key(key)
        if key == self._ring[0][0]:
            raise ConfigError("cannot remove the primary key; make another key primary first")
        self._ring = tuple(entry for entry in self._ring if entry[0] != key)

    # -- crypto ------------------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, aad: bytes = b"", version: int = DEFAULT_ENCRYPTION_VERSION
    ) -> bytes:
        """``[version][nonce][ciphertext][tag]`` of ``plaintext`` under the primary key."""
        if version == ENCRYPTION_VERSION_PADDED:
            padding = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
            plaintext = bytes(plaintext) + bytes((padding,)) * padding
        elif version != ENCRYPTION_VERSION_UNPADDED:
            raise ValueError(f"unknown encryption version {version} (known: 0, 1)")
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ring[0][1].encrypt(nonce, plaintext, aad)
        return b"".join((bytes((version,)), nonce, sealed))

    def decrypt(self, data: BytesLike, aad: bytes = b"") -> bytes:
        """Plaintext of an encrypted payload, trying every key in order (version 0 or 1)."""
        view = memoryview(data)
        if not view:
            raise MalformedDataError("cannot decrypt an empty payload")
        version = view[0]
        if version not in _VERSIONS:
            raise MalformedDataError(f"unsupported encryption version {version}")
        if len(view) < encrypted_length(version, 0):
            raise MalformedDataError(
                f"encrypted payload is too small to decrypt: {len(view)} bytes "
                f"(version {version} needs at least {encrypted_length(version, 0)})"
            )
        nonce = view[VERSION_SIZE:_PAYLOAD_START]
        sealed = view[_PAYLOAD_START:]
        for _, cipher in self._ring:
            try:
                plain = cipher.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            if version == ENCRYPTION_VERSION_PADDED:
                return _unpad(plain)
            return plain
        raise MalformedDataError("no installed key could decrypt the message")


def _unpad(plain: bytes) -> bytes:
    padding = plain[-1] if plain else 0
    if not 1 <= padding <= BLOCK_SIZE or plain[-padding:] != bytes((padding,)) * padding:
        raise MalformedDataError("decrypted version-0 payload has invalid PKCS#7 padding")
    return plain[:-padding]


def encrypt_packet(
    keyring: Keyring,
    data: bytes,
    label: str | bytes = b"",
    version: int = DEFAULT_ENCRYPTION_VERSION,
) -> bytes:
    """Encrypted UDP packet body of ``data`` (AAD = label bytes); label header not added."""
    return keyring.encrypt(data, label_bytes(label), version)


def decrypt_packet(keyring: Keyring, data: BytesLike, label: str | bytes = b"") -> bytes:
    """Plaintext of an encrypted UDP packet body (its label header already removed)."""
    return keyring.decrypt(data, label_bytes(label))


def encrypt_stream_payload(
    keyring: Keyring,
    data: bytes,
    label: str | bytes = b"",
    version: int = DEFAULT_ENCRYPTION_VERSION,
) -> bytes:
    """``[10][u32 BE length][encrypted payload]`` as memberlist writes on a TCP stream.

    ``data`` is the plaintext stream message (its own type byte first, possibly a
    ``compressMsg``). The length counts the encrypted payload, version byte included.
    """
    header = _STREAM_HEADER.pack(ENCRYPT_MSG_TYPE, encrypted_length(version, len(data)))
    return header + keyring.encrypt(data, header + label_bytes(label), version)


def stream_payload_length(header: BytesLike, max_size: int = MAX_STREAM_PAYLOAD) -> int:
    """Length of the encrypted payload that follows a 5-byte ``[10][u32 BE]`` header.

    For reading a stream: read :data:`STREAM_HEADER_SIZE` bytes, call this, read that
    many more bytes, then give all of them to :func:`decrypt_stream_payload`.
    """
    if len(header) < STREAM_HEADER_SIZE:
        raise MalformedDataError(
            f"encrypted stream header is {len(header)} bytes, {STREAM_HEADER_SIZE} expected"
        )
    msg_type, length = _STREAM_HEADER.unpack_from(header)
    if msg_type != ENCRYPT_MSG_TYPE:
        raise MalformedDataError(
            f"stream message type is {msg_type}, not {ENCRYPT_MSG_TYPE} (encryptMsg)"
        )
    if length > max_size:
        raise MalformedDataError(f"encrypted stream payload of {length} bytes exceeds {max_size}")
    return int(length)


def decrypt_stream_payload(
    keyring: Keyring,
    data: BytesLike,
    label: str | bytes = b"",
    max_size: int = MAX_STREAM_PAYLOAD,
) -> bytes:
    """Plaintext of one whole ``[10][u32 BE length][encrypted payload]`` stream frame."""
    length = stream_payload_length(data, max_size)
    if len(data) != STREAM_HEADER_SIZE + length:
        raise MalformedDataError(
            f"encrypted stream frame announces {length} payload bytes "
            f"but carries {len(data) - STREAM_HEADER_SIZE}"
        )
    aad = bytes(data[:STREAM_HEADER_SIZE]) + label_bytes(label)
    return keyring.decrypt(memoryview(data)[STREAM_HEADER_SIZE:], aad)
