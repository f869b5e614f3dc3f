"""The daemon's log output: text or JSON lines on stderr, the level changeable at run time.

Owns the log formats (:data:`LOG_FORMATS`): ``text`` is one human line per record;
``json`` is one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``exception`` (the traceback, when there is one) and every
structured field a call passes with ``extra=`` (``dc``, ``peer``, ``slot``, ``task``...).
Credentials are redacted from both (:mod:`pysyncer.redact`). :func:`configure` installs
the one stderr handler; :func:`set_level` changes the level of a running daemon (SIGHUP).
It must not import any other part of pysyncer but :mod:`pysyncer.redact`.

Imports: redact.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final, TextIO

from pysyncer.redact import RedactingFilter

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure", "set_level"]

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r} must be one of {', '.join(LOG_FORMATS)}")


def configure(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send every record at ``level`` and above to ``stream`` (stderr) in ``log_format``,
    credentials redacted; replaces the handlers a previous call installed."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """The level of the root logger (``debug``, ``info``, ``warning``, ``error``)."""
    logging.getLogger().setLevel(level.upper())
