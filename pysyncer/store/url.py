"""The ``--store`` URL: ``embedded`` or ``etcd://HOST:PORT[,HOST:PORT][?options]``, parsed once.

Owns the URL syntax and its options (names and types, ``-`` or ``_`` alike);
:func:`parse_store_url` turns the text into a typed :class:`StoreURL` that the
configuration keeps and :func:`pysyncer.store.create_store` builds the store from. The
credential options (:class:`StoreCredentials`) name files only: a password in the URL
(``password=`` or ``user:password@``) is refused, since a URL travels on command lines
and in process listings; it comes from ``password_file=`` or the environment
(:data:`PASSWORD_ENV`). Must not import a store backend: parsing a URL opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from pysyncer.hostport import HostPort, parse_host_port

__all__ = ["ETCD_OPTIONS", "PASSWORD_ENV", "StoreCredentials", "StoreURL", "parse_store_url"]

EMBEDDED: Final = "embedded"
ETCD_SCHEME: Final = "etcd://"
ETCD_OPTIONS: Final[dict[str, type[float] | type[int]]] = {
    "open_timeout": float,
    "request_timeout": float,
    "max_queue": int,
    "max_txn_ops": int,
}
"""The etcd store's tuning options after ``?``, besides ``prefix`` and the credentials."""
PASSWORD_ENV: Final = "PYSYNCER_STORE_PASSWORD"
"""Environment variable with the etcd user's password when no ``password_file`` is set."""
_SYNTAX = "'embedded' or 'etcd://HOST:PORT[,HOST:PORT][?prefix=/p/&...]'"


@dataclass(frozen=True)
class StoreCredentials:
    """TLS files and login of the etcd store (URL options of the same names)."""

    tls_ca: str = ""  # CA bundle that signed the etcd server's certificate (turns TLS on)
    tls_cert: str = ""  # client certificate (etcd's --client-cert-auth), with tls_key
    tls_key: str = ""
    tls_server_name: str = ""  # name the server certificate carries, if not the host
    user: str = ""  # etcd user (auth enable); password from password_file or the env
    password_file: str = ""

    @property
    def settings(self) -> str:
        """Where the login is configured, for error messages."""
        return f"the store URL's user= and password_file= (or {PASSWORD_ENV})"


_CREDENTIAL_OPTIONS: Final = frozenset(
    name for name in StoreCredentials.__dataclass_fields__ if not name.startswith("_")
)


@dataclass(frozen=True)
class StoreURL:
    """A parsed ``--store`` value; ``str()`` gives back the text it was parsed from."""

    text: str
    kind: Literal["embedded", "etcd"]
    endpoints: tuple[HostPort, ...] = ()
    prefix: str | None = None  # None: the etcd store's default; may hold "{dc}"
    options: dict[str, float | int] = field(default_factory=dict)
    credentials: StoreCredentials = field(default_factory=StoreCredentials)

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
    if "@" in parts.netloc:
        raise ValueError(
            "the store URL must not carry credentials (user@host): use the options user= "
            f"and password_file= (or {PASSWORD_ENV})"
        )
    if parts.path not in ("", "/") or not parts.netloc:
        raise ValueError(f"{text!r} is not etcd://HOST:PORT[,HOST:PORT][?options]")
    endpoints = tuple(parse_host_port(endpoint) for endpoint in parts.netloc.split(","))
    prefix: str | None = None
    options: dict[str, float | int] = {}
    credentials: dict[str, str] = {}
    for raw_name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        name = raw_name.replace("-", "_")
        if name == "prefix":
            prefix = value
            continue
        if name in _CREDENTIAL_OPTIONS:
            credentials[name] = value
            continue
        if name in ("password", "token"):
            raise ValueError(
                f"etcd option {raw_name}= would put a secret on the command line: use "
                f"password_file= or {PASSWORD_ENV}"
            )
        kind = ETCD_OPTIONS.get(name)
        if kind is None:
            known = ", ".join(["prefix", *ETCD_OPTIONS, *sorted(_CREDENTIAL_OPTIONS)])
            raise ValueError(f"unknown etcd option {raw_name!r} (known: {known})")
        try:
            options[name] = kind(value)
        except ValueError:
            raise ValueError(f"etcd option {name}={value!r} is not a number") from None
    return StoreURL(text, "etcd", endpoints, prefix, options, StoreCredentials(**credentials))
