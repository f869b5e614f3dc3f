"""A small base for the in-process registry fakes: an aiohttp app on a loopback port.

Owns starting and stopping the server (``async with`` does both), counting requests per
path, and failure injection (the next N answers as an HTTP status, an oversized or
malformed body).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web


class Clock:
    """An injectable clock: real monotonic time plus whatever :meth:`advance` added."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FakeT = TypeVar("FakeT", bound="FakeServer")


class FakeServer:
    """Runs ``self.app`` on 127.0.0.1; subclasses add routes in ``__init__``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.app = web.Application(middlewares=[self._middleware])
        self.calls: Counter[str] = Counter()
        self.fail_next: list[int] = []  # HTTP statuses to answer with, in order
        self.oversize_next = 0  # answers to replace by a huge body
        self.garbage_next = 0  # answers to replace by a non-JSON body
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.calls[f"{request.method} {request.path}"] += 1
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="injected failure")
        if self.oversize_next:
            self.oversize_next -= 1
            return web.Response(body=b"[" + b"0," * (4 * 1024 * 1024) + b"0]")
        if self.garbage_next:
            self.garbage_next -= 1
            return web.Response(text="<html>not json", content_type="application/json")
        return await handler(request)

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self: FakeT) -> FakeT:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
