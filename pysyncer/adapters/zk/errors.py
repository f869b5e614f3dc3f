"""Typed ZooKeeper errors: each server error code has a class, under the adapter errors.

A :class:`ZkError` is an :class:`~pysyncer.adapters.base.AdapterError` whose ``code`` is
the ZooKeeper code (``"-101"``); the common ones also subclass the adapter error the
sync engine understands (no node -> NotFoundError, node exists -> ConflictError,
connection loss -> UnavailableError).
"""

from __future__ import annotations

from pysyncer.adapters.base import AdapterError, ConflictError, NotFoundError, UnavailableError
from pysyncer.adapters.zk.proto import ERROR_NAMES, Err

__all__ = [
    "AuthFailedError",
    "BadArgumentsError",
    "BadVersionError",
    "ConnectionLossError",
    "NoAuthError",
    "NoChildrenForEphemeralsError",
    "NoNodeError",
    "NodeExistsError",
    "NotEmptyError",
    "SessionExpiredError",
    "ZkError",
    "error_for",
]


class ZkError(AdapterError):
    """A ZooKeeper request failed; ``code`` is the numeric error code as text."""

    errno = Err.SYSTEM_ERROR

    def __init__(self, message: str, *, errno: int | None = None, path: str = "") -> None:
        number = self.errno if errno is None else errno
        super().__init__(message, code=str(number))
        self.errno = number
        self.path = path


class NoNodeError(ZkError, NotFoundError):
    errno = Err.NO_NODE


class NodeExistsError(ZkError, ConflictError):
    errno = Err.NODE_EXISTS


class NotEmptyError(ZkError, ConflictError):
    errno = Err.NOT_EMPTY


class BadVersionError(ZkError, ConflictError):
    errno = Err.BAD_VERSION


class NoChildrenForEphemeralsError(ZkError, ConflictError):
    errno = Err.NO_CHILDREN_FOR_EPHEMERALS


class NoAuthError(ZkError):
    errno = Err.NO_AUTH


class AuthFailedError(ZkError, PermissionError):
    """The server refused the client's credentials (``addauth``)."""

    errno = Err.AUTH_FAILED


class BadArgumentsError(ZkError, ValueError):
    errno = Err.BAD_ARGUMENTS


class ConnectionLossError(ZkError, UnavailableError):
    """No server answered (or the connection broke before the reply)."""

    errno = Err.CONNECTION_LOSS


class SessionExpiredError(ZkError, UnavailableError):
    """The session ended; its ephemeral nodes and watches are gone."""

    errno = Err.SESSION_EXPIRED


_BY_CODE: dict[int, type[ZkError]] = {
    cls.errno: cls
    for cls in (
        NoNodeError,
        NodeExistsError,
        NotEmptyError,
        BadVersionError,
        NoChildrenForEphemeralsError,
        NoAuthError,
        AuthFailedError,
        BadArgumentsError,
        ConnectionLossError,
        SessionExpiredError,
    )
}
_BY_CODE[Err.OPERATION_TIMEOUT] = ConnectionLossError
_BY_CODE[Err.REQUEST_TIMEOUT] = ConnectionLossError
_BY_CODE[Err.SESSION_MOVED] = ConnectionLossError


def error_for(errno: int, what: str, path: str = "") -> ZkError:
    """The typed error for a server error code (unknown codes give a plain ZkError)."""
    cls = _BY_CODE.get(errno, ZkError)
    name = ERROR_NAMES.get(errno, "UNKNOWN")
    where = f" {path}" if path else ""
    return cls(f"{what}{where}: {name} ({errno})", errno=errno, path=path)
