"""The etcd store's prefix watch: other members' writes into the mirror, and wake-ups.

Owns :class:`PrefixWatch`, the background task that follows every change under the
store's prefix from the revision the :class:`~pysyncer.store.etcd_mirror.Mirror` is
current to, applies each one the mirror has not seen newer, tracks the log counter that
appends compare against, and wakes the coordination watchers when a member key or the
slot table changes (or the watch reconnects). When etcd compacted the history the
watch needs, it asks for a reload and stops. It reconnects with backoff; while it is
disconnected the store reports itself degraded. Must not import the store facade, the
write queue or the coordinator: it reaches them through the callables it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from pysyncer.etcdchannels import prefix_range_end
from pysyncer.store.base import StoreError
from pysyncer.store.etcd_client import MAX_BACKOFF, EtcdClient
from pysyncer.store.etcd_layout import decode_counter
from pysyncer.store.etcd_mirror import Mirror
from pysyncer.supervisor import Supervised, spawn

__all__ = ["PrefixWatch"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.2


class PrefixWatch:
    """Keeps ``mirror`` current with the prefix (see the module doc).

    ``notify()`` wakes the coordination watchers; ``request_reload()`` has the mirror
    reloaded (history compacted); ``note_error(text)`` records the last error. ``ok``
    says whether the watch is connected (set by the store after a load, too).
    """

    def __init__(
        self,
        client: EtcdClient,
        mirror: Mirror,
        *,
        notify: Callable[[], None],
        request_reload: Callable[[], None],
        note_error: Callable[[str], None],
    ) -> None:
        self.client = client
        self._mirror = mirror
        self._layout = mirror.layout
        self._notify = notify
        self._request_reload = request_reload
        self._note_error = note_error
        self.ok = False
        self._task: Supervised | None = None

    def start(self) -> None:
        # supervised: an error other than StoreError is logged, counted and restarted
        self._task = spawn("etcd-store-watch", self._loop)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await task.stop()

    async def _loop(self) -> None:
        layout = self._layout
        mirror = self._mirror
        delay = _FIRST_BACKOFF
        while True:
            try:
                async for batch in self.client.watch(
                    layout.prefix, prefix_range_end(layout.prefix), mirror.revision + 1
                ):
                    if batch.compacted:
                        log.warning(
                            "etcd store %s: history compacted past the mirror; reloading",
                            layout.prefix_text,
                        )
                        self._request_reload()
                        return
                    if not self.ok:
                        self.ok = True
                        self._notify()
                    self._on_events(batch.events)
                    last = max((rev for _, _, rev in batch.events), default=batch.revision)
                    mirror.revision = max(mirror.revision, last)
                    mirror.purge_tombs(mirror.revision)
                    delay = _FIRST_BACKOFF
            except StoreError as exc:
                if self.ok:
                    log.warning("etcd store %s: watch lost: %s", layout.prefix_text, exc)
                self.ok = False
                self._note_error(str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _on_events(self, events: Sequence[tuple[bytes, bytes | None, int]]) -> None:
        mirror = self._mirror
        layout = self._layout
        changed = False
        for key, value, revision in events:
            if key == layout.counter and value is not None and revision > mirror.counter_mod:
                mirror.counter_last = decode_counter(value)[0]
                mirror.counter_mod = revision
            if key.startswith(layout.member_prefix) or key in (
                layout.slot_table,
                layout.slot_epoch,
            ):
                changed = True
            if mirror.is_stale(key, revision):
                continue
            try:
                mirror.put(key, value, revision)
            except (StoreError, ValueError) as exc:
                self._note_error(str(exc))
                log.error("etcd store %s: ignoring key %r: %s", layout.prefix_text, key, exc)
        if changed:
            self._notify()
