"""Settings and answers of the Service-Center adapter: what its REST exchanges hold.

Owns the ``[adapter]`` settings of the Service-Center adapter
(:class:`ServiceCombSettings`, with the login password's source), the protocol facts it
uses (change-feed and revision headers, the token path, the heartbeat batch size, SC's
own service), the accepted address forms (``host:port``, ``http(s)://``, SC's
``rest://``) and the readers of answer bodies and fields. The record shapes themselves
live in :mod:`pysyncer.adapters.scshape`.

Pure translation: it must not do HTTP or import the other Service-Center adapter module.

Imports: adapters, credentials, errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pysyncer.adapters import _http
from pysyncer.adapters._http import Response
from pysyncer.adapters._retry import RETRY_MAX
from pysyncer.adapters._settings import as_bool, settings_from_mapping
from pysyncer.adapters.base import BadResponseError
from pysyncer.adapters.scshape import ERR_INSTANCE_NOT_EXISTS
from pysyncer.credentials import read_secret
from pysyncer.errors import ConfigError
from pysyncer.servicecenter.app import (
    CHANGE_FEED_HEADER,
    DOMAIN_HEADER,
    REVISION_HEADER,
    TOKEN_PATH,
)

__all__ = [
    "DOMAIN_HEADER",
    "FEED_HEADER",
    "HEARTBEAT_BATCH",
    "LOGIN_SETTINGS",
    "REVISION_HEADER",
    "SELF_SERVICE",
    "TOKEN_PATH",
    "ServiceCombSettings",
    "int_field",
    "json_object",
    "looks_not_found",
    "normalize_address",
    "str_field",
]

# the change-feed extension and the token route are the embedded service center's facts
FEED_HEADER: Final = CHANGE_FEED_HEADER
HEARTBEAT_BATCH = 500
SELF_SERVICE = ("default", "SERVICECENTER")
LOGIN_SETTINGS: Final = "adapter.username and adapter.password-file (or PYSYNCER_ADAPTER_PASSWORD)"


@dataclass(frozen=True, slots=True)
class ServiceCombSettings:
    """Settings of the Service-Center adapter (all have defaults)."""

    domain: str = "default"
    project: str = "default"
    timeout: float = 10.0  # per request, seconds
    connect_timeout: float = 3.0
    poll_interval: float = 5.0  # governance-listing poll period when there is no feed
    feed: bool | None = None  # None: probe; False: never use the change feed
    feed_wait: float = 20.0  # long-poll wait asked of the change feed, seconds
    max_body: int = 16 * 1024 * 1024  # largest response body accepted, bytes
    retry_max: float = RETRY_MAX  # largest backoff between change-detection retries
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True
    include_self: bool = False  # list SC's own SERVICECENTER service too
    username: str = ""  # RBAC account: log in with POST /v4/token
    password_file: str = ""  # file holding the account's password
    password: str = field(default="", repr=False)  # e.g. from PYSYNCER_ADAPTER_PASSWORD

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ServiceCombSettings:
        """Build from a plain mapping (config file section); unknown keys are an error."""
        result = settings_from_mapping(
            cls,
            "servicecomb",
            settings,
            converters={"feed": lambda raw: None if raw is None else as_bool(raw)},
            unknown_error=lambda keys, _known: (
                f"servicecomb adapter: unknown setting(s) {', '.join(keys)}"
            ),
            bad_value_error=lambda key, raw, _kind: (
                f"servicecomb adapter: bad value for {key}: {raw!r}"
            ),
            unknown_first=True,
        )
        if result.poll_interval <= 0 or result.timeout <= 0 or result.max_body <= 0:
            raise ConfigError("servicecomb adapter: poll_interval, timeout, max_body must be > 0")
        if (result.password or result.password_file) and not result.username:
            raise ConfigError(
                f"servicecomb adapter: a password without a user: set {LOGIN_SETTINGS}"
            )
        return result

    def login_password(self) -> str:
        """The password from ``password_file`` when set, else ``password``."""
        from_file = read_secret(
            self.password_file, "", "servicecomb adapter: adapter.password-file"
        )
        return from_file or self.password


def normalize_address(address: str) -> str:
    """``host:port`` -> ``http://host:port``; SC's ``rest://`` forms are accepted too."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    scheme, _, rest = address.partition("://")
    if scheme == "rest":
        scheme = "https" if "sslEnabled=true" in rest else "http"
        rest = rest.split("?", 1)[0]
    if scheme not in {"http", "https"}:
        raise ConfigError(f"servicecomb adapter: unsupported address scheme {address!r}")
    try:
        return _http.normalize_address("servicecomb", f"{scheme}://{rest}")
    except ConfigError:
        raise ConfigError(f"servicecomb adapter: address without a host: {address!r}") from None


def json_object(resp: Response) -> dict[str, Any]:
    """The JSON object of an answer (an empty body reads as ``{}``)."""
    value = resp.json() if resp.body else {}
    if not isinstance(value, dict):
        raise BadResponseError(f"expected a JSON object, got {type(value).__name__}")
    return value


def looks_not_found(message: str) -> bool:
    text = message.lower()
    return ERR_INSTANCE_NOT_EXISTS in text or "not exist" in text or "not found" in text


def str_field(value: Mapping[str, Any], name: str) -> str:
    field = value.get(name)
    if not isinstance(field, str) or not field:
        raise BadResponseError(f"response field {name!r}: expected a non-empty string")
    return field


def int_field(value: Mapping[str, Any], name: str) -> int:
    field = value.get(name)
    if isinstance(field, bool) or not isinstance(field, (int, str)):
        raise BadResponseError(f"response field {name!r}: expected an integer")
    try:
        return int(field)
    except ValueError:
        raise BadResponseError(f"response field {name!r}: expected an integer") from None
