"""Vivaldi network coordinates, as Serf computes them and carries them in acks.

Owns the coordinate arithmetic and the client that updates this node's coordinate from
the round trips of its direct probes, with the constants of serf/coordinate/config.go
``DefaultConfig`` (8 dimensions, error cap 1.5, both Vivaldi gains 0.25, a 20-sample
adjustment window, a 3-sample median latency filter per node, gravity 150 s towards the
origin, height at least 10 us), and the ack payload format of serf/serf/ping_delegate.go:
ping version byte 1, then the coordinate as go-msgpack writes the Go struct
(``Adjustment``, ``Error``, ``Height``, ``Vec``: float64 fields, keys sorted).

Written from the published algorithm and Serf's documented behaviour; nothing here is
tied to the node, the clock or the network. Imports only the msgpack codec and errors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError

__all__ = [
    "DIMENSIONS",
    "PING_VERSION",
    "Coordinate",
    "CoordinateClient",
    "decode_ack_payload",
    "encode_ack_payload",
]

DIMENSIONS = 8
ERROR_MAX = 1.5
CE = 0.25  # how fast the error estimate follows new samples
CC = 0.25  # how far one sample moves the coordinate
ADJUSTMENT_WINDOW = 20
HEIGHT_MIN = 10.0e-6
LATENCY_FILTER = 3
GRAVITY_RHO = 150.0
MAX_RTT = 10.0  # seconds: longer round trips are refused, as Serf does
PING_VERSION = 1
_ZERO = 1.0e-6


@dataclass(frozen=True, slots=True)
class Coordinate:
    """A point in Vivaldi space: seconds, with a height and an adjustment term."""

    vec: tuple[float, ...]
    error: float = ERROR_MAX
    adjustment: float = 0.0
    height: float = HEIGHT_MIN

    @classmethod
    def origin(cls) -> Coordinate:
        return cls((0.0,) * DIMENSIONS)

    def is_valid(self) -> bool:
        values = (*self.vec, self.error, self.adjustment, self.height)
        return all(math.isfinite(v) for v in values)

    def raw_distance(self, other: Coordinate) -> float:
        gap = math.sqrt(sum((a - b) ** 2 for a, b in zip(self.vec, other.vec, strict=True)))
        return gap + self.height + other.height

    def distance(self, other: Coordinate) -> float:
        """Estimated round trip to ``other`` in seconds (adjustments used when positive)."""
        if len(self.vec) != len(other.vec):
            raise MalformedDataError("coordinates of different dimensions")
        raw = self.raw_distance(other)
        adjusted = raw + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else raw

    def pushed(self, force: float, other: Coordinate, rng: random.Random) -> Coordinate:
        """This coordinate moved by ``force`` along the line from ``other`` to it."""
        unit, magnitude = _unit_vector(self.vec, other.vec, rng)
        vec = tuple(a + u * force for a, u in zip(self.vec, unit, strict=True))
        height = self.height
        if magnitude > _ZERO:
            height = max((height + other.height) * force / magnitude + height, HEIGHT_MIN)
        return Coordinate(vec, self.error, self.adjustment, height)

    def to_wire(self) -> dict[str, object]:
        return {
            "Adjustment": self.adjustment,
            "Error": self.error,
            "Height": self.height,
            "Vec": [float(v) for v in self.vec],
        }

    @classmethod
    def from_wire(cls, body: object) -> Coordinate:
        if type(body) is not dict:
            raise MalformedDataError("coordinate is not a map")
        vec = body.get(b"Vec")
        if type(vec) is not list or not vec:
            raise MalformedDataError("coordinate has no vector")
        try:
            return cls(
                tuple(float(v) for v in vec),
                float(body.get(b"Error", 0.0)),
                float(body.get(b"Adjustment", 0.0)),
                float(body.get(b"Height", 0.0)),
            )
        except (TypeError, ValueError):
            raise MalformedDataError("coordinate field is not a number") from None


def _unit_vector(
    a: Sequence[float], b: Sequence[float], rng: random.Random
) -> tuple[tuple[float, ...], float]:
    """The unit vector from ``b`` to ``a`` and the distance; a random one if they meet."""
    diff = tuple(x - y for x, y in zip(a, b, strict=True))
    magnitude = math.sqrt(sum(x * x for x in diff))
    if magnitude > _ZERO:
        return tuple(x / magnitude for x in diff), magnitude
    diff = tuple(rng.random() - 0.5 for _ in a)
    random_magnitude = math.sqrt(sum(x * x for x in diff))
    if random_magnitude > _ZERO:
        return tuple(x / random_magnitude for x in diff), 0.0
    return (1.0,) + (0.0,) * (len(a) - 1), 0.0


def encode_ack_payload(coordinate: Coordinate) -> bytes:
    """Serf's ack payload: the ping version byte, then the msgpack coordinate."""
    return bytes((PING_VERSION,)) + wire.pack(coordinate.to_wire())


