"""The piggyback queue: broadcasts waiting to ride on outgoing gossip packets.

Mirrors memberlist's TransmitLimitedQueue. Each queued message is sent a limited number
of times (``retransmit_mult * ceil(log10(n + 1))`` for ``n`` members); every call to
:meth:`TransmitLimitedQueue.get_broadcasts` for one packet counts as one transmit of the
messages it returns. Messages that have been sent the fewest times go first; inside one
tier, the largest message that still fits the packet is taken, so small messages fill
the gaps. A new message about a name (for example the member ``node-3``) replaces the
queued one about the same name, so stale alive/suspect/dead news never goes out.

The queue is plain data: no clock, no I/O. It owns ordering and invalidation only.
Must not import the node or the Serf layer.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from pysyncer.gossip.timing import retransmit_limit

__all__ = ["Broadcast", "TransmitLimitedQueue"]


@dataclass(eq=False, slots=True)
class Broadcast:
    """One message to piggyback.

    ``name`` makes the broadcast replace any queued one with the same name (memberlist's
    NamedBroadcast); ``None`` means it never invalidates others. ``on_finished`` is
    called once when the message has been sent its last time or was dropped.
    """

    message: bytes
    name: str | None = None
    on_finished: Callable[[], None] | None = field(default=None, repr=False)

    def finish(self) -> None:
        callback, self.on_finished = self.on_finished, None
        if callback is not None:
            callback()


# A queued item's sort key: (transmits ascending, length descending, id descending).
_Key = tuple[int, int, int]


def _key(transmits: int, length: int, ident: int) -> _Key:
    return (transmits, -length, -ident)


class TransmitLimitedQueue:
    """Broadcasts ordered by (fewest transmits, largest, newest), sent a bounded count."""

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        if retransmit_mult < 1:
            raise ValueError(f"retransmit_mult must be >= 1, not {retransmit_mult}")
        self._retransmit_mult = retransmit_mult
        self._num_nodes = num_nodes
        self._keys: list[_Key] = []  # sorted
        self._items: dict[_Key, Broadcast] = {}
        self._by_name: dict[str, _Key] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._keys)

    def transmit_limit(self) -> int:
        return retransmit_limit(self._retransmit_mult, self._num_nodes())

    def queue(self, broadcast: Broadcast) -> None:
        """Add a broadcast; a queued one with the same name is dropped and finished."""
        if broadcast.name is not None:
            old = self._by_name.get(broadcast.name)
            if old is not None:
                self._remove(old).finish()
        self._next_id += 1
        self._insert(_key(0, len(broadcast.message), self._next_id), broadcast)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Messages for one packet with ``limit`` free bytes, each costing ``overhead`` more.

        Each returned message counts one transmit; messages that reached the transmit
        limit leave the queue and are finished.
        """
        if not self._keys:
            return []
        transmit_limit = self.transmit_limit()
        used = 0
        chosen: list[bytes] = []
        reinsert: list[tuple[_Key, Broadcast]] = []
        transmits = self._keys[0][0]
        max_transmits = self._keys[-1][0]
        while transmits <= max_transmits:
            free = limit - used - overhead
            if free <= 0:
                break
            # The first key at or after (transmits, -free) is the largest message of this
            # tier that fits, if it is still in this tier.
            index = bisect.bisect_left(self._keys, (transmits, -free, -(1 << 62)))
            if index == len(self._keys) or self._keys[index][0] != transmits:
                transmits += 1
                continue
            key = self._keys[index]
            broadcast = self._remove(key)
            used += overhead + len(broadcast.message)
            chosen.append(broadcast.message)
            if transmits + 1 >= transmit_limit:
                broadcast.finish()
            else:
                reinsert.append(((transmits + 1, key[1], key[2]), broadcast))
        for key, broadcast in reinsert:
            self._insert(key, broadcast)
        return chosen

    def prune(self, max_retain: int) -> int:
        """Drop the most-sent, smallest, oldest broadcasts beyond ``max_retain``; count them."""
        dropped = 0
        while len(self._keys) > max(0, max_retain):
            self._remove(self._keys[-1]).finish()
            dropped += 1
        return dropped

    def reset(self) -> None:
        """Finish and drop everything."""
        self.prune(0)

    def _insert(self, key: _Key, broadcast: Broadcast) -> None:
        bisect.insort(self._keys, key)
        self._items[key] = broadcast
        if broadcast.name is not None:
            self._by_name[broadcast.name] = key

    def _remove(self, key: _Key) -> Broadcast:
        del self._keys[bisect.bisect_left(self._keys, key)]
        broadcast = self._items.pop(key)
        if broadcast.name is not None and self._by_name.get(broadcast.name) == key:
            del self._by_name[broadcast.name]
        return broadcast
