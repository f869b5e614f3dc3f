"""What the embedded registry's tests share: plain HTTP calls to its v4 REST API, and a
registry on a clock the test moves.

Owns the one way those tests talk to a running registry: a client session per test
(the :func:`session` fixture) and a JSON request answered as (status, parsed body or
None). What a test sends (domain, token, paths) stays in the test; it does not start
servers. For the registry's Python API: :class:`ManualClock` (time only the test moves),
the :func:`clock` and :func:`registry` fixtures (a registry on that clock, revisions from
0) and the service most tests create (:data:`SERVICE`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from pysyncer.servicecenter import EmbeddedRegistry

__all__ = ["SERVICE", "ManualClock", "clock", "registry", "request_json", "session"]

SERVICE = {"appId": "shop", "serviceName": "orders", "version": "1.0.0"}


class ManualClock:
    """Monotonic seconds that move only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def registry(clock: ManualClock) -> EmbeddedRegistry:
    return EmbeddedRegistry(clock=clock, initial_revision=0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """``method url`` with ``body`` as JSON: (status, the answer's JSON; None if empty)."""
    async with session.request(method, url, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)
