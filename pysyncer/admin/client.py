"""A small blocking client of the admin API, for the command line.

Owns request/response handling between the operator commands (``pysyncer members``,
``info``, ``monitor``, ``leave``, ``event``, ``query``, ``keys``, ``status``...) and a
running daemon: URLs, JSON bodies, the bearer token, timeouts, and errors turned into one
clear line. One typed method per route answers with the payload types of
:mod:`pysyncer.admin.payloads` (the daemon is trusted to send what they describe: they
are not re-validated). The token comes from the file the daemon reads too
(:func:`token_from_file`: ``--admin-token-file`` or ``PYSYNCER_ADMIN_TOKEN_FILE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from pysyncer.admin import paths
from pysyncer.admin.auth import TOKEN_FILE_ENV, read_token_file
from pysyncer.admin.payloads import (
    CoordinatesAnswer,
    ErrorAnswer,
    EventRequest,
    EventsAnswer,
    EventSent,
    ForceLeaveAnswer,
    ForceLeaveRequest,
    FullSyncAnswer,
    Health,
    KeyAnswer,
    KeyFailure,
    KeyRequest,
    LeaveAnswer,
    MembersAnswer,
    QueryAnswer,
    QueryRequest,
    SyncStatus,
)
from pysyncer.errors import PysyncerError

__all__ = ["AdminClient", "AdminUnavailableError", "KeysRefusedError", "token_from_file"]

KEYS_TIMEOUT = 120.0  # a key query waits for every member, up to Serf's query timeout
QUERY_SLACK = 10.0  # seconds added to a query's own timeout for the HTTP round trip
DEFAULT_QUERY_TIMEOUT_MS = 60_000  # what the HTTP wait assumes when the query names none


class AdminUnavailableError(PysyncerError, ConnectionError):
    """The daemon's admin API could not be reached or answered with an error."""


class KeysRefusedError(AdminUnavailableError):
    """A key operation answered with an error: some member failed or did not answer
    (502, a :class:`KeyFailure`), or the request was refused (an :class:`ErrorAnswer`)."""

    def __init__(self, method: str, status: int, answer: KeyFailure | ErrorAnswer) -> None:
        super().__init__(f"{method} {paths.KEYS}: {status} {answer['error']}")
        self.status = status
        self.answer = answer


def token_from_file(path: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The admin token in ``path``, else in the file ``PYSYNCER_ADMIN_TOKEN_FILE`` names;
    None when neither is given. ConfigError if the file cannot be read."""
    source = os.environ if environ is None else environ
    if path:
        return read_token_file(Path(path).expanduser(), "--admin-token-file")
    if source.get(TOKEN_FILE_ENV):
        return read_token_file(Path(source[TOKEN_FILE_ENV]).expanduser(), TOKEN_FILE_ENV)
    return None


class AdminClient:
    """``token``: sent as ``Authorization: Bearer`` with every request when given."""

    def __init__(self, address: str, timeout: float = 10.0, token: str | None = None) -> None:
        self.base = address if address.startswith("http") else f"http://{address}"
        self.timeout = timeout
        self._token = token

    def __repr__(self) -> str:
        return f"<AdminClient {self.base} {'with' if self._token else 'without'} token>"

    # -- one method per route -----------------------------------------------------------

    def health(self) -> Health:
        return cast(Health, self.get(paths.HEALTH))

    def members(self) -> MembersAnswer:
        return cast(MembersAnswer, self.get(paths.MEMBERS))

    def send_event(self, event: EventRequest) -> EventSent:
        return cast(EventSent, self.post(paths.EVENTS, event))

    def coordinates(self) -> CoordinatesAnswer:
        return cast(CoordinatesAnswer, self.get(paths.COORDINATES))

    def events(self) -> EventsAnswer:
        return cast(EventsAnswer, self.get(paths.EVENTS))

    def query(self, query: QueryRequest) -> QueryAnswer:
        wait = query.get("timeout_ms", DEFAULT_QUERY_TIMEOUT_MS) / 1000 + QUERY_SLACK
        return cast(QueryAnswer, self.post(paths.QUERIES, query, timeout=wait))

    def keys(self, request: KeyRequest | None = None) -> KeyAnswer:
        """``GET /v1/keys`` (no request: list) or ``POST`` (install, use, remove).

        Raises :class:`KeysRefusedError` with the daemon's answer for any status but 200.
        """
        method = "GET" if request is None else "POST"
        status, answer = self.call(method, paths.KEYS, request, KEYS_TIMEOUT)
        if status != 200:
            raise KeysRefusedError(method, status, answer)
        return cast(KeyAnswer, answer)

    def leave(self) -> LeaveAnswer:
        return cast(LeaveAnswer, self.post(paths.LEAVE, {}))

    def force_leave(self, request: ForceLeaveRequest) -> ForceLeaveAnswer:
        return cast(ForceLeaveAnswer, self.post(paths.FORCE_LEAVE, request))

    def monitor(self, level: str) -> Iterator[str]:
        """``GET /v1/monitor``: the daemon's log lines (NDJSON, one per item) as they come,
        until the daemon ends the stream. Waits for lines without a timeout."""
        request = self._request("GET", f"{paths.MONITOR}?{urlencode({'level': level})}", None)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            answer = self._refused(exc, "GET", paths.MONITOR)
            raise AdminUnavailableError(
                f"GET {paths.MONITOR}: {exc.code} {answer['error']}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None
        with response:
            with contextlib.suppress(AttributeError):  # no socket object: keep its timeout
                response.fp.raw._sock.settimeout(None)  # a quiet daemon is not a dead one
            for raw in response:
                line = raw.decode(errors="replace").strip()
                if line:
                    yield line

    def sync_status(self) -> SyncStatus:
        return cast(SyncStatus, self.get(paths.SYNC_STATUS))

    def full_sync(self) -> FullSyncAnswer:
        return cast(FullSyncAnswer, self.post(paths.SYNC_FULL, {}))

    # -- transport ----------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self._call("GET", path, None, self.timeout)

    def post(self, path: str, body: Mapping[str, Any], timeout: float | None = None) -> Any:
        return self._call("POST", path, body, timeout or self.timeout)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float) -> Any:
        status, answer = self.call(method, path, body, timeout)
        if status >= 400:
            raise AdminUnavailableError(f"{method} {path}: {status} {answer['error']}")
        return answer

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """``(HTTP status, JSON body)``; an error status with a JSON ``error`` body is returned,
        any other failure raises :class:`AdminUnavailableError`."""
        request = self._request(method, path, body)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return int(exc.code), self._refused(exc, method, path)
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return urllib.request.Request(self.base + path, data=data, method=method, headers=headers)

    @staticmethod
    def _refused(exc: urllib.error.HTTPError, method: str, path: str) -> Any:
        """The JSON error body of ``exc``; AdminUnavailableError when it has none or is a
        401 (with the hint how to give the token)."""
        try:
            answer = json.loads(exc.read())
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "error" not in answer:
            raise AdminUnavailableError(f"{method} {path}: {exc.code} {exc.reason}") from None
        if exc.code == 401:
            hint = "give --admin-token-file or " + TOKEN_FILE_ENV
            raise AdminUnavailableError(
                f"{method} {path}: 401 {answer['error']} ({hint})"
            ) from None
        return answer

    def _unreachable(self, exc: OSError) -> AdminUnavailableError:
        reason = getattr(exc, "reason", exc)
        return AdminUnavailableError(
            f"cannot reach the pysyncer admin API at {self.base}: {reason} "
            "(is the daemon running? see --admin-addr)"
        )
