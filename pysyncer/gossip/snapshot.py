"""The Serf snapshot file: remembers members and Lamport clocks across restarts.

Owns the append-only text format Serf agents write (one record a line, ``#`` for
comments, unknown lines ignored so that files from Serf itself load)::

    alive: <name> <ip:port>
    not-alive: <name>
    clock: <member clock>
    event-clock: <event clock>
    query-clock: <query clock>
    leave

After a restart the node witnesses the saved clocks (so it does not replay or re-handle
old events and queries) and rejoins the members it last knew alive, unless the last
record is a graceful ``leave``. Lines are buffered and flushed every ``flush_interval``;
the file is fsynced on leave and close, and compacted (rewritten to ``<path>.compact``
then renamed over) when it grows past ``max(128 B x 2 x alive members, 128 KiB)``.
Uses the Serf only through its public API; must not import the node or the agent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pysyncer.gossip.serf import EventType, MemberEvent, Serf, SerfEvent
from pysyncer.hostport import format_host_port, parse_host_port

__all__ = ["SerfSnapshot", "SerfSnapshotState", "Snapshotter", "read_snapshot"]

MIN_COMPACT_SIZE = 128 * 1024
BYTES_PER_MEMBER = 128


@dataclass
class SerfSnapshotState:
    """What a snapshot file says about the node's last run."""

    alive: dict[str, str] = field(default_factory=dict)  # name -> "ip:port"
    clock: int = 0
    event_clock: int = 0
    query_clock: int = 0
    left: bool = False  # the last run ended with a graceful leave
    skipped_lines: int = 0


def _parse(state: SerfSnapshotState, line: str) -> None:
    if line.startswith("alive: "):
        name, _, address = line[len("alive: ") :].rpartition(" ")
        if not name or not address:
            raise ValueError(line)
        state.alive[name] = address
        state.left = False
    elif line.startswith("not-alive: "):
        state.alive.pop(line[len("not-alive: ") :], None)
        state.left = False
    elif line.startswith("clock: "):
        state.clock = int(line[len("clock: ") :])
    elif line.startswith("event-clock: "):
        state.event_clock = int(line[len("event-clock: ") :])
    elif line.startswith("query-clock: "):
        state.query_clock = int(line[len("query-clock: ") :])
    elif line == "leave":
        state.alive.clear()  # Serf forgets the members on leave
        state.left = True
    elif line.startswith(("#", "coordinate: ")) or not line:
        pass
    else:
        raise ValueError(line)


def read_snapshot(path: str | Path) -> SerfSnapshotState:
    """The state a snapshot file describes; a missing file is an empty state."""
    state = SerfSnapshotState()
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return state
    with handle:
        for raw in handle:
            try:
                _parse(state, raw.rstrip("\n"))
            except ValueError:
                state.skipped_lines += 1
    return state