def decode_ack_payload(payload: bytes) -> Coordinate:
    """The coordinate of a Serf ack payload; MalformedDataError for another version."""
    if not payload or payload[0] != PING_VERSION:
        raise MalformedDataError(f"unsupported ping payload version {payload[:1]!r}")
    return Coordinate.from_wire(wire.unpack(payload[1:]))


class CoordinateClient:
    """This node's coordinate, updated from each probe round trip (serf ``coordinate.Client``)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.coordinate = Coordinate.origin()
        self.resets = 0
        self._origin = Coordinate.origin()
        self._rng = rng or random.Random()
        self._adjustments = [0.0] * ADJUSTMENT_WINDOW
        self._adjustment_index = 0
        self._samples: dict[str, list[float]] = {}

    def forget(self, node: str) -> None:
        self._samples.pop(node, None)

    def update(self, node: str, other: Coordinate, rtt: float) -> Coordinate:
        """Move towards agreeing with ``rtt`` to ``node`` at ``other``; the new coordinate.

        MalformedDataError for an incompatible or invalid coordinate or a round trip
        outside ``[0, 10 s]`` (nothing changes then).
        """
        if len(other.vec) != len(self.coordinate.vec) or not other.is_valid():
            raise MalformedDataError(f"coordinate of {node} is invalid or incompatible")
        if not 0.0 <= rtt <= MAX_RTT:
            raise MalformedDataError(f"round trip {rtt} s to {node} is out of range")
        filtered = self._median_rtt(node, rtt)
        self._vivaldi(other, filtered)
        self._adjust(other, filtered)
        self._gravity()
        if not self.coordinate.is_valid():
            self.resets += 1
            self.coordinate = Coordinate.origin()
        return self.coordinate

    def _median_rtt(self, node: str, rtt: float) -> float:
        samples = self._samples.setdefault(node, [])
        samples.append(rtt)
        del samples[:-LATENCY_FILTER]
        return sorted(samples)[len(samples) // 2]

    def _vivaldi(self, other: Coordinate, rtt: float) -> None:
        me = self.coordinate
        rtt = max(rtt, _ZERO)
        distance = me.distance(other)
        wrongness = abs(distance - rtt) / rtt
        weight = me.error / max(me.error + other.error, _ZERO)
        error = min(CE * weight * wrongness + me.error * (1.0 - CE * weight), ERROR_MAX)
        moved = Coordinate(me.vec, error, me.adjustment, me.height)
        self.coordinate = moved.pushed(CC * weight * (rtt - distance), other, self._rng)

    def _adjust(self, other: Coordinate, rtt: float) -> None:
        me = self.coordinate
        self._adjustments[self._adjustment_index] = rtt - me.raw_distance(other)
        self._adjustment_index = (self._adjustment_index + 1) % ADJUSTMENT_WINDOW
        adjustment = sum(self._adjustments) / (2.0 * ADJUSTMENT_WINDOW)
        self.coordinate = Coordinate(me.vec, me.error, adjustment, me.height)

    def _gravity(self) -> None:
        distance = self._origin.distance(self.coordinate)
        force = -((distance / GRAVITY_RHO) ** 2)
        self.coordinate = self.coordinate.pushed(force, self._origin, self._rng)
