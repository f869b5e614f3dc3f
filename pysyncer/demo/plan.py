"""What ``pysyncer demo`` runs: its sizes, its names, every duration and bound it keeps.

Owns the facts of the demo and nothing that acts: the full and the quick run
(:data:`FULL`, :data:`QUICK`) and the ranges a user may choose, the data center and
sample service names, the Service-Center project and lease it registers with, the
poll, heartbeat and timeout durations, the exit statuses and :class:`DemoError`. It
imports only the standard library and :mod:`pysyncer.errors`, so the command line can
read the defaults without loading the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

from pysyncer.errors import PysyncerError

__all__ = [
    "DC_NAMES",
    "FULL",
    "QUICK",
    "SERVICE_NAMES",
    "DemoError",
    "Size",
    "dc_names",
    "service_name",
]


class DemoError(PysyncerError, RuntimeError):
    """A step of the demo failed; the message says which and where the logs are."""


@dataclass(frozen=True, slots=True)
class Size:
    """How big one run is, and whether it restarts a syncer."""

    dcs: int
    services: int  # per data center
    instances: int  # per service
    restart: bool


FULL = Size(dcs=3, services=5, instances=2, restart=True)
QUICK = Size(dcs=2, services=2, instances=1, restart=False)  # the wheel smoke test
DCS_RANGE = range(2, 17)
SERVICES_RANGE = range(1, 51)
INSTANCES_RANGE = range(1, 21)

DC_NAMES = ("dc-east", "dc-west", "dc-north", "dc-south", "dc-central", "dc-edge")
SERVICE_NAMES = (
    ("shop", "cart"),
    ("shop", "payment"),
    ("shop", "orders"),
    ("shop", "catalog"),
    ("shop", "inventory"),
    ("shop", "shipping"),
    ("users", "accounts"),
    ("users", "auth"),
    ("search", "query"),
    ("search", "indexer"),
)
PROJECT = "/v4/default"
HEALTH_CHECK = {"mode": "push", "interval": 30, "times": 3}  # Service-Center's default: 120 s

POLL_INTERVAL = 0.02  # governance listing poll, per registry
HEARTBEAT_INTERVAL = 3.0  # the application's lease renewals, well inside the TTL
RETRY_INTERVAL = 0.25  # heartbeats while a registry is down or forgot our instances
REFRESH = 0.25  # live table redraw interval (TTY only)
TOTAL_BUDGET = 100.0  # seconds: the whole demo, whatever happens
START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
STOP_ALL_TIMEOUT = 10.0
CATCH_UP_TIMEOUT = 45.0
DOWN_PAUSE = 2.0  # how long one syncer stays stopped while we watch the others

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def dc_names(count: int) -> list[str]:
    """The first ``count`` data center names (``dc-7``, ``dc-8``... past the named ones)."""
    return [DC_NAMES[i] if i < len(DC_NAMES) else f"dc-{i + 1}" for i in range(count)]


def service_name(index: int) -> tuple[str, str]:
    """(app, service) of the ``index``-th sample service."""
    if index < len(SERVICE_NAMES):
        return SERVICE_NAMES[index]
    return "shop", f"service-{index + 1}"
