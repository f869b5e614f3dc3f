"""Fixtures for the embedded registry's tests: a registry on a clock the test moves."""

from tests.support.servicecenter import clock, registry

__all__ = ["clock", "registry"]
