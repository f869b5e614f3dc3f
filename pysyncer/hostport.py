"""``HOST:PORT`` addresses: parsing, formatting (IPv6 in brackets) and the default ports.

Owns the one address syntax every layer uses (flags, gossip tags, the snapshot file, etcd
endpoints, URLs) and the well-known ports of pysyncer and its neighbours. A leaf module:
it imports nothing from pysyncer, so any layer may import it.

Imports: -.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "ADMIN_PORT",
    "ETCD_PORT",
    "GOSSIP_PORT",
    "LOOPBACK",
    "REGISTRY_PORT",
    "SYNC_PORT",
    "HostPort",
    "bracket_host",
    "format_host_port",
    "parse_host_port",
]

LOOPBACK: Final = "127.0.0.1"
"""Where pysyncer's servers listen unless told otherwise (IPv4 loopback)."""
REGISTRY_PORT: Final = 30100
"""The ServiceComb service center (and the embedded one) listens here."""
GOSSIP_PORT: Final = 30190
"""Gossip (memberlist + Serf), UDP and TCP."""
SYNC_PORT: Final = 30191
"""The gRPC sync service between data centers."""
ADMIN_PORT: Final = 30300
"""The daemon's HTTP admin API."""
ETCD_PORT: Final = 2379
"""etcd's client port."""


class HostPort(NamedTuple):
    """A host (name, IPv4 or bare IPv6) and a port; ``str()`` gives ``HOST:PORT``."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


def bracket_host(host: str) -> str:
    """``host`` as it appears before ``:PORT`` or in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets (``[::1]:30190``)."""
    return f"{bracket_host(host)}:{port}"


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``); a bare host takes ``default_port``.

    Raises ValueError, naming the text, when there is no host, no port (and no default),
    or the port is not 0..65535.
    """
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        bracket = text.index("]")
        host, rest = text[1:bracket], text[bracket + 1 :]
        sep, port_text = (":", rest[1:]) if rest.startswith(":") else ("", "")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not HOST:PORT")
    elif not sep or ":" in host:
        if default_port is None or ":" in text:
            raise ValueError(f"{text!r} is not HOST:PORT")
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r} has no host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} has no port")
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} in {text!r} is not 0..65535")
    return HostPort(host, int(port_text))
