"""Request checks of the embedded Service-Center: what a stored record may hold.

Owns the field rules (names, ids, versions, statuses, environments, health checks and
their lease range, tenant names), the defaults a request may leave out (appId, version,
health-check interval and times) and the version rules of look-ups (exact, ``latest``,
``1.0.0+``, ranges). Each check turns a request body into the stored ``MicroService`` /
``MicroServiceInstance`` shape or raises
:class:`~pysyncer.servicecenter.errors.RegistryError`: 400001, or 400100 when a record
exceeds a per-record quota (schemas, properties size); the error codes themselves live
in ``errors``, the bounds in ``settings``.

Pure functions over JSON values: it must not import the other servicecenter modules
(bar ``errors`` and ``settings``), hold state beyond a bounded cache of shared
health-check objects, or touch the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pysyncer.servicecenter.errors import invalid, no_quota
from pysyncer.servicecenter.settings import DEFAULT_SETTINGS, ServiceCenterSettings

__all__ = [
    "DEFAULT_APP",
    "INSTANCE_STATUSES",
    "JSON",
    "check_properties",
    "parse_version",
    "string_map",
    "validate_instance",
    "validate_service",
    "validate_tenant",
    "version_key",
    "version_matcher",
]

JSON = dict[str, Any]

DEFAULT_APP: Final = "default"
DEFAULT_VERSION: Final = "0.0.1"
DEFAULT_INTERVAL: Final = 30
DEFAULT_TIMES: Final = 3
MAX_INT32: Final = 2**31 - 1

ENVIRONMENTS: Final = frozenset({"", "development", "testing", "acceptance", "production"})
INSTANCE_STATUSES: Final = ("UP", "DOWN", "STARTING", "OUTOFSERVICE", "TESTING")
SERVICE_STATUSES: Final = ("UP", "DOWN")
LEVELS: Final = ("", "FRONT", "MIDDLE", "BACK")
HEALTH_MODES: Final = ("push", "pull")

# Service-Center's validation patterns (server/service/validate*.go, simplified).
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$")
_ID_RE: Final = re.compile(r"^[a-zA-Z0-9_\-.:]{1,64}$")
_VERSION_RE: Final = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,5}){0,3}$")
_HOST_RE: Final = re.compile(r"^\S{1,64}$")
_STR_ONLY: Final = frozenset((str,))
_TENANT_RE: Final = re.compile(r"^[a-zA-Z0-9_\-.]{1,64}$")

_SERVICE_TEXT_FIELDS: Final = ("description", "registerBy", "alias")


# Identical healthCheck objects are shared between records (a stored record is never
# mutated in place, and callers get deep copies): most instances use the same few.
_health_checks: dict[tuple[Any, ...], JSON] = {}


# The stored healthCheck of a request's plain values (mode, interval, times) under the
# limits that decide it (min_interval, max_ttl).
_health_of_request: dict[tuple[Any, ...], JSON] = {}


def _shared_health(health: JSON) -> JSON:
    key = tuple(health.items())
    shared = _health_checks.get(key)
    if shared is None:
        if len(_health_checks) >= 1024:  # bounded: odd values are simply not shared
            return health
        shared = _health_checks[key] = health
    return shared


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def version_matcher(rule: str) -> Callable[[str, Sequence[str]], bool]:
    """Service-Center version rules: exact, ``latest``, ``1.0.0+`` and ``1.0.0-2.0.0``."""
    rule = rule.strip()
    if rule in ("", "0+"):
        return lambda v, _all: True
    if rule == "latest":
        return lambda v, all_versions: v == max(all_versions, key=version_key)
    if rule.endswith("+"):
        low = parse_version(rule[:-1], "version")
        return lambda v, _all: version_key(v) >= version_key(low)
    if "-" in rule:
        low_text, high_text = rule.split("-", 1)
        bottom = version_key(parse_version(low_text, "version"))
        top = version_key(parse_version(high_text, "version"))
        return lambda v, _all: bottom <= version_key(v) < top
    exact = parse_version(rule, "version")
    return lambda v, _all: version_key(v) == version_key(exact)


def parse_version(text: str, name: str) -> str:
    if not _VERSION_RE.match(text) or any(int(p) > 32767 for p in text.split(".")):
        raise invalid(f"'{name}' must look like 1.0.0 (up to 4 numbers of at most 32767)")
    return text


def _text(body: Mapping[str, Any], key: str, default: str = "", *, limit: int = 256) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(f"'{key}' must be a string")
    if len(value) > limit:
        raise invalid(f"'{key}' is longer than {limit} characters")
    return value


def _plain_strings(value: dict[Any, Any]) -> bool:
    """Whether a dict maps plain strings to plain strings (checked by type, one pass each)."""
    return _STR_ONLY.issuperset(map(type, value)) and _STR_ONLY.issuperset(
        map(type, value.values())
    )


def string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is dict and _plain_strings(value):  # the usual
        return dict(value)
    if not isinstance(value, Mapping):
        raise invalid(f"'{name}' must be an object of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise invalid(f"'{name}' must map strings to strings")
        out[k] = v
    return out


def check_properties(properties: Mapping[str, str], limits: ServiceCenterSettings) -> None:
    """Refuse (400100) a properties map larger than ``limits.max_properties_bytes``."""
    # The UTF-8 length of the names and values joined is the sum of theirs; ASCII text
    # (the usual) is as many bytes as characters, so nothing is encoded then.
    joined = "".join(properties) + "".join(properties.values())
    size = len(joined) if joined.isascii() else len(joined.encode())
    if size > limits.max_properties_bytes:
        raise no_quota(
            f"'properties' hold {size} bytes, more than the {limits.max_properties_bytes} allowed"
        )


def _int_field(body: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_INT32:
        raise invalid(f"'{key}' must be an integer in {low}..{MAX_INT32}")
    return value


def validate_tenant(domain: str, project: str) -> None:
    if not _TENANT_RE.match(domain):
        raise invalid("the domain (x-domain-name) must be 1-64 of [a-zA-Z0-9_-.]")
    if not _TENANT_RE.match(project):
        raise invalid("the project must be 1-64 of [a-zA-Z0-9_-.]")


def validate_service(body: Any, limits: ServiceCenterSettings = DEFAULT_SETTINGS) -> JSON:
    """A stored ``MicroService`` from a request's ``service`` object (unknown keys dropped)."""
    if not isinstance(body, Mapping):
        raise invalid("'service' must be an object")
    name = _text(body, "serviceName", limit=128)
    if not name or not _NAME_RE.match(name):
        raise invalid("'serviceName' must be 1-128 of [a-zA-Z0-9_-.], alphanumeric at both ends")
    app = _text(body, "appId", limit=160) or DEFAULT_APP
    if not _NAME_RE.match(app):
        raise invalid("'appId' must be 1-160 of [a-zA-Z0-9_-.], alphanumeric at both ends")
    version = parse_version(_text(body, "version", limit=64) or DEFAULT_VERSION, "version")
    environment = _text(body, "environment")
    if environment not in ENVIRONMENTS:
        raise invalid("'environment' must be development, testing, acceptance or production")
    service_id = _text(body, "serviceId", limit=64)
    if service_id and not _ID_RE.match(service_id):
        raise invalid("'serviceId' must be 1-64 of [a-zA-Z0-9_-.:]")
    status = _text(body, "status") or "UP"
    if status not in SERVICE_STATUSES:
        raise invalid("'status' must be UP or DOWN")
    level = _text(body, "level")
    if level not in LEVELS:
        raise invalid("'level' must be FRONT, MIDDLE or BACK")
    properties = string_map(body.get("properties"), "properties")
    check_properties(properties, limits)
    out: JSON = {
        "serviceId": service_id,
        "environment": environment,
        "appId": app,
        "serviceName": name,
        "version": version,
        "status": status,
        "properties": properties,
    }
    if level:
        out["level"] = level
    for key in _SERVICE_TEXT_FIELDS:
        if body.get(key) is not None:
            out[key] = _text(body, key, limit=1024)
    schemas = body.get("schemas")
    if schemas is not None:
        if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
            raise invalid("'schemas' must be a list of strings")
        if len(schemas) > limits.max_schemas:
            raise no_quota(f"{len(schemas)} schemas, more than the {limits.max_schemas} allowed")
        out["schemas"] = list(schemas)
    framework = body.get("framework")
    if framework is not None:
        if not isinstance(framework, Mapping):
            raise invalid("'framework' must be an object")
        out["framework"] = {
            "name": _text(framework, "name", "UNKNOWN") or "UNKNOWN",
            "version": _text(framework, "version"),
        }
    paths = body.get("paths")
    if paths is not None:
        if not isinstance(paths, list) or not all(isinstance(p, Mapping) for p in paths):
            raise invalid("'paths' must be a list of objects")
        out["paths"] = [
            {
                "Path": _text(p, "Path", limit=1024),
                "Property": string_map(p.get("Property"), "Property"),
            }
            for p in paths
        ]
    return out


