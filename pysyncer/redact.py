"""Credentials out of everything pysyncer shows: URLs, log lines, status fields, errors.

Owns :func:`redact`, the one function every place that shows a registry or store URL
(or text that may hold one: an error message, a log line) goes through:
``http://user:secret@host`` becomes ``http://user:***@host`` and the value of a secret
query parameter (``password``, ``token``, ``accessToken``, ...) becomes ``***``. A
:class:`RedactingFilter` applies it to every log record a handler emits, so a secret
that reaches a log message by any path (an exception's text, a library's message) is
still not written. It reads no secret and must not import anything of pysyncer's.

Imports: -.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["MASK", "RedactingFilter", "install_log_redaction", "redact"]

MASK: Final = "***"

# scheme://user:password@ -> the password (up to the netloc's last '@', as urlsplit reads it)
_USERINFO: Final = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s?#]*:)[^/\s?#]*@")
_SECRET_PARAMETER: Final = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|secret|token|access[_-]?token|api[_-]?key"
    r"|auth|authorization|credential|credentials)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` and the value of
    every secret query parameter replaced by :data:`MASK`; anything else unchanged."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m.group('head')}{MASK}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and exception text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            text = record.exc_text or formatter.formatException(record.exc_info)
            record.exc_text = redact(text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
