"""The operator's command line: ``--format json`` on every command, the Serf/Consul-style
pool commands against real daemons, completion and ``docs/cli.md`` generated from the parser.

Two ``pysyncer daemon`` subprocesses form a pool; every leaf command of the parser runs
with ``--format json`` (the table below must name each one, so a new command cannot be
forgotten) and must print exactly one JSON document (NDJSON for ``monitor``).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.admin.payloads import Member
from pysyncer.cli import build_parser, main, render_reference
from pysyncer.clidoc import completion_script, leaves
from pysyncer.cliops import _text_line, filter_members, parse_tag_filters
from tests.daemon import test_daemon as daemons
from tests.support.docblocks import read_block
from tests.support.gossip import free_port

KEY = base64.b64encode(bytes(range(32))).decode()

# -- generated from the parser ---------------------------------------------------------


def test_docs_cli_is_the_parser_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSYNCER_ADMIN_ADDR", raising=False)
    assert read_block("cli") == render_reference(), "run: python -m tests.support.docblocks"


def test_every_leaf_command_is_in_the_reference_and_completion() -> None:
    parser = build_parser()
    reference = render_reference()
    script = completion_script(parser, "bash")
    for command in leaves(parser):
        name = " ".join(command.path)
        assert f"`pysyncer {name}`" in reference, name
        assert f'"{name}"' in script, name
        assert "--format" in command.options, name


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["tls", "ce"], {"cert"}),
        (["mem"], {"members"}),
        (["members", "--d"], {"--detailed", "--dc"}),
        (["tls", "cert", "create", "--d"], {"--dc", "--days"}),
        (["force-leave", "--p"], {"--prune"}),
    ],
)
def test_bash_completion(tmp_path: Path, words: list[str], expected: set[str]) -> None:
    script = tmp_path / "pysyncer.bash"
    script.write_text(completion_script(build_parser(), "bash"))
    line = " ".join(words)
    probe = (
        f"source {script}; COMP_WORDS=(pysyncer {line}); COMP_CWORD={len(words)}; "
        '_pysyncer_complete; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert set(out.stdout.split()) == expected, out.stderr


def test_zsh_completion_uses_bashcompinit() -> None:
    script = completion_script(build_parser(), "zsh")
    assert script.startswith("#compdef pysyncer\n") and "bashcompinit" in script


# -- members filters and monitor lines -------------------------------------------------


def _member(name: str, status: str, **tags: str) -> Member:
    return {"name": name, "addr": "127.0.0.1", "port": 1, "status": status, "tags": tags}  # type: ignore[typeddict-item]


def test_member_filters() -> None:
    pool = [
        _member("a", "alive", dc="east", role="pysyncer"),
        _member("b", "failed", dc="west", role="pysyncer"),
        _member("c", "alive", dc="west", role="serf"),
    ]

    def names(found: list[Member]) -> list[str]:
        return [m["name"] for m in found]

    assert names(filter_members(pool, status="alive")) == ["a", "c"]
    assert names(filter_members(pool, dc="west")) == ["b", "c"]
    assert names(filter_members(pool, tags=parse_tag_filters(["role=pys.*"]))) == ["a", "b"]
    assert names(filter_members(pool, tags=parse_tag_filters(["role=pys"]))) == []  # in full
    both = parse_tag_filters(["role=serf", "dc=west"])
    assert names(filter_members(pool, status="alive", tags=both)) == ["c"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_tag_filters(["role"])
    with pytest.raises(ValueError, match="--tag"):
        parse_tag_filters(["role=("])


def test_monitor_text_line() -> None:
    entry = {"time": "T", "level": "warning", "logger": "x", "message": "m", "dc": "east"}
    assert _text_line(entry) == "T [WARNING] x: m"
    assert "3 line(s) dropped" in _text_line({"dropped": 3})


# -- every command with --format json, against a real pool -----------------------------


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 0) -> Any:
    """Run one command in process; its stdout must be exactly one JSON document."""
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == status, (argv, out.err)
    return json.loads(out.out)


class LineReader:
    """The stdout lines of a subprocess, read on a thread (never blocks the test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, wanted: Callable[[str], bool], timeout: float) -> list[str]:
        seen = []
        while True:
            line = self.lines.get(timeout=timeout)
            seen.append(line)
            if wanted(line):
                return seen


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[daemons.Daemon, daemons.Daemon]]:
    common = ("--encrypt", KEY, "--gossip-profile", "local")
    first = daemons.Daemon("py-a", "127.0.0.1", tmp_path, *common, "--format", "json")
    second = daemons.Daemon("py-b", "127.0.0.1", tmp_path, *common, "--join", first.bind)
    try:
        daemons.wait_until(
            lambda: first.members() == {"py-a": "alive", "py-b": "alive"}, 60, "joined", first
        )
        yield first, second
    finally:
        second.stop(signal.SIGKILL)
        first.stop()


