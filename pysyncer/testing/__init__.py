"""Test support shipped with pysyncer: the adapter contract suite and its harness API.

Owns what a registry adapter (built in or third party) must prove: the harness
protocol a registry under test implements (:mod:`pysyncer.testing.harness`) and the
pytest contract suite every adapter passes (:mod:`pysyncer.testing.contract`). Nothing
here runs in a daemon.
"""

from __future__ import annotations

from pysyncer.testing.harness import AppInstance, RegistryHarness

__all__ = ["AppInstance", "RegistryHarness"]
