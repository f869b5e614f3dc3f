"""The value parsers of the configuration table: each turns one raw value (flag, env var,
config-file value or default) into its typed form, or raises ``ValueError`` whose message
finishes the sentence "config key 'KEY' (SOURCE): ...".

Owns the value syntax of settings (host:port with a default port, names, seconds, switches,
gossip keys, paths, the allowed words of enumerated settings). Knows nothing of
:data:`~pysyncer.config.SETTINGS`, sources or defaults: must not import
:mod:`pysyncer.config`, and loads the store only when a store URL is parsed.

Imports: admin, gossip, hostport, logs, store, sync.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysyncer.admin.auth import AUTH_MODES
from pysyncer.gossip.timing import profile_named
from pysyncer.hostport import GOSSIP_PORT, HostPort, parse_host_port
from pysyncer.logs import LOG_FORMATS
from pysyncer.sync.filters import DIRECTIONS

if TYPE_CHECKING:
    from pysyncer.store.url import StoreURL

__all__ = [
    "ENCRYPTION_KEY_SIZES",
    "address_list",
    "auth_mode",
    "direction",
    "encryption_key",
    "gossip_profile",
    "host_port",
    "join_list",
    "label",
    "log_format",
    "log_level",
    "name",
    "optional_host_port",
    "origin_policy",
    "path",
    "positive_int",
    "protocol_version",
    "seconds",
    "store",
    "switch",
]

ENCRYPTION_KEY_SIZES = (16, 24, 32)  # AES-128/192/256, as Serf accepts


def host_port(default_port: int) -> Callable[[Any], HostPort]:
    def parse(value: Any) -> HostPort:
        return parse_host_port(str(value), default_port)

    return parse


def name(value: Any) -> str:
    text = str(value).strip()
    if not text or len(text) > 128 or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} must be 1-128 characters without spaces")
    return text


def address_list(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def join_list(value: Any) -> tuple[str, ...]:
    addresses = address_list(value)
    for address in addresses:
        parse_host_port(address, default_port=GOSSIP_PORT)
    return addresses


def encryption_key(value: Any) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (use 'pysyncer keygen')") from None
    if len(raw) not in ENCRYPTION_KEY_SIZES:
        raise ValueError(f"decodes to {len(raw)} bytes; a key must be 16, 24 or 32 bytes")
    return text


def switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} must be true or false")


def store(value: Any) -> StoreURL:
    from pysyncer.store.url import parse_store_url  # noqa: PLC0415 - the store loads on use

    return parse_store_url(str(value))


def optional_host_port(default_port: int) -> Callable[[Any], HostPort | None]:
    def parse(value: Any) -> HostPort | None:
        if value is None or str(value).strip() == "":
            return None
        return parse_host_port(str(value), default_port)

    return parse


def protocol_version(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 2 <= int(text) <= 5:
        raise ValueError(f"{text!r} must be a memberlist protocol version from 2 to 5")
    return int(text)


def gossip_profile(value: Any) -> str:
    return profile_named(str(value).strip().lower()).name


def label(value: Any) -> str:
    text = str(value)
    if len(text.encode()) > 255:
        raise ValueError("a gossip label has at most 255 bytes")
    return text


def seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds < 10**9:
        raise ValueError(f"{value!r} must be a positive number of seconds")
    return seconds


def writes_per_second(value: Any) -> float:
    """A write rate: a number of writes per second, 0 for unlimited."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of writes per second") from None
    if not 0 <= rate < 10**9:
        raise ValueError(f"{value!r} must be 0 (unlimited) or a positive number of writes/s")
    return rate


def positive_int(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r} must be a positive whole number")
    return int(text)


def origin_policy(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("expire", "remove"):
        raise ValueError(f"{value!r} must be 'expire' or 'remove'")
    return text


def path(value: Any) -> Path:
    return Path(str(value)).expanduser()


def direction(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in DIRECTIONS:
        raise ValueError(f"{value!r} must be one of {', '.join(DIRECTIONS)}")
    return text


def auth_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in AUTH_MODES:
        raise ValueError(f"{value!r} must be one of {', '.join(AUTH_MODES)}")
    return text


def log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{value!r} must be one of debug, info, warning, error")
    return level


def log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_FORMATS:
        raise ValueError(f"{value!r} must be one of {', '.join(LOG_FORMATS)}")
    return text
