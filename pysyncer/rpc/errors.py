"""Errors of the syncer-to-syncer RPC, each also the builtin a caller already expects.

Status codes of gRPC are mapped here, in one place (:func:`from_status`), so that the
sync engine never sees a ``grpc`` exception: a peer that is down or unreachable raises
:class:`UnavailableError` (a ``ConnectionError``), a deadline :class:`DeadlineExceededError`
(a ``TimeoutError``), bad bytes :class:`PayloadError` (a ``ValueError``).
"""

from __future__ import annotations

from pysyncer.errors import MalformedDataError, PysyncerError

__all__ = [
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


def from_status(code: str, details: str, target: str) -> PysyncerError:
    """The pysyncer error for a gRPC status (by name) returned by ``target``."""
    message = f"{target}: {code}: {details or 'no details'}"
    if code == "RESOURCE_EXHAUSTED":
        return OversizedPayloadError(message)
    return _BY_CODE.get(code, RemoteError)(message, code)
