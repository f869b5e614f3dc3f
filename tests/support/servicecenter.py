"""Plain HTTP calls to a Service-Center v4 REST API, for the registry's own HTTP tests.

Owns the one way those tests talk to a running registry: a client session per test
(the :func:`session` fixture) and a JSON request answered as (status, parsed body or
None). What a test sends (domain, token, paths) stays in the test; it does not start
servers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

__all__ = ["request_json", "session"]


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