def _plain_endpoints(endpoints: list[Any]) -> bool:
    """Whether ``endpoints`` are plain strings of 1-1024 characters (the usual, without a
    generator); False says only: check them one by one (string subclasses pass too)."""
    for endpoint in endpoints:
        if type(endpoint) is not str or not 0 < len(endpoint) <= 1024:
            return False
    return True


def _health(check: Mapping[str, Any], limits: ServiceCenterSettings) -> JSON:
    """The stored ``healthCheck`` of a request's, shared with every record whose request
    held the same plain values (looked up by them: most instances use the same few)."""
    mode, interval, times = check.get("mode"), check.get("interval"), check.get("times")
    key: tuple[Any, ...] | None = None
    plain = type(mode) is str and type(interval) is int and type(times) is int
    if plain and check.get("port") is None:
        key = (mode, interval, times, limits.min_interval, limits.max_ttl)
        known = _health_of_request.get(key)
        if known is not None:
            return known
    mode = _text(check, "mode") or "push"
    if mode not in HEALTH_MODES:
        raise invalid("'healthCheck.mode' must be push or pull")
    health: JSON = {
        "mode": mode,
        "interval": _int_field(check, "interval", DEFAULT_INTERVAL, limits.min_interval),
        "times": _int_field(check, "times", DEFAULT_TIMES, 0),
    }
    ttl = health["interval"] * (health["times"] + 1)
    if ttl > limits.max_ttl:
        raise invalid(
            f"'healthCheck' gives a lease of {ttl} s (interval x (times + 1)), "
            f"more than {limits.max_ttl} s"
        )
    if check.get("port") is not None:
        health["port"] = _int_field(check, "port", 0, 0)
    shared = _shared_health(health)
    if key is not None and len(_health_of_request) < 1024:  # bounded, as _health_checks
        _health_of_request[key] = shared
    return shared


