"""The governance views of the embedded Service-Center: ``ServiceDetail`` and statistics.

Owns the shapes Service-Center's ``/govern`` routes answer, built from a tenant's services
and instance leases: a service's detail (the service, optionally its instances, its
sibling versions) and the tenant's counts. Read-only and pure: it hands out deep copies,
and must not import the data model (``core``), the feed or the HTTP app.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from pysyncer.servicecenter.leases import Lease
from pysyncer.servicecenter.validation import JSON, version_key

__all__ = ["service_detail", "sibling_versions", "statistics"]


def service_detail(service: JSON, leases: Iterable[Lease] | None) -> JSON:
    """``ServiceDetail``: the service, and its instances when ``leases`` is given."""
    detail: JSON = {"microService": copy.deepcopy(service)}
    if leases is not None:
        detail["instances"] = [copy.deepcopy(lease.instance) for lease in leases]
    return detail


def sibling_versions(services: Iterable[JSON], service: JSON) -> list[str]:
    """The versions of every service with ``service``'s environment, app and name, sorted."""
    key = (service["environment"], service["appId"], service["serviceName"])
    return sorted(
        (s["version"] for s in services if (s["environment"], s["appId"], s["serviceName"]) == key),
        key=version_key,
    )


def statistics(services: Mapping[str, JSON], instances: Mapping[str, Mapping[str, Lease]]) -> JSON:
    """A tenant's counts: services (and those with instances), instances, apps."""
    count = sum(len(v) for v in instances.values())
    return {
        "services": {"count": len(services), "onlineCount": len(instances)},
        "instances": {"count": count, "countByDomain": count},
        "apps": {"count": len({s["appId"] for s in services.values()})},
    }
