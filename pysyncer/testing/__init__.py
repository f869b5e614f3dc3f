"""Test support shipped for registry adapter authors: the contract suite and its harness.

Owns what a registry adapter (built in or third party) must prove: the harness
protocol a registry under test implements (:mod:`pysyncer.testing.harness`) and the
pytest contract suite every adapter passes (:mod:`pysyncer.testing.contract`, imported
lazily so this package does not need pytest). Nothing else: pysyncer's own harnesses,
fakes and fixtures live under ``tests/``, the processes it starts in
:mod:`pysyncer.procs`. Nothing here runs in a daemon.

Imports: adapters, errors, model.
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
