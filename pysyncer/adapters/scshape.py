"""Service-Center v4 JSON shapes <-> the pysyncer model, and SC error codes -> typed errors.

Shared by the ServiceComb REST adapter and the embedded-registry adapter (the embedded
registry speaks the same shapes). Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeEvent,
    ConflictError,
    LocalRef,
    NotFoundError,
    UnavailableError,
)
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "ERR_INSTANCE_NOT_EXISTS",
    "ERR_SERVICE_NOT_EXISTS",
    "error_from_code",
    "event_from_change",
    "instance_from_sc",
    "instance_to_sc",
    "service_from_sc",
    "service_to_sc",
]

ERR_INVALID_PARAMS = "400001"
ERR_SERVICE_ALREADY_EXISTS = "400010"
ERR_SERVICE_NOT_EXISTS = "400012"
ERR_DEPLOYED_INSTANCE = "400013"
ERR_SCHEMA_NOT_EXISTS = "400016"
ERR_INSTANCE_NOT_EXISTS = "400017"
ERR_ENDPOINT_ALREADY_EXISTS = "400025"
ERR_SERVICE_VERSION_NOT_EXISTS = "400026"

_NOT_FOUND = {
    ERR_SERVICE_NOT_EXISTS,
    ERR_SCHEMA_NOT_EXISTS,
    ERR_INSTANCE_NOT_EXISTS,
    "400018",  # tag
    "400022",  # rule
    ERR_SERVICE_VERSION_NOT_EXISTS,
}
_CONFLICT = {ERR_SERVICE_ALREADY_EXISTS, ERR_DEPLOYED_INSTANCE, ERR_ENDPOINT_ALREADY_EXISTS}

DEFAULT_INTERVAL = 30
DEFAULT_TIMES = 3


def error_from_code(code: str, message: str, http_status: int = 400) -> AdapterError:
    """The typed error for an SC ``errorCode`` (string or int form) and HTTP status."""
    code = str(code).strip()
    text = f"{message} (errorCode {code})" if code else message
    if code in _NOT_FOUND or (not code and http_status == 404):
        return NotFoundError(text, code=code)
    if code in _CONFLICT or (not code and http_status == 409):
        return ConflictError(text, code=code)
    if code.startswith("5") or http_status >= 500:
        return UnavailableError(text, code=code)
    return AdapterError(text, code=code)


def _str(value: Any, what: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise BadResponseError(f"{what}: expected a string, got {type(value).__name__}")


def _int(value: Any, what: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadResponseError(f"{what}: expected an integer, got {value!r}") from None


def service_from_sc(obj: Any, project: str) -> ServiceKey:
    """A ServiceKey from an SC ``MicroService`` object; ``project`` is ``domain/project``."""
    if not isinstance(obj, Mapping):
        raise BadResponseError(f"service: expected an object, got {type(obj).__name__}")
    return ServiceKey(
        app=_str(obj.get("appId"), "service.appId", "default"),
        name=_str(obj.get("serviceName"), "service.serviceName"),
        version=_str(obj.get("version"), "service.version", "0.0.1"),
        environment=_str(obj.get("environment"), "service.environment", ""),
        project=project,
    )


def service_to_sc(service: ServiceKey) -> dict[str, Any]:
    """The ``MicroService`` body creating ``service``."""
    body: dict[str, Any] = {
        "appId": service.app,
        "serviceName": service.name,
        "version": service.version,
    }
    if service.environment:
        body["environment"] = service.environment
    return body


def instance_from_sc(obj: Any, service: ServiceKey) -> Instance:
    """An Instance from an SC ``MicroServiceInstance`` object (BadResponseError if bad)."""
    if not isinstance(obj, Mapping):
        raise BadResponseError(f"instance: expected an object, got {type(obj).__name__}")
    endpoints = obj.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise BadResponseError("instance.endpoints: expected a list")
    properties = obj.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise BadResponseError("instance.properties: expected an object")
    health = obj.get("healthCheck") or {}
    if not isinstance(health, Mapping):
        raise BadResponseError("instance.healthCheck: expected an object")
    return Instance(
        service=service,
        instance_id=_str(obj.get("instanceId"), "instance.instanceId"),
        host_name=_str(obj.get("hostName"), "instance.hostName", ""),
        endpoints=tuple(_str(e, "instance.endpoints[]") for e in endpoints),
        status=_str(obj.get("status"), "instance.status", "UP"),
        properties=MappingProxyType(
            {str(k): _str(v, f"instance.properties.{k}") for k, v in properties.items()}
        ),
        health_interval=_int(health.get("interval"), "healthCheck.interval", DEFAULT_INTERVAL),
        health_times=_int(health.get("times"), "healthCheck.times", DEFAULT_TIMES),
    )


def instance_to_sc(instance: Instance) -> dict[str, Any]:
    """The ``MicroServiceInstance`` body registering ``instance`` under its own id."""
    _, instance_id, host, endpoints, status, _, interval, times = instance
    return {
        "instanceId": instance_id,
        "hostName": host,
        "endpoints": list(endpoints),
        "status": status,
        "properties": instance.properties_dict(),
        "healthCheck": {"mode": "push", "interval": interval, "times": times},
    }


def event_from_change(
    change: Any, project: str, services_by_id: Mapping[str, ServiceKey]
) -> tuple[ChangeEvent | None, str, ServiceKey | None]:
    """One change-feed entry -> (event, service id, service key).

    The event is None for a service-level change (no instance). ``services_by_id``
    resolves the service when the entry does not carry it.
    """
    if not isinstance(change, Mapping):
        raise BadResponseError("changes[]: expected an object")
    action = str(change.get("action", "")).upper()
    if action not in {"CREATE", "UPDATE", "DELETE"}:
        raise BadResponseError(f"changes[].action: unknown {action!r}")
    raw_instance = change.get("instance")
    if raw_instance is not None and not isinstance(raw_instance, Mapping):
        raise BadResponseError("changes[].instance: expected an object or null")
    service_id = "" if raw_instance is None else str(raw_instance.get("serviceId", ""))
    svc = change.get("service")
    key: ServiceKey | None
    if isinstance(svc, Mapping):
        key = service_from_sc(svc, project)
        service_id = str(svc.get("serviceId") or service_id)
    else:
        key = services_by_id.get(service_id)
    if raw_instance is None:
        return None, service_id, key
    if key is None:
        raise BadResponseError("changes[]: no service for the instance")
    inst = instance_from_sc(raw_instance, key)
    if action == "DELETE":
        return ChangeEvent("delete", inst, LocalRef(service_id, inst.instance_id)), service_id, key
    return ChangeEvent("upsert", inst, LocalRef(service_id, inst.instance_id)), service_id, key
