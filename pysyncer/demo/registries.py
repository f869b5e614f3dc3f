"""The registries as the demo sees them: as their applications, and as an observer.

Owns the demo's Service-Center clients: :class:`Application` registers a data center's
sample instances through the REST API and keeps them alive with batch heartbeats (and
registers them again, with the same ids, when its registry forgot them), and
:class:`Observer` polls every registry's governance listing and remembers when each
instance id appeared and disappeared where. It must not start, stop or signal
processes and must not print.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pysyncer.demo.cluster import DataCenter
from pysyncer.demo.plan import (
    HEALTH_CHECK,
    HEARTBEAT_INTERVAL,
    POLL_INTERVAL,
    PROJECT,
    RETRY_INTERVAL,
    DemoError,
    service_name,
)
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY

__all__ = ["Application", "Listing", "Observer", "Original"]


@dataclass
class Original:
    """One instance the demo registered (and keeps alive) in its own data center."""

    app: str
    service: str
    host_name: str
    endpoint: str
    service_id: str = ""
    instance_id: str = ""
    registered_at: float = 0.0  # monotonic time the first register call returned


@dataclass
class Listing:
    """What one registry held at one poll."""

    at: float = 0.0
    up: bool = False
    originals: set[str] = field(default_factory=set)
    copies: dict[str, set[str]] = field(default_factory=dict)  # origin dc -> origin ids
    duplicates: int = 0  # copies whose origin id appears more than once

    def holds(self, origin_id: str) -> bool:
        return origin_id in self.originals or any(origin_id in ids for ids in self.copies.values())


class Observer:
    """Polls every registry's governance listing and remembers when ids come and go."""

    def __init__(self, session: aiohttp.ClientSession, dcs: Sequence[DataCenter]) -> None:
        self.session = session
        self.dcs = dcs
        self.latest: dict[str, Listing] = {dc.name: Listing() for dc in dcs}
        self.first_seen: dict[tuple[str, str], float] = {}  # (registry dc, origin id)
        self.gone_at: dict[tuple[str, str], float] = {}
        self.polls = 0
        # Once converged: how many copies each registry ever lacked, per origin dc.
        self.expected: Callable[[str], int] | None = None
        self.untracked: set[str] = set()  # registries not held to it (being restarted)
        self.phase = "steady"
        self.deficit: dict[tuple[str, str, str], int] = {}  # (phase, registry, origin) -> most

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(dc) for dc in self.dcs))

    async def _follow(self, dc: DataCenter) -> None:
        while True:
            started = time.monotonic()
            listing = await self._poll(dc)
            self._record(dc.name, listing)
            self.polls += 1
            await asyncio.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - started)))

    async def _poll(self, dc: DataCenter) -> Listing:
        url = f"{dc.registry}{PROJECT}/govern/microservices?options=instances"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    return Listing(at=time.monotonic())
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return Listing(at=time.monotonic())
        listing = Listing(at=time.monotonic(), up=True)
        seen: set[str] = set()
        for detail in body.get("allServicesDetail") or ():
            for instance in detail.get("instances") or ():
                props = instance.get("properties") or {}
                origin_dc = props.get(ORIGIN_DC_PROPERTY)
                if origin_dc:
                    origin_id = str(props.get(ORIGIN_ID_PROPERTY, ""))
                    if origin_id in seen:
                        listing.duplicates += 1
                    seen.add(origin_id)
                    listing.copies.setdefault(str(origin_dc), set()).add(origin_id)
                else:
                    listing.originals.add(str(instance.get("instanceId", "")))
        return listing

    def _record(self, name: str, listing: Listing) -> None:
        previous = self.latest[name]
        self.latest[name] = listing
        if not listing.up:
            return  # a registry that does not answer says nothing about what it holds
        if self.expected is not None and name not in self.untracked:
            for dc in self.dcs:
                if dc.name != name:
                    lacking = self.expected(dc.name) - len(listing.copies.get(dc.name, ()))
                    key = (self.phase, name, dc.name)
                    self.deficit[key] = max(self.deficit.get(key, 0), lacking)
        now_ids = listing.originals.union(*listing.copies.values())
        for origin_id in now_ids:
            self.first_seen.setdefault((name, origin_id), listing.at)
        if previous.up:
            before = previous.originals.union(*previous.copies.values())
            for origin_id in before - now_ids:
                self.gone_at.setdefault((name, origin_id), listing.at)

    def counts(self, name: str) -> tuple[int, dict[str, int]]:
        listing = self.latest[name]
        return len(listing.originals), {dc: len(ids) for dc, ids in listing.copies.items()}


