"""Error types of pysyncer.

Every error subclasses :class:`PysyncerError` and the matching builtin, so callers
can catch either ``pysyncer.errors.PysyncerError`` or the builtin they already expect.

Imports: -.
"""

from __future__ import annotations


class PysyncerError(Exception):
    """Root of every error raised by pysyncer on purpose."""


class ConfigError(PysyncerError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class MalformedDataError(PysyncerError, ValueError):
    """Bytes received or read back do not have the expected shape or size."""
