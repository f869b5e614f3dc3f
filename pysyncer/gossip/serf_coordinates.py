"""Serf's network coordinates: this node's Vivaldi client and the cache of everyone's.

Owns what serf/serf/ping_delegate.go does (the ack payload carrying this node's
coordinate; on each direct probe's ack, the peer's coordinate and the round trip update
ours and the peer's is cached) and serf.go ``GetCoordinate`` / ``GetCachedCoordinate``
and the cache cleanup of ``eraseNode``. A Serf agent pinging us caches our coordinate
the same way, so ``serf rtt`` works between a Serf agent and a pysyncer node.

The :class:`~pysyncer.gossip.serf.Serf` composes this part. Must not import the Serf,
the node or the network; the arithmetic lives in :mod:`pysyncer.gossip.vivaldi`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from pysyncer.errors import MalformedDataError
from pysyncer.gossip.vivaldi import (
    Coordinate,
    CoordinateClient,
    decode_ack_payload,
    encode_ack_payload,
)

__all__ = ["DEFAULT_COORDINATE_PAYLOAD", "SerfCoordinates"]

log = logging.getLogger(__name__)

DEFAULT_COORDINATE_PAYLOAD = encode_ack_payload(Coordinate.origin())
"""The ack payload of a node that has measured nothing yet (a fresh Serf agent's)."""


class SerfCoordinates:
    """This node's coordinate and the last coordinate heard from each member."""

    def __init__(self, name: str, stats: Counter[str], rng: random.Random | None = None) -> None:
        self._name = name
        self._stats = stats
        self.client = CoordinateClient(rng)
        self._cache: dict[str, Coordinate] = {name: self.client.coordinate}

    def ack_payload(self) -> bytes:
        """Our coordinate, as Serf puts it in every ack."""
        return encode_ack_payload(self.client.coordinate)

    def ping_complete(self, node: str, rtt: float, payload: bytes | None) -> None:
        """A direct probe of ``node`` was acked after ``rtt`` s carrying ``payload``."""
        if not payload:
            return  # a plain memberlist node: no coordinate
        try:
            other = decode_ack_payload(payload)
            self.client.update(node, other, rtt)
        except MalformedDataError as exc:
            self._stats["coordinates_rejected"] += 1
            log.debug("serf %s: rejected coordinate from %s: %s", self._name, node, exc)
            return
        self._cache[node] = other
        self._cache[self._name] = self.client.coordinate

    def local(self) -> Coordinate:
        return self.client.coordinate

    def cached(self, node: str) -> Coordinate | None:
        """The last coordinate of ``node`` (ours under our own name), or None."""
        return self._cache.get(node)

    def forget(self, node: str) -> None:
        """``node`` was erased from the member list: drop its samples and coordinate."""
        self.client.forget(node)
        if node != self._name:
            self._cache.pop(node, None)
