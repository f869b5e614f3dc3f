"""The registry REST client the lab uses: the one of pysyncer's process helper.

One import point, so the lab follows that helper if it moves again. Owns nothing else.
"""

from __future__ import annotations

from pysyncer.procs import RegistryClient

__all__ = ["RegistryClient"]
