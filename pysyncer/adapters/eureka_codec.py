"""Settings and shapes of the Eureka adapter: what Eureka's REST documents hold.

Owns the ``[adapter]`` settings of the Eureka adapter (:class:`EurekaSettings`), the
parsing of a server address (origin, base path, basic-auth credentials), the reading of
an instance document's loosely typed fields (ports with their enabled flags, endpoints),
the status-count hashcode Eureka compares (:func:`reconcile_hashcode`), the view entry
and the diff of two views.

Pure translation: it must not do HTTP or import the other Eureka adapter module.

Imports: adapters, errors, hostport, model.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from pysyncer.adapters._retry import RETRY_MAX
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters.base import BadResponseError, ChangeEvent, LocalRef
from pysyncer.adapters.fieldmap import split_endpoint
from pysyncer.errors import ConfigError
from pysyncer.hostport import bracket_host
from pysyncer.model import Instance

__all__ = [
    "EurekaAddress",
    "EurekaSettings",
    "ViewEntry",
    "address_of",
    "basic_auth",
    "diff_views",
    "endpoints_of",
    "host_text",
    "parse_address",
    "read_flag",
    "read_list",
    "read_number",
    "read_port",
    "read_text",
    "reconcile_hashcode",
    "unknown_setting",
]


@dataclass(frozen=True, slots=True)
class EurekaSettings:
    """Settings of the Eureka adapter (config keys: the names with ``-`` for ``_``)."""

    path: str = ""  # API base path: "/eureka" or "/eureka/v2"; empty: from the address, or probed
    poll_interval: float = 5.0  # seconds between delta fetches
    timeout: float = 10.0  # per request, seconds
    connect_timeout: float = 3.0
    max_body: int = 64 * 1024 * 1024  # largest response body accepted, bytes
    retry_max: float = RETRY_MAX  # largest backoff between change-detection retries
    username: str = ""
    password: str = field(default="", repr=False)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True
    app: str = "default"  # model app (SC appId) of native Eureka applications
    version: str = "0.0.1"  # model version of native Eureka applications
    environment: str = ""  # model environment of native Eureka applications
    lowercase: bool = True  # read app names lower-cased ("ORDERS" -> "orders")
    renew_concurrency: int = 16
    data_center: str = "MyOwn"  # dataCenterInfo.name of registered copies

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> EurekaSettings:
        """Build from the ``[adapter]`` table; errors name ``adapter.KEY``."""
        result = settings_from_mapping(
            cls,
            "eureka",
            settings,
            unknown_error=unknown_setting,
            bad_value_error=lambda key, raw, kind: f"adapter.{key}: expected a {kind}, got {raw!r}",
        )
        for name in ("poll_interval", "timeout", "connect_timeout", "max_body", "retry_max"):
            if getattr(result, name) <= 0:
                raise ConfigError(f"adapter.{name.replace('_', '-')}: must be > 0")
        if result.renew_concurrency < 1:
            raise ConfigError("adapter.renew-concurrency: must be >= 1")
        if result.path and not result.path.startswith("/"):
            raise ConfigError(f"adapter.path: must start with '/', got {result.path!r}")
        if bool(result.tls_key) and not result.tls_cert:
            raise ConfigError("adapter.tls-key: needs adapter.tls-cert")
        return result


def unknown_setting(keys: list[Any], known: set[str]) -> str:
    names = ", ".join(sorted(n.replace("_", "-") for n in known))
    return f"adapter.{keys[0]}: unknown setting of the eureka adapter ({names})"


@dataclass(frozen=True, slots=True)
class EurekaAddress:
    origin: str  # scheme://host:port
    path: str  # base path from the address ("" when none was given)
    auth: str  # Authorization header value ("" when the address has no user)


def parse_address(address: str) -> EurekaAddress:
    text = address.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"}:
        raise ConfigError(f"eureka adapter: unsupported address scheme {address!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"eureka adapter: bad port in address {address!r}") from None
    if not parts.hostname:
        raise ConfigError(f"eureka adapter: address without a host: {address!r}")
    host = bracket_host(parts.hostname)
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    path = parts.path.rstrip("/")
    if path.endswith("/apps"):
        path = path[: -len("/apps")]
    auth = ""
    if parts.username is not None:
        auth = basic_auth(unquote(parts.username), unquote(parts.password or ""))
    return EurekaAddress(origin, path, auth)


def basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def reconcile_hashcode(statuses: Iterable[str]) -> str:
    """Eureka's ``apps__hashcode``: status counts sorted by status, e.g. ``DOWN_1_UP_3_``."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return "".join(f"{status}_{counts[status]}_" for status in sorted(counts))


