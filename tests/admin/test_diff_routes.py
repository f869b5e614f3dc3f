"""The dashboard's routes over real HTTP: the page and its assets, the event stream, the
diff and dry-run routes' parameters; the merge patch; the terminal views of the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer.admin.app import build_app
from pysyncer.admin.auth import AdminAuth
from pysyncer.admin.payloads import DiffAnswer, DryRunAnswer, SlotRun, SyncStatus
from pysyncer.admin.stream import merge_patch
from pysyncer.admin.terminal import bar, diff_lines, dry_run_lines, status_lines
from pysyncer.sync.peers import PeerStatus, SyncProgress
from pysyncer.sync.status import remote_links
from tests.admin.test_admin_app import InMemoryBackend
from tests.support.waits import eventually

TOKEN = "dash-token"


class FakeEngine:
    """A sync and inspect backend whose status the test moves."""

    def __init__(self) -> None:
        self.copies = 0
        self.asked: list[tuple[str, int]] = []

    def sync_status(self) -> SyncStatus:
        link = PeerStatus("dc2", state="streaming")
        return cast(
            SyncStatus,
            {"dc": "dc1", "remote": remote_links({"dc2": link}, {"dc2": self.copies})},
        )

    def full_sync(self) -> list[str]:
        return ["dc2"]

    async def diff(self, service: str, limit: int) -> DiffAnswer:
        self.asked.append((service, limit))
        return cast(DiffAnswer, {"service": service, "limit": limit, "discrepancies": []})

    async def dry_run(self) -> DryRunAnswer:
        return cast(DryRunAnswer, {"direction": "both", "services": []})

    def slot_runs(self) -> list[SlotRun]:
        return [(0, 8192, "n1", False), (8192, 8192, "n2", True)]


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, FakeEngine]]:
    engine = FakeEngine()
    app = build_app(InMemoryBackend(), CollectorRegistry(), sync=engine, auth=AdminAuth(TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", engine
    finally:
        await runner.cleanup()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def read_event(response: aiohttp.ClientResponse) -> tuple[str, Any]:
    lines: list[str] = []
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line == "" and lines:
            break
        if line and not line.startswith(":"):
            lines.append(line)
    kind = next(x[6:].strip() for x in lines if x.startswith("event:"))
    data = json.loads("".join(x[5:] for x in lines if x.startswith("data:")))
    return kind, data


async def test_the_stream_sends_a_snapshot_then_what_changed(
    served: tuple[str, FakeEngine],
) -> None:
    base, engine = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/sync/stream") as refused:
            assert refused.status == 401
        async with session.get(f"{base}/v1/sync/stream", headers=AUTH) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            kind, snapshot = await read_event(response)
            assert kind == "snapshot"
            assert snapshot["members"]["n1"]["status"] == "alive"
            assert snapshot["sync"]["remote"]["dc2"]["copies"] == 0
            assert snapshot["slots"] == [[0, 8192, "n1", False], [8192, 8192, "n2", True]]
            engine.copies = 5
            kind, delta = await asyncio.wait_for(read_event(response), 5)
            assert kind == "delta"
            assert delta["sync"] == {"remote": {"dc2": {"copies": 5}}}
            assert set(delta) == {"sync", "at"}


async def test_the_page_and_its_assets_are_served_open_with_a_strict_policy(
    served: tuple[str, FakeEngine],
) -> None:
    base, _ = served
    async with aiohttp.ClientSession() as session:
        for path, kind in (
            ("/ui/", "text/html"),
            ("/ui/dashboard.js", "text/javascript"),
            ("/ui/dashboard.css", "text/css"),
        ):
            async with session.get(base + path) as response:
                assert response.status == 200 and response.content_type == kind
                policy = response.headers["Content-Security-Policy"]
                assert "script-src 'self'" in policy and "default-src 'none'" in policy
                body = await response.text()
                assert "http://" not in body and "https://" not in body  # no CDN
        async with session.get(base + "/", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/ui/"
        async with session.get(base + "/ui/../app.py") as response:
            assert response.status == 404


async def test_the_diff_route_checks_its_parameters(served: tuple[str, FakeEngine]) -> None:
    base, engine = served
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(f"{base}/v1/sync/diff?service=cart&limit=50") as response:
            assert response.status == 200
            assert (await response.json())["service"] == "cart"
        for bad in ("limit=0", "limit=x", "limit=100000", "service=" + "s" * 300):
            async with session.get(f"{base}/v1/sync/diff?{bad}") as response:
                assert response.status == 400, bad
        async with session.get(f"{base}/v1/sync/filters/dry-run") as response:
            assert (await response.json())["direction"] == "both"
    assert engine.asked == [("cart", 50)]


def test_merge_patch_is_rfc_7386() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1, 2, 3], "new": None}
    assert merge_patch(old, new) == {"b": {"d": 4}, "e": [1, 2, 3], "new": None, "gone": None}
    assert merge_patch(old, old) == {}


def test_the_terminal_views() -> None:
    assert bar(0.5, 10) == "[#####.....]" and bar(2, 4) == "[####]"
    link = PeerStatus("dc2", state="repairing")
    link.progress = SyncProgress()
    link.progress.begin("initial", slots=200, records=4000)
    link.progress.slots_done, link.progress.records_done = 50, 1000
    status = cast(
        SyncStatus,
        {
            "dc": "dc1", "node": "n1", "revision": 7, "exported": 3, "store": {"status": "ok"},
            "remote": remote_links({"dc2": link}, {"dc2": 9}),
        },
    )  # fmt: skip
    screen = "\n".join(status_lines(status))
    assert "repairing" in screen and "50/200 slots, 1,000/4,000 records" in screen
    assert "initial sync" in screen and "[" + "#" * 8 in screen
    diff = cast(
        DiffAnswer,
        {
            "service": "cart", "limit": 10, "elapsed_seconds": 0.1,
            "registries": {"dc2": {"node": "", "reached": False, "error": "down",
                                   "truncated": False, "originals": 0, "copies": 0}},
            "discrepancies": [{"kind": "unreachable", "registry": "dc2", "service": "cart",
                               "instance_id": "", "explanation": "dc2 down"}],
        },
    )  # fmt: skip
    assert "1 discrepancies" in "\n".join(diff_lines(diff))
    run = cast(
        DryRunAnswer,
        {
            "direction": "both", "unreachable": {}, "truncated": True, "unused_rules": ["r"],
            "services": [{"side": "export", "dc": "dc1", "service": "s", "instances": 2,
                          "passing": 1, "verdict": "partly", "reason": "why"}],
        },
    )  # fmt: skip
    text = "\n".join(dry_run_lines(run))
    assert "1/2" in text and "partly" in text and "unused rule: r" in text


async def test_diffs_under_way_are_bounded(served: tuple[str, FakeEngine]) -> None:
    base, engine = served
    release = asyncio.Event()
    original = engine.diff

    entered: list[str] = []

    async def slow(service: str, limit: int) -> DiffAnswer:
        entered.append(service)
        await release.wait()
        return await original(service, limit)

    engine.diff = slow  # type: ignore[method-assign]
    async with aiohttp.ClientSession(headers=AUTH) as session:
        running = [
            asyncio.ensure_future(session.get(f"{base}/v1/sync/diff?service=s{i}"))
            for i in range(2)
        ]
        await eventually(lambda: len(entered) == 2, 10, "both diffs under way")
        async with session.get(f"{base}/v1/sync/filters/dry-run") as refused:
            assert refused.status == 503
            assert "already under way" in (await refused.json())["error"]
        release.set()
        for response in await asyncio.gather(*running):
            assert response.status == 200
            response.release()
        async with session.get(f"{base}/v1/sync/filters/dry-run") as again:
            assert again.status == 200
