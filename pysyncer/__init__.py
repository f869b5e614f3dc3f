"""pysyncer: keeps microservice instances in sync across service registries.

The package root stays import-light: importing :mod:`pysyncer` loads no event loop,
network client or compiled module.
"""

from pysyncer._version import __version__

__all__ = ["__version__"]