class Snapshotter:
    """Appends member changes and clock values to the snapshot file."""

    def __init__(
        self,
        path: str | Path,
        clocks: Callable[[], tuple[int, int, int]],
        *,
        min_compact_size: int = MIN_COMPACT_SIZE,
    ) -> None:
        self.path = Path(path)
        self._clocks = clocks
        self._min_compact_size = min_compact_size
        self.state = read_snapshot(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = self.path.stat().st_size
        self._last_clocks = (self.state.clock, self.state.event_clock, self.state.query_clock)
        self.compactions = 0

    # -- records -------------------------------------------------------------------

    def alive(self, name: str, address: str) -> None:
        if self.state.alive.get(name) != address or self.state.left:
            self.state.alive[name] = address
            self.state.left = False
            self._append(f"alive: {name} {address}")

    def not_alive(self, name: str) -> None:
        if name in self.state.alive:
            del self.state.alive[name]
            self._append(f"not-alive: {name}")

    def leave(self) -> None:
        """Record a graceful leave and make it durable."""
        self.update_clocks()
        self.state.alive.clear()
        self.state.left = True
        self._append("leave")
        self.sync()

    def update_clocks(self) -> None:
        """Record clocks that moved since the last call (run it every flush interval)."""
        clock, event_clock, query_clock = self._clocks()
        last_clock, last_event, last_query = self._last_clocks
        if clock > last_clock:
            self._append(f"clock: {clock}")
        if event_clock > last_event:
            self._append(f"event-clock: {event_clock}")
        if query_clock > last_query:
            self._append(f"query-clock: {query_clock}")
        self._last_clocks = (
            max(clock, last_clock),
            max(event_clock, last_event),
            max(query_clock, last_query),
        )
        self.state.clock, self.state.event_clock, self.state.query_clock = self._last_clocks

    # -- durability -------------------------------------------------------------

    def flush(self) -> None:
        """Hand buffered records to the OS; compact when the file has grown too large."""
        self._file.flush()
        limit = max(self._min_compact_size, BYTES_PER_MEMBER * 2 * len(self.state.alive))
        if self._size > limit:
            self.compact()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # already closed
            self.update_clocks()
            self.sync()
            self._file.close()

    def compact(self) -> None:
        """Rewrite the file with only the current state, atomically."""
        lines = ["# pysyncer snapshot, compacted"]
        lines += [f"alive: {name} {address}" for name, address in sorted(self.state.alive.items())]
        lines += [
            f"clock: {self.state.clock}",
            f"event-clock: {self.state.event_clock}",
            f"query-clock: {self.state.query_clock}",
        ]
        if self.state.left:
            lines.append("leave")
        text = "\n".join(lines) + "\n"
        temporary = self.path.with_name(self.path.name + ".compact")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self._file.close()
        os.replace(temporary, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = len(text.encode())
        self.compactions += 1

    def _append(self, line: str) -> None:
        data = line + "\n"
        self._file.write(data)
        self._size += len(data.encode())


class SerfSnapshot:
    """Keeps a :class:`Snapshotter` in step with a running Serf layer.

    Member joins write ``alive`` records, leaves, failures and reaps ``not-alive``;
    a timer on the node's clock records moved clocks and flushes every
    ``flush_interval``. :meth:`restore` applies the previous run's state before the
    node joins: clocks witnessed, old events and queries ignored, last members returned
    for rejoining.
    """

    FLUSH_KEY = ("serf-snapshot-flush",)

    def __init__(
        self, snapshotter: Snapshotter, serf: Serf, *, flush_interval: float = 0.5
    ) -> None:
        self.snapshotter = snapshotter
        self.serf = serf
        self.flush_interval = flush_interval
        self._unsubscribe: Callable[[], None] | None = None

    def restore(self, rejoin_after_leave: bool = False) -> list[tuple[str, int]]:
        """Witness the saved clocks; the addresses to rejoin (none after a leave)."""
        state = self.snapshotter.state
        self.serf.restore_clocks(state.clock, state.event_clock, state.query_clock)
        if state.left and not rejoin_after_leave:
            return []
        addresses = []
        for name, address in sorted(state.alive.items()):
            if name == self.serf.name:
                continue
            with contextlib.suppress(ValueError):
                host, port = parse_host_port(address)
                addresses.append((host, port))
        return addresses

    def start(self) -> None:
        self._unsubscribe = self.serf.subscribe(self._observe)
        self.serf.clock.call_later(self.FLUSH_KEY, self.flush_interval, self._tick)

    def _observe(self, event: SerfEvent) -> None:
        if not isinstance(event, MemberEvent):
            return
        member = event.member
        if event.type in (EventType.MEMBER_JOIN, EventType.MEMBER_UPDATE):
            self.snapshotter.alive(member.name, format_host_port(member.addr, member.port))
        else:
            self.snapshotter.not_alive(member.name)

    def _tick(self, _: Hashable) -> None:
        self.snapshotter.update_clocks()
        self.snapshotter.flush()
        self.serf.clock.call_later(self.FLUSH_KEY, self.flush_interval, self._tick)

    def leave(self) -> None:
        self.snapshotter.leave()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.serf.clock.cancel(self.FLUSH_KEY)
        self.snapshotter.close()
