"""The ``--store`` URL: ``embedded`` or ``etcd://HOST:PORT[,HOST:PORT][?options]``, parsed once.

Owns the URL syntax and its options (names and types); :func:`parse_store_url` turns the
text into a typed :class:`StoreURL` that the configuration keeps and
:func:`pysyncer.store.create_store` builds the store from. Must not import a store
backend: parsing a URL opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from pysyncer.hostport import HostPort, parse_host_port

__all__ = ["ETCD_OPTIONS", "StoreURL", "parse_store_url"]

EMBEDDED: Final = "embedded"
ETCD_SCHEME: Final = "etcd://"
ETCD_OPTIONS: Final[dict[str, type[float] | type[int]]] = {
    "open_timeout": float,
    "request_timeout": float,
    "max_queue": int,
    "max_txn_ops": int,
}
"""The etcd store's tuning options after ``?``, besides ``prefix``."""
_SYNTAX = "'embedded' or 'etcd://HOST:PORT[,HOST:PORT][?prefix=/p/&...]'"


@dataclass(frozen=True)
class StoreURL:
    """A parsed ``--store`` value; ``str()`` gives back the text it was parsed from."""

    text: str
    kind: Literal["embedded", "etcd"]
    endpoints: tuple[HostPort, ...] = ()
    prefix: str | None = None  # None: the etcd store's default; may hold "{dc}"
    options: dict[str, float | int] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


def parse_store_url(text: str) -> StoreURL:
    """The typed store URL; ValueError with a one-line reason when ``text`` is not one."""
    text = str(text).strip()
    if text == EMBEDDED:
        return StoreURL(text, "embedded")
    if not text.startswith(ETCD_SCHEME):
        raise ValueError(f"{text!r} must be {_SYNTAX}")
    parts = urlsplit(text)
    if parts.path not in ("", "/") or not parts.netloc:
        raise ValueError(f"{text!r} is not etcd://HOST:PORT[,HOST:PORT][?options]")
    endpoints = tuple(parse_host_port(endpoint) for endpoint in parts.netloc.split(","))
    prefix: str | None = None
    options: dict[str, float | int] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name == "prefix":
            prefix = value
            continue
        kind = ETCD_OPTIONS.get(name)
        if kind is None:
            known = ", ".join(["prefix", *ETCD_OPTIONS])
            raise ValueError(f"unknown etcd option {name!r} (known: {known})")
        try:
            options[name] = kind(value)
        except ValueError:
            raise ValueError(f"etcd option {name}={value!r} is not a number") from None
    return StoreURL(text, "etcd", endpoints, prefix, options)
