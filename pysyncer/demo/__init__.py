"""``pysyncer demo``: several data centers on loopback, instances syncing between them.

Starts one ``pysyncer daemon`` subprocess per data center (``dc-east``, ``dc-west``,
``dc-north``...), each with its embedded registry, on free ports of its own loopback address
(``127.0.0.x``), all joining the first one's gossip address, with gossip encryption and
mutual TLS on the sync plane (a key and certificates made for the run). The demo then
plays the *application*: it registers sample services in every registry through the REST
API and keeps them alive with heartbeats, while it polls every registry's governance
listing (~20 ms) to measure how long a registration takes to appear everywhere. It then
deletes one instance, restarts one syncer with the same data directory (not in the quick
run), checks that the copies stayed and that nothing got duplicated, and prints a summary
(exit status 1 when a count is not what it must be).

The package, one job per module: :mod:`~pysyncer.demo.plan` (sizes, names, durations),
:mod:`~pysyncer.demo.cluster` (the data centers' daemons and admin API, processes through
:mod:`pysyncer.procs`), :mod:`~pysyncer.demo.pki` (the gossip key and certificates),
:mod:`~pysyncer.demo.registries` (the applications and the observer),
:mod:`~pysyncer.demo.state` (expectations, measurements, tables),
:mod:`~pysyncer.demo.display` (output), :mod:`~pysyncer.demo.steps` (the scenario, one
function per step) and :mod:`~pysyncer.demo.main` (:func:`run_demo`). It owns only its own
processes: each is stopped by pid on exit, on an error and on Ctrl-C (and, on Linux, also
when the demo itself dies). Every wait is bounded; the whole run ends by itself in well
under two minutes, the quick one in well under one. Nothing in a daemon imports it.

Imports: errors, model, procs, tlsgen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pysyncer.demo.plan import DC_NAMES, FULL, QUICK, SERVICE_NAMES

if TYPE_CHECKING:
    from pysyncer.demo.main import run_demo

__all__ = ["DC_NAMES", "FULL", "QUICK", "SERVICE_NAMES", "run_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":  # loads aiohttp: only when the demo runs
        return importlib.import_module("pysyncer.demo.main").run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
