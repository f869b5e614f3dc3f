"""Who may call the admin API: the bearer token, the Host and Origin checks, the token file.

Owns the admin API's access policy: :class:`AdminAuth` (the token, if one is configured,
and the settings that say which read-only routes need it), the route access levels
(:data:`Access`), the browser checks against DNS rebinding (``Host`` must name this
server) and cross-site requests (a foreign ``Origin`` is refused), and reading the token
file (:func:`read_token_file`). Which route has which level is declared in
:data:`pysyncer.admin.app.ROUTES`; this module only answers "is this request allowed".

The token is compared in constant time and never logged, printed or put in an error
message (``repr`` of :class:`AdminAuth` hides it). Must not import the server, the
daemon or the configuration: the configuration builds an :class:`AdminAuth` and hands
it to :func:`pysyncer.admin.app.build_app`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from pysyncer.errors import ConfigError
from pysyncer.hostport import LOOPBACK

__all__ = [
    "ACCESS_LEVELS",
    "AUTH_MODES",
    "LOOPBACK_NAMES",
    "TOKEN_FILE_ENV",
    "Access",
    "AdminAuth",
    "AuthMode",
    "is_loopback",
    "read_token_file",
]

log = logging.getLogger(__name__)

Access = Literal["open", "read", "metrics", "token"]
"""A route's access level: ``open`` never needs the token (health probes); ``read`` needs
it when ``--admin-read-auth token``; ``metrics`` when ``--metrics-auth token``; ``token``
always needs it (every mutating route and key management)."""
ACCESS_LEVELS: tuple[Access, ...] = ("open", "read", "metrics", "token")

AuthMode = Literal["open", "token"]
AUTH_MODES: tuple[AuthMode, ...] = ("open", "token")

TOKEN_FILE_ENV: Final = "PYSYNCER_ADMIN_TOKEN_FILE"
"""Where the command line (and the daemon, as the setting's env var) finds the token file."""
LOOPBACK_NAMES: Final = frozenset({"localhost", LOOPBACK, "::1"})
"""Host names a browser may use for this machine whatever address the API listens on."""
_WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})  # any address of this machine


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: Path, setting: str = "admin-token-file") -> str:
    """The token in ``path`` (surrounding whitespace dropped); warns if group or others
    may read the file. ConfigError, naming ``setting`` and the file, if it cannot be read
    or holds no token."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(64 * 1024)
    except OSError as exc:
        raise ConfigError(
            f"config key {setting!r}: cannot read {str(path)!r}: {exc.strerror}"
        ) from None
    try:
        token = raw.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"config key {setting!r}: {str(path)!r} is not UTF-8 text") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(
            f"config key {setting!r}: {str(path)!r} must hold one token without spaces"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "admin token file %s is readable by group or others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return token


def _host_name(value: str) -> str | None:
    """The host part of a ``Host`` header or an origin's netloc, lower case; None if bad."""
    try:
        host = urlsplit("//" + value).hostname
    except ValueError:
        return None
    return host.lower() if host else None


@dataclass(frozen=True)
class AdminAuth:
    """The access policy of one admin API (see the module doc).

    ``token``: the bearer token, ``None`` when none is configured (then nothing needs
    one; the configuration allows that on a loopback address only). ``read_auth`` and
    ``metrics_auth``: whether the ``read`` and ``metrics`` routes need the token.
    ``listen_host``: the address the API listens on, which the ``Host`` header may name.
    """

    token: str | None = field(default=None, repr=False)
    read_auth: AuthMode = "token"
    metrics_auth: AuthMode = "open"
    listen_host: str = LOOPBACK

    def needs_token(self, access: Access) -> bool:
        """Whether a route of level ``access`` needs the token under this policy."""
        if self.token is None or access == "open":
            return False
        if access == "read":
            return self.read_auth == "token"
        if access == "metrics":
            return self.metrics_auth == "token"
        return True

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (constant time)."""
        if self.token is None:
            return True
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def host_allowed(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server (a DNS-rebinding page's does not).

        Allowed: the loopback names, the listen address, and on a wildcard address
        (``0.0.0.0``, ``::``) any IP literal and this machine's host names. A request
        without ``Host`` (not a browser's) passes.
        """
        if header is None:
            return True
        host = _host_name(header)
        if host is None:
            return False
        listen = self.listen_host.strip("[]").lower()
        if host in LOOPBACK_NAMES or host == listen:
            return True
        if listen not in _WILDCARDS:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names = {socket.gethostname().lower(), socket.getfqdn().lower()}
            return host in names
        return True

    def origin_allowed(self, header: str | None, host_header: str | None) -> bool:
        """Whether an ``Origin`` header is absent or this server itself (CSRF check): same
        host and port as the request's ``Host``, and a host :meth:`host_allowed` accepts."""
        if header is None:
            return True
        parts = urlsplit(header.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed pages, file://) included
        if host_header is not None and parts.netloc.lower() != host_header.strip().lower():
            return False
        return self.host_allowed(parts.netloc)
