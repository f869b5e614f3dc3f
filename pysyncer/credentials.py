"""Secrets of registry and store clients, read from a file or an environment variable.

Owns where a password or token comes from: a file named by a setting (the file's text
without its trailing newline) or, when no file is named, an environment variable; never
a command-line value. Reading a file that cannot be read is a one-line ConfigError naming
the setting. Showing credentials is :mod:`pysyncer.redact`'s job; this module must not
log a secret or put it into an error message.

Imports: errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pysyncer.errors import ConfigError

__all__ = ["read_secret"]


def read_secret(path: str, env: str, setting: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret in file ``path`` (``setting`` names where the path came from), else the
    value of environment variable ``env``, else ``""``."""
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{setting}: cannot read {path!r}: {reason}") from None
    source = os.environ if environ is None else environ
    return source.get(env, "") if env else ""
