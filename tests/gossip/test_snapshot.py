"""The snapshot file: Serf's format, replay on restart, leave, compaction."""

from __future__ import annotations

from pathlib import Path

from pysyncer.gossip.snapshot import Snapshotter, read_snapshot


def test_missing_file_is_empty(tmp_path: Path) -> None:
    state = read_snapshot(tmp_path / "none")
    assert state.alive == {} and state.clock == 0 and not state.left


def test_reads_a_serf_written_file(tmp_path: Path) -> None:
    path = tmp_path / "serf.snapshot"
    path.write_text(
        "alive: a 127.0.0.1:7946\n"
        "alive: b 127.0.0.2:7946\n"
        "clock: 7\n"
        "event-clock: 12\n"
        "query-clock: 3\n"
        "coordinate: {ignored}\n"
        "not-alive: a\n"
        "# a comment\n"
        "garbage line\n"
        "clock: 9\n"
    )
    state = read_snapshot(path)
    assert state.alive == {"b": "127.0.0.2:7946"}
    assert (state.clock, state.event_clock, state.query_clock) == (9, 12, 3)
    assert state.skipped_lines == 1
    assert not state.left


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    clocks = [(1, 0, 0)]
    writer = Snapshotter(path, lambda: clocks[-1])
    writer.alive("n1", "10.0.0.1:30190")
    writer.alive("n2", "10.0.0.2:30190")
    writer.not_alive("n1")
    clocks.append((5, 9, 2))
    writer.update_clocks()
    writer.close()
    again = Snapshotter(path, lambda: (0, 0, 0))
    assert again.state.alive == {"n2": "10.0.0.2:30190"}
    assert (again.state.clock, again.state.event_clock, again.state.query_clock) == (5, 9, 2)
    again.close()


def test_leave_means_no_rejoin(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    writer = Snapshotter(path, lambda: (3, 0, 0))
    writer.alive("n1", "10.0.0.1:30190")
    writer.leave()
    writer.close()
    state = read_snapshot(path)
    assert state.left and state.alive == {} and state.clock == 3
    # A member seen after the leave (a restart that rejoined) clears the flag.
    writer = Snapshotter(path, lambda: (3, 0, 0))
    writer.alive("n1", "10.0.0.1:30190")
    writer.close()
    assert not read_snapshot(path).left


def test_compaction_keeps_the_state_and_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    writer = Snapshotter(path, lambda: (1, 1, 1), min_compact_size=2048)
    for round_ in range(100):
        writer.alive("flappy", f"10.0.0.{round_ % 250}:30190")
        writer.not_alive("flappy")
    writer.alive("steady", "10.0.0.9:30190")
    writer.update_clocks()
    writer.flush()
    assert writer.compactions == 1
    assert path.stat().st_size < 2048
    writer.alive("late", "10.0.0.10:30190")
    writer.close()
    state = read_snapshot(path)
    assert state.alive == {"steady": "10.0.0.9:30190", "late": "10.0.0.10:30190"}
    assert state.clock == 1
    assert not (tmp_path / "snap.compact").exists()