def json_commands(admin: str, tmp_path: Path) -> dict[tuple[str, ...], tuple[list[str], int]]:
    """Every leaf command run in process: its arguments and exit status (``monitor``,
    ``leave``, ``force-leave``, ``daemon`` and ``registry`` run apart, in order)."""
    a = ["--admin-addr", admin]
    data = str(tmp_path / "validate")
    return {
        ("members",): (["members", "--dc", "dc-py-a", *a], 0),
        ("info",): (["info", *a], 0),
        ("rtt",): (["rtt", "py-b", *a], 0),
        ("status",): (["status", *a], 0),
        ("diff",): (["diff", *a], 0),
        ("filters",): (["filters", "--dry-run", *a], 0),
        ("event",): (["event", "deploy", "v1", *a], 0),
        ("query",): (["query", "ping", "--timeout-ms", "1500", *a], 0),
        ("keys",): (["keys", "--list", *a], 0),
        ("reachability",): (["reachability", "--timeout-ms", "3000", *a], 0),
        ("keygen",): (["keygen"], 0),
        ("slot",): (["slot", "foo"], 0),
        ("validate",): (["validate", "--node", "v", "--dc", "v", "--data-dir", data], 0),
        ("tls", "ca", "create"): (["tls", "ca", "create", "--dir", str(tmp_path / "ca")], 0),
        ("tls", "cert", "create"): (
            [
                "tls",
                "cert",
                "create",
                "--dc",
                "east",
                "--node",
                "n1",
                "--ca-dir",
                str(tmp_path / "ca"),
                "--out-dir",
                str(tmp_path / "certs"),
            ],
            0,
        ),
        ("completion",): (["completion", "bash"], 0),
        ("demo",): (["demo", "--dcs", "99"], 1),  # refused sizes: the outcome, still JSON
    }


APART = {("monitor",), ("leave",), ("force-leave",), ("daemon",), ("registry",)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_command_with_format_json(
    pool: tuple[daemons.Daemon, daemons.Daemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = pool
    commands = json_commands(first.admin, tmp_path)
    assert set(commands) | APART == {c.path for c in leaves(build_parser())}
    daemons.wait_until(
        lambda: "py-b" in first.get("/v1/coordinates")["coordinates"], 30, "rtt", first
    )
    answers = {}
    for path, (argv, status) in commands.items():
        answers[path] = run_json(capsys, *argv, "--format", "json", status=status)
    assert [m["name"] for m in answers[("members",)]] == ["py-a"]
    assert answers[("info",)]["gossip"]["alive"] == 2
    assert answers[("info",)]["agent"]["node"] == "py-a"
    assert answers[("reachability",)]["missing"] == []
    assert set(answers[("reachability",)]["acks"]) == {"py-a", "py-b"}
    assert answers[("demo",)] == {"ok": False, "exit_status": 1}

    # --json is still an alias, and it no longer ignores --status
    alive = run_json(capsys, "members", "--json", "--status", "alive", "--admin-addr", first.admin)
    assert {m["name"] for m in alive} == {"py-a", "py-b"}

    # a member killed: reachability names it, force-leave marks it left
    second.stop(signal.SIGKILL)
    daemons.wait_until(lambda: first.members().get("py-b") == "failed", 60, "py-b failed", first)
    failed = run_json(capsys, "members", "--status", "failed", "--format", "json",
                      "--admin-addr", first.admin)  # fmt: skip
    assert [m["name"] for m in failed] == ["py-b"]

    monitor = subprocess.Popen(
        [sys.executable, "-m", "pysyncer", "monitor", "--format", "json", "--admin-addr",
         first.admin],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reader = LineReader(monitor)
    try:
        forced: dict[str, Any] = {}

        def force_leave_seen() -> bool:  # until the monitor is connected and shows it
            forced.update(run_json(capsys, "force-leave", "py-b", "--format", "json",
                                   "--admin-addr", first.admin))  # fmt: skip
            try:
                reader.until(lambda line: "force-leave of py-b" in line, timeout=1.0)
            except queue.Empty:
                return False
            return True

        daemons.wait_until(force_leave_seen, 60, "the monitor shows the force-leave", first)
        assert forced == {"node": "py-b", "prune": False}
        daemons.wait_until(lambda: first.members().get("py-b") == "left", 30, "py-b left", first)

        left = run_json(capsys, "leave", "--format", "json", "--admin-addr", first.admin)
        assert left == {"leaving": True, "node": "py-a"}
        shown = reader.until(lambda line: "leave requested" in line, timeout=30)
        assert all(isinstance(json.loads(line), dict) for line in shown)  # NDJSON
        assert monitor.wait(timeout=60) == 0  # the stream ends when the daemon stops
        assert first.process.wait(timeout=60) == 0  # stopped as on SIGTERM
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(timeout=10)
        assert monitor.stderr is not None
        monitor.stderr.close()
        assert monitor.stdout is not None
        monitor.stdout.close()
    # the daemon ran with --format json: its log lines are JSON objects
    log_lines = [line for line in first.log().splitlines() if line.strip()]
    assert log_lines and all(json.loads(line)["level"] for line in log_lines)
    assert any(json.loads(line)["message"] == "stopped" for line in log_lines)


@pytest.mark.timeout(120)
def test_registry_logs_as_json_with_format_json(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pysyncer", "registry", "--listen", listen, "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first_line = process.stderr.readline()
        entry = json.loads(first_line)
        assert {"time", "level", "logger", "message"} <= set(entry)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_force_leave_of_an_unknown_member_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without a daemon: the error is one line naming the admin address, exit 1."""
    code = main(["force-leave", "nobody", "--admin-addr", f"127.0.0.1:{free_port('127.0.0.1')}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and re.search(r"cannot reach", err)