class Application:
    """The demo's stand-in for the applications of one data center.

    Registers its instances, renews their leases every few seconds (batch heartbeat), and
    registers them again, with the same instance ids, when its registry forgot them (it
    restarted: the embedded registry keeps its data in memory).
    """

    def __init__(self, session: aiohttp.ClientSession, dc: DataCenter) -> None:
        self.session = session
        self.dc = dc
        self.instances: list[Original] = []
        self.deleted: list[Original] = []
        self.reregistered = 0
        self.down_since: float | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.dc.registry}{PROJECT}{path}"
        async with self.session.request(method, url, json=body) as response:
            text = await response.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            return response.status, data

    async def _register(self, original: Original) -> None:
        status, data = await self._call(
            "POST",
            "/registry/microservices",
            {"service": {"appId": original.app, "serviceName": original.service,
                         "version": "1.0.0"}},
        )  # fmt: skip
        if status != 200:
            raise DemoError(f"{self.dc.name}: create service {original.service}: {data}")
        original.service_id = str(data["serviceId"])
        instance: dict[str, Any] = {
            "hostName": original.host_name,
            "endpoints": [original.endpoint],
            "status": "UP",
            "healthCheck": HEALTH_CHECK,
            "properties": {"demo": "pysyncer"},
        }
        if original.instance_id:
            instance["instanceId"] = original.instance_id
        status, data = await self._call(
            "POST",
            f"/registry/microservices/{original.service_id}/instances",
            {"instance": instance},
        )
        if status != 200:
            raise DemoError(f"{self.dc.name}: register {original.host_name}: {data}")
        original.instance_id = str(data["instanceId"])
        if not original.registered_at:
            original.registered_at = time.monotonic()

    async def register_all(self, dc_index: int, services: int, instances: int) -> None:
        for s in range(services):
            app, service = service_name(s)
            for k in range(instances):
                original = Original(
                    app,
                    service,
                    host_name=f"{service}-{self.dc.name.removeprefix('dc-')}-{k + 1}",
                    endpoint=f"rest://10.{dc_index}.{s}.{k + 1}:8080",
                )
                await self._register(original)
                self.instances.append(original)

    async def unregister(self, original: Original) -> None:
        self.instances.remove(original)  # stop renewing it first
        self.deleted.append(original)
        path = f"/registry/microservices/{original.service_id}/instances/{original.instance_id}"
        status, data = await self._call("DELETE", path)
        if status != 200:
            raise DemoError(f"{self.dc.name}: unregister {original.host_name}: {data}")

    async def keep_alive(self) -> None:
        """Heartbeats forever: every few seconds, every quarter second while in trouble."""
        while True:
            healthy = await self._heartbeat()
            await asyncio.sleep(HEARTBEAT_INTERVAL if healthy else RETRY_INTERVAL)

    async def _heartbeat(self) -> bool:
        if not self.instances:
            return True
        pairs = [{"serviceId": o.service_id, "instanceId": o.instance_id} for o in self.instances]
        try:
            status, data = await self._call("PUT", "/registry/heartbeats", {"Instances": pairs})
            if status == 200:
                self.down_since = None
                return True
            failed = {
                str(item.get("instanceId"))
                for item in (data.get("instances") or () if isinstance(data, dict) else ())
            }
            for original in list(self.instances):
                if original.instance_id in failed or not failed:
                    await self._register(original)
                    self.reregistered += 1
            self.down_since = None
            return True
        except (TimeoutError, aiohttp.ClientError, DemoError):
            if self.down_since is None:
                self.down_since = time.monotonic()
            return False
