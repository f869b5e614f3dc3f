"""A small blocking client of the admin API, for the command line.

Owns request/response handling between ``pysyncer members|event|query`` and a running
daemon: URLs, JSON bodies, timeouts, and errors turned into one clear line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pysyncer.errors import PysyncerError

__all__ = ["AdminClient", "AdminUnavailableError"]


class AdminUnavailableError(PysyncerError, ConnectionError):
    """The daemon's admin API could not be reached or answered with an error."""


class AdminClient:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.base = address if address.startswith("http") else f"http://{address}"
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self._call("GET", path, None, self.timeout)

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        return self._call("POST", path, body, timeout or self.timeout)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        status, answer = self.call(method, path, body, timeout)
        if status >= 400:
            message = answer.get("error", status) if isinstance(answer, dict) else status
            raise AdminUnavailableError(f"{method} {path}: {status} {message}")
        return answer

    def call(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None = None
    ) -> tuple[int, Any]:
        """``(HTTP status, JSON body)``; an error status with a JSON ``error`` body is returned,
        any other failure raises :class:`AdminUnavailableError`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or "error" not in answer:
                raise AdminUnavailableError(f"{method} {path}: {exc.code} {exc.reason}") from None
            return int(exc.code), answer
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminUnavailableError(
                f"cannot reach the pysyncer admin API at {self.base}: {reason} "
                "(is the daemon running? see --admin-addr)"
            ) from None
