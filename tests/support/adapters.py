"""Helpers for the adapter tests: a clock to move forward, a dead address, a server with
one fixed answer, and the checks every HTTP adapter repeats (garbage, oversized bodies,
nothing answering; the same from a registry fake told to answer badly)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import pytest
from aiohttp import web

from pysyncer.adapters import BadResponseError, UnavailableError
from pysyncer.procs import free_port
from tests.support.fakes.server import FakeServer

__all__ = [
    "FakeClock",
    "StaticServer",
    "dead_address",
    "dead_url",
    "expect_bad_answers",
    "expect_bad_list",
    "expect_oversized",
    "expect_unavailable",
    "started",
]


class FakeClock:
    """Time that tests can move forward (leases, delta retention, without waiting): the
    ``base`` clock (monotonic; ``time.time`` for wall-clock milliseconds) plus an offset."""

    def __init__(self, base: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self.base() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def dead_address() -> str:
    """A loopback ``host:port`` nothing answers on."""
    return f"127.0.0.1:{free_port()}"


def dead_url() -> str:
    """An ``http://`` address nothing answers on."""
    return f"http://{dead_address()}"


class StaticServer:
    """Answers every request with one fixed body (garbage, huge, or a handcrafted shape)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> StaticServer:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(status=self.status, body=self.body, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class _Adapter(Protocol):
    async def start(self) -> None: ...

    async def list_instances(self) -> object: ...

    async def close(self) -> None: ...


AdapterT = TypeVar("AdapterT", bound=_Adapter)


async def expect_bad_list(adapter: _Adapter) -> None:
    """Listing an (already started) adapter is a BadResponseError; closes it."""
    try:
        with pytest.raises(BadResponseError):
            await adapter.list_instances()
    finally:
        await adapter.close()


async def expect_bad_answers(adapter: _Adapter, fake: FakeServer, max_body: int) -> None:
    """A started adapter on ``fake``: listing through a non-JSON answer, then through one
    over ``max_body`` bytes, is each a BadResponseError (the adapter stays open)."""
    fake.garbage_next = 1
    with pytest.raises(BadResponseError):
        await adapter.list_instances()
    fake.oversize_next = 1
    with pytest.raises(BadResponseError, match=f"over {max_body} bytes"):
        await adapter.list_instances()


async def expect_oversized(adapter: _Adapter, limit: int = 65536) -> None:
    """Starting and listing both refuse a body over ``limit`` bytes; closes the adapter."""
    try:
        with pytest.raises(BadResponseError, match=f"over {limit} bytes"):
            await adapter.start()
        with pytest.raises(BadResponseError, match=f"over {limit} bytes"):
            await adapter.list_instances()
    finally:
        await adapter.close()


async def expect_unavailable(adapter: _Adapter) -> None:
    """No address answers: starting and listing are UnavailableError; closes the adapter."""
    with pytest.raises(UnavailableError):
        await adapter.start()
    with pytest.raises(UnavailableError):
        await adapter.list_instances()
    await adapter.close()


@contextlib.asynccontextmanager
async def started(adapter: AdapterT) -> AsyncIterator[AdapterT]:
    """``adapter`` started, and closed when the block ends (however it ends)."""
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()
