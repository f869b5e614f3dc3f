"""Gossip key rotation across the pool, wire-compatible with Serf's key queries.

Owns both sides of Serf's internal key queries (serf/keymanager.go, internal_query.go):

* :class:`KeyQueryResponder` -- the answering side. Registered on a
  :class:`~pysyncer.gossip.serf.Serf`, it handles ``_serf_install-key``,
  ``_serf_use-key``, ``_serf_remove-key`` and ``_serf_list-keys``: it applies the change
  to the local :class:`~pysyncer.gossip.keyring.Keyring` (the very object the packet
  pipeline encrypts and decrypts with, so the change is live at once), writes the
  keyring file when one is configured, and answers with a ``nodeKeyResponse``
  (``[8][msgpack {Keys, Message, PrimaryKey, Result}]``). A list answer is truncated to
  fit the 1024-byte response limit, with a message saying so, as Serf does.
* :class:`KeyManager` -- the asking side: sends one query to the whole pool and
  aggregates the answers into a :class:`KeyResponse` (``num_nodes`` = members alive or
  suspect as memberlist counts them, ``num_resp``, ``num_err``, ``messages`` by node,
  ``keys`` and ``primary_keys`` -> how many nodes hold them). As in Serf, an operation
  fails unless every member answered and none reported an error; the failure carries
  the partial response (:class:`KeyOperationError`).

Rotation is install everywhere -> use -> remove the old key. Operations are serialized
per manager (Serf's KeyManager lock). Keys are given as standard base64.
Uses the Serf only through its public API (queries and ``internal_handlers``);
must not import the node or the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncer.errors import ConfigError, MalformedDataError
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.keyring import Keyring, decode_key, encode_key
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.serf import INTERNAL_QUERY_PREFIX, Serf, SerfError

__all__ = [
    "EMPTY_KEYRING_MESSAGE",
    "INSTALL_KEY_QUERY",
    "KEY_QUERIES",
    "LIST_KEYS_QUERY",
    "MIN_ENCODED_KEY_LENGTH",
    "NO_KEYRING_MESSAGE",
    "REMOVE_KEY_QUERY",
    "USE_KEY_QUERY",
    "EncryptionDisabledError",
    "KeyManager",
    "KeyManagerError",
    "KeyOperationError",
    "KeyQueryResponder",
    "KeyResponse",
    "aggregate_key_responses",
]

log = logging.getLogger(__name__)

INSTALL_KEY_QUERY = INTERNAL_QUERY_PREFIX + "install-key"
USE_KEY_QUERY = INTERNAL_QUERY_PREFIX + "use-key"
REMOVE_KEY_QUERY = INTERNAL_QUERY_PREFIX + "remove-key"
LIST_KEYS_QUERY = INTERNAL_QUERY_PREFIX + "list-keys"
KEY_QUERIES = (INSTALL_KEY_QUERY, USE_KEY_QUERY, REMOVE_KEY_QUERY, LIST_KEYS_QUERY)

MIN_ENCODED_KEY_LENGTH = 25
"""serf ``minEncodedKeyLength``: a list answer holds at most limit // 25 keys (40 at 1024)."""

# Serf's own answers when a node runs without encryption (internal_query.go).
NO_KEYRING_MESSAGE = "No keyring to modify (encryption not enabled)"
EMPTY_KEYRING_MESSAGE = "Keyring is empty (encryption not enabled)"


# -- errors ------------------------------------------------------------------------


class KeyManagerError(SerfError, RuntimeError):
    """Root of the key-rotation errors."""


