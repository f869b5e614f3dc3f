"""A fault-injecting HTTP proxy in front of one registry: slow answers and 5xx on command.

Forwards every request to ``--upstream`` unchanged (method, path, query, headers, body) and
returns the answer, unless a fault is set: ``delay`` seconds before forwarding, and a
``error_rate`` share of requests answered ``503`` with a Service-Center error body without
reaching the registry. The lab sets the fault with ``PUT /_lab/fault {"delay": s,
"error_rate": p}`` and reads counters with ``GET /_lab/fault``. Owns nothing but that.

    python -m lab.proxy --listen 10.1.3.6:30100 --upstream http://10.1.3.5:30100 --seed 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from aiohttp import ClientSession, ClientTimeout, web

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
UPSTREAM_TIMEOUT = 90.0  # longer than the change feed's longest long-poll (60 s)


class FaultProxy:
    def __init__(self, upstream: str, seed: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.delay = 0.0
        self.error_rate = 0.0
        self.forwarded = 0
        self.failed = 0
        self.session: ClientSession | None = None

    async def fault(self, request: web.Request) -> web.Response:
        if request.method == "PUT":
            body = await request.json()
            self.delay = float(body.get("delay", 0.0))
            self.error_rate = float(body.get("error_rate", 0.0))
        return web.json_response(
            {"delay": self.delay, "error_rate": self.error_rate,
             "forwarded": self.forwarded, "failed": self.failed}
        )  # fmt: skip

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            self.failed += 1
            body = {"errorCode": "500003", "errorMessage": "Internal server error",
                    "detail": "lab proxy: injected fault"}  # fmt: skip
            return web.json_response(body, status=503)
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = await request.read()
        async with self.session.request(
            request.method, f"{self.upstream}{request.rel_url}", headers=headers,
            data=data or None, allow_redirects=False,
        ) as answer:  # fmt: skip
            payload = await answer.read()
            self.forwarded += 1
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=payload, headers=out)

    async def serve(self, host: str, port: int) -> None:
        self.session = ClientSession(timeout=ClientTimeout(total=UPSTREAM_TIMEOUT))
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/_lab/fault", self.fault)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"proxy: {host}:{port} -> {self.upstream}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.proxy", description=__doc__)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="URL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        asyncio.run(FaultProxy(args.upstream, args.seed).serve(host, int(port)))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