def validate_instance(
    body: Any, limits: ServiceCenterSettings = DEFAULT_SETTINGS, *, handed_over: bool = False
) -> JSON:
    """A ``MicroServiceInstance`` from a request's ``instance`` object (server fields unset).

    The lease ``interval x (times + 1)`` must lie within ``limits.min_interval`` ..
    ``limits.max_ttl`` seconds (Service-Center refuses a TTL that overflows its int32
    with "Invalid 'healthCheck' settings"; here the bound is a setting).
    ``handed_over``: the caller gives up ``body`` (nothing else refers to it or to its
    ``endpoints`` list and ``properties`` dict), so a plain list and dict of strings are
    kept as they are instead of copied.
    """
    if type(body) is not dict and not isinstance(body, Mapping):
        raise invalid("'instance' must be an object")
    # Each text field: a plain string within its limit as is, anything else through
    # _text (its default, or its error).
    host = body.get("hostName")
    if type(host) is not str or len(host) > 64:
        host = _text(body, "hostName", limit=64)
    if not _HOST_RE.match(host):
        raise invalid("'hostName' must be 1-64 characters without spaces")
    endpoints = body.get("endpoints")
    if not isinstance(endpoints, list) or not (
        _plain_endpoints(endpoints)
        or all(isinstance(e, str) and 0 < len(e) <= 1024 for e in endpoints)
    ):
        raise invalid("'endpoints' must be a list of non-empty strings")
    instance_id = body.get("instanceId")
    if type(instance_id) is not str or len(instance_id) > 64:
        instance_id = _text(body, "instanceId", limit=64)
    if instance_id and not _ID_RE.match(instance_id):
        raise invalid("'instanceId' must be 1-64 of [a-zA-Z0-9_-.:]")
    status = body.get("status")
    if type(status) is not str or len(status) > 256:
        status = _text(body, "status")
    status = status or "UP"
    if status not in INSTANCE_STATUSES:
        raise invalid(f"'status' must be one of {', '.join(INSTANCE_STATUSES)}")
    check = body.get("healthCheck")
    if check is None:
        check = {}
    if type(check) is not dict and not isinstance(check, Mapping):
        raise invalid("'healthCheck' must be an object")
    health = _health(check, limits)
    properties = body.get("properties")
    if not handed_over or type(properties) is not dict or not _plain_strings(properties):
        properties = string_map(properties, "properties")
    check_properties(properties, limits)
    if not handed_over or type(endpoints) is not list:
        endpoints = list(endpoints)
    out: JSON = {
        "instanceId": instance_id,
        "hostName": host,
        "endpoints": endpoints,
        "status": status,
        "properties": properties,
        "healthCheck": health,
    }
    dc = body.get("dataCenterInfo")
    if dc is not None:
        if not isinstance(dc, Mapping):
            raise invalid("'dataCenterInfo' must be an object")
        out["dataCenterInfo"] = {
            "name": _text(dc, "name"),
            "region": _text(dc, "region"),
            "availableZone": _text(dc, "availableZone"),
        }
    return out