class EncryptionDisabledError(KeyManagerError):
    """This node runs without gossip encryption, so it has no keyring to manage."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "encryption is not enabled on this node: start it with --encrypt KEY "
            "(or with a keyring file in its data directory)"
        )


class KeyOperationError(KeyManagerError):
    """Not every member answered, or some reported a failure; ``response`` has the details."""

    def __init__(self, message: str, response: KeyResponse) -> None:
        super().__init__(message)
        self.response = response


# -- asking side -------------------------------------------------------------------


@dataclass(slots=True)
class KeyResponse:
    """Aggregated answers to one key query (serf ``KeyResponse``)."""

    operation: str
    num_nodes: int = 0
    num_resp: int = 0
    num_err: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)
    no_response: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.num_err == 0 and self.num_resp == self.num_nodes

    def error(self) -> str | None:
        """Serf's error text for this response, None when the operation succeeded."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "num_nodes": self.num_nodes,
            "num_resp": self.num_resp,
            "num_err": self.num_err,
            "messages": dict(sorted(self.messages.items())),
            "keys": dict(sorted(self.keys.items())),
            "primary_keys": dict(sorted(self.primary_keys.items())),
            "no_response": sorted(self.no_response),
        }


def aggregate_key_responses(
    operation: str, responses: Mapping[str, bytes], num_nodes: int
) -> KeyResponse:
    """Fold node answers (node -> raw query-response payload) as serf ``streamKeyResp``.

    An answer that is not a ``nodeKeyResponse`` counts as an error. A successful
    answer with a message is kept in ``messages`` (a warning, such as a truncated key
    list) without counting as an error. Empty primary keys (answers to operations other
    than list) are not counted.
    """
    result = KeyResponse(operation, num_nodes=num_nodes)
    keys: Counter[str] = Counter()
    primaries: Counter[str] = Counter()
    for node, payload in responses.items():
        result.num_resp += 1
        if not payload or payload[0] != sm.SerfMessageType.KEY_RESPONSE:
            result.messages[node] = f"Invalid key query response type: {payload!r}"
            result.num_err += 1
            continue
        try:
            answer = sm.NodeKeyResponse.from_bytes(payload)
        except MalformedDataError as exc:
            result.messages[node] = f"Failed to decode key query response: {exc}"
            result.num_err += 1
            continue
        if not answer.result:
            result.messages[node] = answer.message or "failed (no message)"
            result.num_err += 1
        elif answer.message:
            result.messages[node] = answer.message
        keys.update(answer.keys or ())
        if answer.primary_key:
            primaries[answer.primary_key] += 1
    result.keys = dict(keys)
    result.primary_keys = dict(primaries)
    return result


class KeyManager:
    """Install, use, remove and list gossip keys on every member of the pool.

    ``keyring`` returns this node's live keyring (None without encryption: every
    operation then raises :class:`EncryptionDisabledError` before sending anything).
    """

    def __init__(
        self,
        serf: Serf,
        keyring: Callable[[], Keyring | None],
        *,
        timeout: float | None = None,
    ) -> None:
        self.serf = serf
        self._keyring = keyring
        self.timeout = timeout
        self._lock = asyncio.Lock()

    async def install_key(self, key: str) -> KeyResponse:
        return await self._request(INSTALL_KEY_QUERY, key)

    async def use_key(self, key: str) -> KeyResponse:
        return await self._request(USE_KEY_QUERY, key)

    async def remove_key(self, key: str) -> KeyResponse:
        return await self._request(REMOVE_KEY_QUERY, key)

    async def list_keys(self) -> KeyResponse:
        return await self._request(LIST_KEYS_QUERY, None)

    async def _request(self, query: str, key: str | None) -> KeyResponse:
        if self._keyring() is None:
            raise EncryptionDisabledError()
        raw = None if key is None else decode_key(key)  # ConfigError on a bad key
        payload = sm.KeyRequest(raw).to_bytes()
        async with self._lock:
            pending = self.serf.start_query(query, payload, timeout=self.timeout)
            num_nodes = self._num_members()
            result = await pending.wait()
        response = aggregate_key_responses(
            query[len(INTERNAL_QUERY_PREFIX) :], result.responses, num_nodes
        )
        response.no_response = sorted(result.expected - set(result.responses))
        error = response.error()
        if error is not None:
            raise KeyOperationError(error, response)
        return response

    def _num_members(self) -> int:
        """memberlist ``NumMembers``: nodes not dead or left, this one included."""
        node = self.serf.node
        return sum(
            1 for state in node.members() if state.status in (NodeStatus.ALIVE, NodeStatus.SUSPECT)
        )


