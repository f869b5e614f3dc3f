"""Change detection of the Consul adapter: blocking queries, one watcher per service.

Owns the watchers behind :meth:`~pysyncer.adapters.consul.ConsulAdapter.changes`: a
blocking query on ``/v1/catalog/services`` that starts and stops one watcher per
service, and per service a blocking query on ``/v1/health/service/<name>`` whose answers
are compared with the last state to make change events. ``X-Consul-Index`` rules: an
index that goes backwards is reset to 0 (one non-blocking re-read), an index below 1 is
never sent as 0 twice, and every watcher waits ``min_query_interval`` between its
requests (except right after a plain read at index 0: the first blocking query follows
at once).

It reads through the small :class:`WatchedCatalog` protocol the adapter implements: it
must not import the adapter module or do HTTP itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final, Protocol, TypeVar

from pysyncer.adapters._retry import Backoff
from pysyncer.adapters.base import AdapterError, ChangeBatch, ChangeEvent, LocalRef
from pysyncer.adapters.consul_codec import ConsulSettings
from pysyncer.model import Instance
from pysyncer.supervisor import Supervised, spawn

__all__ = ["ConsulWatch", "WatchedCatalog", "next_index"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICES_TASK: Final = "consul-services-watch"  # supervisor task names (metric labels)
SERVICE_TASK: Final = "consul-service-watch"  # every per-service watcher counts here

Entries = list[tuple[Instance, LocalRef]]


class WatchedCatalog(Protocol):
    """What the watchers need from the adapter they watch for."""

    @property
    def settings(self) -> ConsulSettings:
        """``min_query_interval`` paces the watchers, ``retry_max`` caps their backoff."""
        ...

    @property
    def closing(self) -> asyncio.Event:
        """Set when the adapter closes: every watcher stops."""
        ...

    def halted(self) -> bool:
        """Closed, or its HTTP client stopped: a failed watcher stops instead of retrying."""
        ...

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the adapter closes."""
        ...

    async def service_names(self, index: int = 0) -> tuple[list[str], int]:
        """The service names and their index; blocks while ``index`` is current."""
        ...

    async def service_entries(self, name: str, index: int = 0) -> tuple[Entries, int]:
        """The instances of ``name`` and their index; blocks while ``index`` is current."""
        ...

    def saw_service(
        self,
        previous: Mapping[str, tuple[Instance, LocalRef]],
        current: Mapping[str, tuple[Instance, LocalRef]],
    ) -> None:
        """A watcher read a service's instances: ``current`` replaces ``previous``."""
        ...


class ConsulWatch:
    """The blocking-query watchers of one :meth:`ConsulAdapter.changes` iterator.

    ``listing`` is the adapter's last listing (the state changes are computed against),
    ``indexes`` the ``X-Consul-Index`` each service was listed at and ``services_index``
    that of the service list: the first blocking queries continue from the listing.
    """

    def __init__(
        self,
        catalog: WatchedCatalog,
        listing: Mapping[str, tuple[Instance, LocalRef]],
        indexes: Mapping[str, int],
        services_index: int,
    ) -> None:
        self.catalog = catalog
        self.indexes = dict(indexes)
        self.services_index = services_index
        self.state: dict[str, dict[str, tuple[Instance, LocalRef]]] = {}
        for iid, (instance, ref) in listing.items():
            self.state.setdefault(ref.service_id, {})[iid] = (instance, ref)
        self.queue: asyncio.Queue[list[ChangeEvent]] = asyncio.Queue()
        self.tasks: dict[str, Supervised] = {}  # one watcher per service
        self.services_task: Supervised | None = None

    async def run(self) -> AsyncIterator[ChangeBatch]:
        catalog = self.catalog
        for name in set(self.indexes) | set(self.state):
            self._watch(name, self.indexes.get(name, 0))
        services_index = self.services_index
        self.services_task = spawn(SERVICES_TASK, lambda: self._services(services_index))
        closed = asyncio.create_task(catalog.closing.wait())
        try:
            while not catalog.closing.is_set():
                getter = asyncio.create_task(self.queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                events = getter.result()
                while not self.queue.empty():
                    events.extend(self.queue.get_nowait())
                if events:
                    yield ChangeBatch(events)
        finally:
            closed.cancel()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        if self.services_task is not None:
            tasks.append(self.services_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            await task.stop()

    def _watch(self, name: str, index: int) -> None:
        if name not in self.tasks:  # a failed watcher is logged, counted and restarted
            self.tasks[name] = spawn(SERVICE_TASK, lambda: self._service(name, index))

    async def _paced(self, last: float) -> float:
        """Sleep so that requests of one watcher are ``min_query_interval`` apart.

        ``last`` is when the previous request was sent, or ``_UNPACED`` after a plain
        read (index 0): the blocking query after it starts at once. That query's index is
        at least 1 (:func:`next_index`) and it is paced in turn, so a watcher never sends
        more than two requests per interval, even against a server stuck at index 0.
        """
        loop = asyncio.get_running_loop()
        gap = self.catalog.settings.min_query_interval - (loop.time() - last)
        if gap > 0:
            await self.catalog.pause(gap)
        return loop.time()

    async def _answers(
        self, what: str, read: Callable[[int], Awaitable[tuple[T, int]]], index: int
    ) -> AsyncIterator[T]:
        """Each answer of ``read(index)``: a plain read at index 0, then blocking queries
        from the index each answer carries, paced; a failed read is retried with backoff,
        and the answers end when the adapter closes or its HTTP client stops."""
        catalog, last = self.catalog, 0.0
        backoff = Backoff(catalog.settings.retry_max)
        while not catalog.closing.is_set():
            last = await self._paced(last)
            try:
                answer, new_index = await read(index)
            except AdapterError as exc:
                if catalog.halted():
                    return
                delay = backoff.failed()
                log.warning("consul %s: %s (retrying in %.1fs)", what, exc, delay)
                await catalog.pause(delay)
                continue
            backoff.succeeded()
            if index == 0:
                last = _UNPACED  # a plain read: its blocking query follows at once
            index = next_index(index, new_index)
            yield answer

    async def _services(self, index: int) -> None:
        async for names in self._answers("services watch", self.catalog.service_names, index):
            for name in names:
                self._watch(name, 0)
            for name in set(self.tasks) - set(names):
                task = self.tasks.pop(name)
                task.cancel()
                gone = self.state.pop(name, {})
                if gone:
                    self.queue.put_nowait([ChangeEvent("delete", i, r) for i, r in gone.values()])

    async def _service(self, name: str, index: int) -> None:
        catalog = self.catalog
        read = functools.partial(catalog.service_entries, name)
        async for entries in self._answers(f"watch of {name}", read, index):
            current = {i.instance_id: (i, r) for i, r in entries}
            previous = self.state.get(name, {})
            events = [
                ChangeEvent("upsert", i, r)
                for iid, (i, r) in current.items()
                if previous.get(iid, (None,))[0] != i
            ]
            events += [
                ChangeEvent("delete", i, r)
                for iid, (i, r) in previous.items()
                if iid not in current
            ]
            self.state[name] = current
            catalog.saw_service(previous, current)
            if events:
                self.queue.put_nowait(events)


_UNPACED: Final = float("-inf")  # `last` that makes ConsulWatch._paced not wait


def next_index(sent: int, answered: int) -> int:
    """The index of the next blocking query after sending ``sent`` and reading ``answered``.

    Backwards (a restored or replaced server): 0, i.e. one plain read to start over.
    Below 1: 1, never 0 again (a query with index 0 does not block: the loop would spin).
    """
    if answered < 1:
        return 1
    if answered < sent:
        return 0
    return answered
