"""Service-Center's discovery look-ups inside one tenant: services and instances by key.

Owns how a look-up by (environment, appId, serviceName, version rule) finds its services
(an omitted appId is the default one; the version rules themselves are ``validation``'s),
which one ``exist`` answers (the exact key, else the highest matching version), the
instances ``find`` answers (every instance of every matching service, as copies), and
the consumer a request names (400012 when unknown; its environment is the default one of
a ``find``). Read-only: it changes no tenant and must not import the data model
(``core``), the feed or the HTTP app.
"""

from __future__ import annotations

import copy

from pysyncer.servicecenter.errors import ERR_SERVICE_NOT_EXISTS, RegistryError
from pysyncer.servicecenter.tenants import Tenant
from pysyncer.servicecenter.validation import DEFAULT_APP, JSON, version_key, version_matcher

__all__ = ["consumer", "instances_by_key", "matching_services", "service_id_by_key"]


def consumer(tenant: Tenant, consumer_id: str) -> JSON | None:
    """The service ``consumer_id`` names (None when no consumer is given)."""
    if not consumer_id:
        return None
    found = tenant.services.get(consumer_id)
    if found is None:
        raise RegistryError(ERR_SERVICE_NOT_EXISTS, f"consumer {consumer_id!r} does not exist")
    return found


def matching_services(
    tenant: Tenant, app_id: str, service_name: str, version: str, environment: str
) -> list[JSON]:
    """The services of this key whose version the rule ``version`` accepts."""
    matcher = version_matcher(version)
    candidates = [
        s
        for s in tenant.services.values()
        if s["appId"] == (app_id or DEFAULT_APP)
        and s["serviceName"] == service_name
        and s["environment"] == environment
    ]
    all_versions = [s["version"] for s in candidates]
    return [s for s in candidates if matcher(s["version"], all_versions)]


def service_id_by_key(
    tenant: Tenant, app_id: str, service_name: str, version: str, environment: str
) -> str:
    """The id of the service with this exact key, else of the highest version the rule
    accepts; 400012 when there is none."""
    exact = tenant.keys.get((environment, app_id or DEFAULT_APP, service_name, version))
    if exact is not None:
        return exact
    matches = matching_services(tenant, app_id, service_name, version, environment)
    if not matches:
        raise RegistryError(
            ERR_SERVICE_NOT_EXISTS,
            f"service {environment}/{app_id}/{service_name}/{version} does not exist",
        )
    return str(max(matches, key=lambda s: version_key(s["version"]))["serviceId"])


def instances_by_key(
    tenant: Tenant, app_id: str, service_name: str, version: str, environment: str
) -> list[JSON]:
    """Copies of the instances of every matching service; 400012 ("provider does not
    exist", as Service-Center says) when no service matches."""
    services = matching_services(tenant, app_id, service_name, version, environment)
    if not services:
        raise RegistryError(
            ERR_SERVICE_NOT_EXISTS,
            f"provider {environment}/{app_id}/{service_name}/{version} does not exist",
        )
    return [
        copy.deepcopy(lease.instance)
        for s in services
        for lease in tenant.instances.get(s["serviceId"], {}).values()
    ]
