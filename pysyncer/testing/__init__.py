"""Test support shipped with pysyncer: the adapter contract suite and its harness API.

Owns what a registry adapter (built in or third party) must prove: the harness
protocol a registry under test implements (:mod:`pysyncer.testing.harness`), the
pytest contract suite every adapter passes (:mod:`pysyncer.testing.contract`, imported
lazily so this package does not need pytest) and a harness for pysyncer's embedded
registry (:mod:`pysyncer.testing.embedded`). Also the processes pysyncer's own tests and
benchmarks share (:mod:`pysyncer.testing.procs`: free ports, ``pysyncer daemon`` and
``pysyncer registry`` subprocesses, a REST client, a poller). Nothing here runs in a daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pysyncer.testing.harness import AppInstance, RegistryHarness

if TYPE_CHECKING:
    from pysyncer.testing.contract import AdapterContract

__all__ = ["AdapterContract", "AppInstance", "RegistryHarness"]


def __getattr__(name: str) -> Any:
    if name == "AdapterContract":
        return importlib.import_module("pysyncer.testing.contract").AdapterContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
