"""Errors of the syncer-to-syncer RPC, each also the builtin a caller already expects.

Status codes of gRPC are mapped here, in one place (:func:`from_status`), so that the
sync engine never sees a ``grpc`` exception: a peer that is down or unreachable raises
:class:`UnavailableError` (a ``ConnectionError``), a deadline :class:`DeadlineExceededError`
(a ``TimeoutError``), bad bytes :class:`PayloadError` (a ``ValueError``).

``RESOURCE_EXHAUSTED`` means two things in gRPC: a message or slot past a size limit
(:class:`OversizedPayloadError`: the same request fails again) and a peer that serves
as many streams or calls as it allows (:class:`CallRefusedError`, a
``ConnectionRefusedError``: try again after a backoff). A size refusal is told by gRPC's
own words for it (:data:`SIZE_LIMIT_DETAIL`) or by the refusal kind a pysyncer server
sends in the trailing metadata :data:`REFUSAL_METADATA` (:data:`SIZE_REFUSALS`).
"""

from __future__ import annotations

from pysyncer.errors import MalformedDataError, PysyncerError

__all__ = [
    "REFUSAL_METADATA",
    "SIZE_LIMIT_DETAIL",
    "SIZE_REFUSALS",
    "CallRefusedError",
    "DeadlineExceededError",
    "OversizedPayloadError",
    "PayloadError",
    "PermissionDeniedError",
    "RemoteError",
    "RequestRejectedError",
    "RpcError",
    "UnavailableError",
    "from_status",
]


REFUSAL_METADATA = "pysyncer-refusal"  # trailing metadata: why a pysyncer server refused
SIZE_REFUSALS = frozenset({"slot_too_large"})  # refusal kinds that are about size
SIZE_LIMIT_DETAIL = "larger than max"  # gRPC's details for a message past a size limit


class RpcError(PysyncerError):
    """A call to a peer syncer failed; ``code`` is the gRPC status name (e.g. ``UNAVAILABLE``)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class PayloadError(MalformedDataError):
    """A batch of records does not have the expected shape (encoding or decoding)."""


class OversizedPayloadError(PayloadError):
    """A message or payload is larger than the configured maximum."""


class UnavailableError(RpcError, ConnectionError):
    """The peer cannot be reached, refused the TLS handshake, or is shutting down."""


class CallRefusedError(RpcError, ConnectionRefusedError):
    """The peer refused the call for now: it serves as many streams or calls as it allows."""


class DeadlineExceededError(RpcError, TimeoutError):
    """The call did not complete within its deadline."""


class RequestRejectedError(RpcError, ValueError):
    """The peer rejected the request as invalid (bad slot, wrong data center, ...)."""


class PermissionDeniedError(RpcError, PermissionError):
    """The peer refused the caller's identity."""


class RemoteError(RpcError, RuntimeError):
    """The peer failed while serving the call (its own error, not the caller's)."""


_BY_CODE: dict[str, type[RpcError]] = {
    "UNAVAILABLE": UnavailableError,
    "CANCELLED": UnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "INVALID_ARGUMENT": RequestRejectedError,
    "FAILED_PRECONDITION": RequestRejectedError,
    "OUT_OF_RANGE": RequestRejectedError,
    "NOT_FOUND": RequestRejectedError,
    "UNAUTHENTICATED": PermissionDeniedError,
    "PERMISSION_DENIED": PermissionDeniedError,
}


def from_status(code: str, details: str, target: str, refusal: str = "") -> PysyncerError:
    """The pysyncer error for a gRPC status (by name) returned by ``target``; ``refusal``
    is the :data:`REFUSAL_METADATA` the call ended with, if any."""
    message = f"{target}: {code}: {details or 'no details'}"
    if code == "RESOURCE_EXHAUSTED":
        if refusal in SIZE_REFUSALS or SIZE_LIMIT_DETAIL in (details or ""):
            return OversizedPayloadError(message)
        return CallRefusedError(message, code)
    return _BY_CODE.get(code, RemoteError)(message, code)