def read_list(value: Any, what: str) -> list[Any]:
    """Eureka's lists, also when rendered as one object (the single-element quirk)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise BadResponseError(f"{what}: expected a list or an object, got {type(value).__name__}")


def read_text(value: Any, what: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadResponseError(f"{what}: expected a string, got {type(value).__name__}")


def read_number(value: Any, what: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, dict):  # {"$": 8080} without @enabled
        value = value.get("$")
    if isinstance(value, bool):
        raise BadResponseError(f"{what}: expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadResponseError(f"{what}: expected an integer, got {value!r}") from None


def read_flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def read_port(value: Any, what: str, *, enabled_default: bool) -> tuple[int, bool]:
    """``{"$": 8080, "@enabled": "true"}`` (also ``"8080"``, a bare number) -> (port, on)."""
    if value is None:
        return 0, False
    if isinstance(value, dict):
        port = read_number(value.get("$"), what, 0)
        enabled = read_flag(value["@enabled"]) if "@enabled" in value else enabled_default
        return port, enabled and 0 < port < 65536
    port = read_number(value, what, 0)
    return port, enabled_default and 0 < port < 65536


def host_text(host: str) -> str:
    return bracket_host(host)


def endpoints_of(raw: Mapping[str, Any], ip: str) -> tuple[str, ...]:
    port, port_on = read_port(raw.get("port"), "instance.port", enabled_default=True)
    sport, sport_on = read_port(raw.get("securePort"), "instance.securePort", enabled_default=False)
    endpoints: list[str] = []
    if ip and port_on:
        endpoints.append(f"http://{host_text(ip)}:{port}")
    if ip and sport_on:
        endpoints.append(f"https://{host_text(ip)}:{sport}")
    return tuple(endpoints)


def address_of(endpoints: Sequence[str]) -> tuple[str, int, int]:
    """(ipAddr, port, securePort) for Eureka from the first endpoint (0: disabled).

    An ``https`` endpoint is the secure port; any other scheme (``http``, SC's ``rest``)
    the plain one. A second, ``https`` endpoint on the same host fills the secure port.
    """
    parsed: list[tuple[str, str, int]] = []
    for endpoint in endpoints[:2]:
        try:
            parsed.append(split_endpoint(endpoint))
        except ValueError:
            break
    if not parsed:
        return "", 0, 0
    scheme, ip, number = parsed[0]
    if scheme == "https":
        return ip, 0, number
    secure = 0
    if len(parsed) == 2 and parsed[1][0] == "https" and parsed[1][1] == ip:
        secure = parsed[1][2]
    return ip, number, secure


@dataclass(frozen=True, slots=True)
class ViewEntry:
    """One instance of the adapter's view: the model value, its ref and Eureka status."""

    instance: Instance
    ref: LocalRef
    status: str  # Eureka's own status (what the hashcode counts)


def diff_views(old: Mapping[str, ViewEntry], new: Mapping[str, ViewEntry]) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    for key, entry in new.items():
        before = old.get(key)
        if before is None or before.instance != entry.instance:
            events.append(ChangeEvent("upsert", entry.instance, entry.ref))
    for key, entry in old.items():
        if key not in new:
            events.append(ChangeEvent("delete", entry.instance, entry.ref))
    return events
