# mypy: disable-error-code="import-untyped"
"""The ``ListService`` answer of the sync RPC: a registry's instances of one service.

Owns the conversion between :class:`~pysyncer.model.Instance` values and the
``ListedInstance`` messages of ``sync.proto``, and the bounds of a listing: at most
:data:`MAX_LISTED` instances however large the asked ``limit`` (:data:`DEFAULT_LISTED`
when the caller names none). A listing from a peer is not trusted: every service key is
parsed and a malformed one raises :class:`~pysyncer.rpc.errors.PayloadError`.
Nothing else: no sockets, no registry, no diff logic (that is :mod:`pysyncer.sync.diff`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

from pysyncer.model import Instance, ServiceKey
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.rpc.errors import PayloadError

__all__ = [
    "DEFAULT_LISTED",
    "MAX_LISTED",
    "Listing",
    "listed_limit",
    "listing_message",
    "read_listing",
]

DEFAULT_LISTED = 2_000  # instances per listing when the caller does not say
MAX_LISTED = 10_000  # instances per listing at most (about 2 MB: far below a message's bound)


@dataclass(frozen=True, slots=True)
class Listing:
    """What one syncer's registry holds of a service (or of every service, bounded)."""

    dc: str
    node: str
    instances: tuple[Instance, ...]
    truncated: bool  # the limit cut the listing
    filters: str  # the syncer's filter rules, JSON as in its sync status


def listed_limit(asked: int) -> int:
    """The number of instances a listing asked for ``asked`` may hold."""
    return DEFAULT_LISTED if asked <= 0 else min(asked, MAX_LISTED)


def _listed(instance: Instance) -> pb.ListedInstance:
    return pb.ListedInstance(
        service=instance.service.text(),
        instance_id=instance.instance_id,
        host=instance.host_name,
        endpoints=list(instance.endpoints),
        status=instance.status,
        properties=dict(instance.properties),
        health_interval=instance.health_interval,
        health_times=instance.health_times,
    )


def listing_message(
    dc: str, node: str, instances: Iterable[Instance], name: str, limit: int, filters: str
) -> pb.ServiceListing:
    """The answer holding the instances of service ``name`` ("" = all), sorted, cut at
    :func:`listed_limit` of ``limit``."""
    bound = listed_limit(limit)
    chosen = sorted(
        (i for i in instances if not name or i.service.name == name),
        key=lambda i: (i.service.text(), i.instance_id),
    )
    return pb.ServiceListing(
        dc=dc,
        node=node,
        instances=[_listed(i) for i in chosen[:bound]],
        truncated=len(chosen) > bound,
        filters=filters,
    )


def read_listing(msg: pb.ServiceListing) -> Listing:
    """A peer's listing as instances; PayloadError for more than :data:`MAX_LISTED` of
    them or a malformed service key."""
    if len(msg.instances) > MAX_LISTED:
        raise PayloadError(f"a listing of {len(msg.instances)} instances (at most {MAX_LISTED})")
    instances = []
    for item in msg.instances:
        try:
            service = ServiceKey.parse(item.service)
        except ValueError as exc:
            raise PayloadError(f"listed instance {item.instance_id!r}: {exc}") from None
        instances.append(
            Instance(
                service=service,
                instance_id=item.instance_id,
                host_name=item.host,
                endpoints=tuple(item.endpoints),
                status=item.status,
                properties=MappingProxyType(dict(item.properties)),
                health_interval=item.health_interval,
                health_times=item.health_times,
            )
        )
    return Listing(msg.dc, msg.node, tuple(instances), msg.truncated, msg.filters)
