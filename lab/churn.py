"""The applications of one data center: registrations, updates, deletes and heartbeats.

Each :class:`Applications` acts like the services of one data center talking to its
registry over the Service-Center REST API: it keeps about ``target`` instances, registers
new ones under ids of its own (``<dc>-i<n>``, so a re-registration keeps the id), changes
their properties and status, deletes some, and heartbeats all of them in one batch every
half interval. When the registry answers that it does not know an instance (it restarted
empty) the instance registers again, as a real client does. Churn stops while
:attr:`paused` is set; heartbeats never stop. The operations come from a seeded
generator. Owns no faults, no checks; reads nothing but its own registry's answers.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from typing import Any

from lab.rest import RegistryClient

__all__ = ["Applications"]

PRIVATE_PREFIX = "private-"  # services some data centers' filters keep at home


@dataclass
class Owned:
    service: str
    host: str
    endpoint: str
    properties: dict[str, str]
    status: str = "UP"


@dataclass
class Applications:
    dc: str
    client: RegistryClient
    seed: int
    target: int = 40
    services: int = 8
    interval: int = 5
    times: int = 2
    ops_per_second: float = 2.0
    paused: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    owned: dict[str, Owned] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _sids: dict[str, str] = field(default_factory=dict)
    _next: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}/{self.dc}")
        self.names = [f"svc-{k}" for k in range(self.services - 1)] + [f"{PRIVATE_PREFIX}svc"]

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _sid(self, service: str, fresh: bool = False) -> str:
        if fresh or service not in self._sids:
            self._sids[service] = self.client.create_service("lab", service)
        return self._sids[service]

    def _register(self, iid: str, owned: Owned) -> None:
        for fresh in (False, True):
            try:
                self.client.register(
                    self._sid(owned.service, fresh), owned.host, [owned.endpoint],
                    instance_id=iid, properties=owned.properties,
                    interval=self.interval, times=self.times,
                )  # fmt: skip
            except urllib.error.HTTPError as exc:  # the service is gone (registry restart)
                if exc.code != 400 or fresh:
                    raise
                continue
            if owned.status != "UP":
                self.client.set_status(self._sids[owned.service], iid, owned.status)
            return

    def _register_new(self) -> None:
        self._next += 1
        iid = f"{self.dc}-i{self._next}"
        service = self.rng.choice(self.names)
        owned = Owned(service, f"{self.dc}-h{self._next}",
                      f"rest://{self.dc}.lab:{1000 + self._next}", {"gen": "0"})  # fmt: skip
        self.owned[iid] = owned
        self._register(iid, owned)
        self._count("register")

    def step(self) -> None:
        """One random operation (register, update, status, delete)."""
        with self.lock:
            size = len(self.owned)
            roll = self.rng.random()
            if size < self.target * 0.5 or (roll < 0.4 and size < self.target * 1.5):
                self._register_new()
                return
            iid = self.rng.choice(sorted(self.owned))
            owned = self.owned[iid]
            sid = self._sid(owned.service)
            if roll < 0.65:
                owned.properties = {"gen": str(int(owned.properties["gen"]) + 1)}
                self.client.set_properties(sid, iid, owned.properties)
                self._count("update")
            elif roll < 0.75:
                owned.status = "DOWN" if owned.status == "UP" else "UP"
                self.client.set_status(sid, iid, owned.status)
                self._count("status")
            else:
                del self.owned[iid]
                with contextlib.suppress(urllib.error.HTTPError):  # already gone: fine
                    self.client.unregister(sid, iid)
                self._count("delete")

    def beat(self) -> None:
        """One batch heartbeat; instances the registry lost register again."""
        with self.lock:
            targets = [{"serviceId": self._sid(o.service), "instanceId": iid}
                       for iid, o in self.owned.items()]  # fmt: skip
            if not targets:
                return
            try:
                self.client.heartbeat_set(targets)
                self._count("heartbeat")
                return
            except urllib.error.HTTPError as exc:
                body: Any = {}
                with contextlib.suppress(ValueError, OSError):
                    body = json.loads(exc.read() or b"{}")
            lost = [i["instanceId"] for i in body.get("instances") or []]
            for iid in lost:
                if iid in self.owned:
                    self._register(iid, self.owned[iid])
                    self._count("re-register")

    def run(self) -> None:
        """Churn and heartbeat until :attr:`stopped`; errors (registry down) are counted."""
        tick = 1.0 / self.ops_per_second
        beat_every = max(1.0, self.interval / 2)
        since_beat = beat_every
        while not self.stopped.wait(tick):
            since_beat += tick
            try:
                if since_beat >= beat_every:
                    since_beat = 0.0
                    self.beat()
                if not self.paused.is_set():
                    self.step()
            except (OSError, ValueError, KeyError):
                self._count("error")

    def start(self) -> threading.Thread:
        """Register ``target`` instances (heartbeating them meanwhile), then churn in a
        thread."""
        beat_at = time.monotonic() + self.interval / 2
        while len(self.owned) < self.target:
            with self.lock:
                self._register_new()
            if time.monotonic() > beat_at:
                self.beat()
                beat_at = time.monotonic() + self.interval / 2
        thread = threading.Thread(target=self.run, name=f"churn-{self.dc}", daemon=True)
        thread.start()
        return thread