# -- answering side ----------------------------------------------------------------


class KeyQueryResponder:
    """Answers Serf's key queries from the local keyring (serf ``serfQueries``).

    ``keyring`` returns the live keyring (None: encryption off, every answer is Serf's
    "encryption not enabled" failure). ``keyring_file``, when set, is rewritten after
    every change, as Serf's ``KeyringFile``.
    """

    def __init__(
        self,
        serf: Serf,
        keyring: Callable[[], Keyring | None],
        keyring_file: Path | None = None,
    ) -> None:
        self.serf = serf
        self._keyring = keyring
        self.keyring_file = keyring_file

    def register(self) -> None:
        """Let ``serf`` route the four key queries here."""
        for name in KEY_QUERIES:
            self.serf.internal_handlers[name] = self.handle

    def handle(self, query: sm.SerfQuery) -> bytes:
        """The raw ``nodeKeyResponse`` answering ``query``."""
        if query.name == LIST_KEYS_QUERY:
            return self._list_keys(query)
        return self._modify(query).to_bytes()

    def _modify(self, query: sm.SerfQuery) -> sm.NodeKeyResponse:
        operation = query.name[len(INTERNAL_QUERY_PREFIX) :]
        try:
            request = sm.KeyRequest.from_bytes(query.payload or b"")
        except MalformedDataError as exc:
            log.error("serf %s: failed to decode key request: %s", self.serf.name, exc)
            return sm.NodeKeyResponse(False, "")  # Serf answers with no message here
        keyring = self._keyring()
        if keyring is None:
            log.error("serf %s: %s", self.serf.name, NO_KEYRING_MESSAGE)
            return sm.NodeKeyResponse(False, NO_KEYRING_MESSAGE)
        log.info("serf %s: received %s query", self.serf.name, operation)
        try:
            key = request.key or b""
            if query.name == INSTALL_KEY_QUERY:
                keyring.add(key)
            elif query.name == USE_KEY_QUERY:
                keyring.use(key)
            else:
                keyring.remove(key)
        except ConfigError as exc:
            log.error("serf %s: %s failed: %s", self.serf.name, operation, exc)
            return sm.NodeKeyResponse(False, str(exc))
        if self.keyring_file is not None:
            try:
                keyring.save(self.keyring_file)
            except ConfigError as exc:
                log.error("serf %s: %s", self.serf.name, exc)
                return sm.NodeKeyResponse(False, str(exc))
        return sm.NodeKeyResponse(True, "")

    def _list_keys(self, query: sm.SerfQuery) -> bytes:
        keyring = self._keyring()
        if keyring is None:
            log.error("serf %s: %s", self.serf.name, EMPTY_KEYRING_MESSAGE)
            return sm.NodeKeyResponse(False, EMPTY_KEYRING_MESSAGE).to_bytes()
        keys = [encode_key(key) for key in keyring.keys]
        primary = encode_key(keyring.primary)
        limit = self.serf.profile.query_response_size_limit
        count = min(len(keys), limit // MIN_ENCODED_KEY_LENGTH)
        message = ""
        if count < len(keys):
            message = f"truncated key list response, showing first {count} of {len(keys)} keys"
        while True:
            answer = sm.NodeKeyResponse(True, message, tuple(keys[:count]), primary).to_bytes()
            envelope = sm.SerfQueryResponse(query.ltime, query.id, self.serf.name, 0, answer)
            if len(envelope.to_bytes()) <= limit or count == 0:
                break
            count -= 1
            message = f"truncated key list response, showing first {count} of {len(keys)} keys"
        if message:
            log.warning("serf %s: %s", self.serf.name, message)
        return answer
