"""The console script: version, help listing the contract's commands, honest refusals."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from pysyncer import __version__, _core
from pysyncer._core import slots
from pysyncer.cli import main

CONTRACT_COMMANDS = [
    "daemon",
    "registry",
    "members",
    "status",
    "event",
    "query",
    "keygen",
    "keys",
    "demo",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysyncer", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"pysyncer {__version__} (core: {_core.IMPLEMENTATION})"


def test_help_lists_every_contract_command() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for command in CONTRACT_COMMANDS:
        assert f"\n    {command} " in out.stdout, command


def test_keygen_prints_a_32_byte_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(base64.b64decode(first, validate=True)) == 32
    assert first != second


def test_slot_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slot", "foo", "{user1000}.following"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "12182\tfoo",
        f"{slots.key_slot('user1000')}\t{{user1000}}.following",
    ]


def test_unknown_flag_on_a_delivered_command_is_an_error() -> None:
    out = run_cli("keygen", "--bogus")
    assert out.returncode == 2
    assert "unrecognized arguments: --bogus" in out.stderr


def test_daemon_help_names_registry_flags_and_their_aliases() -> None:
    out = run_cli("daemon", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for flag in ("--registry-url", "--registry-kind", "--sc-addr", "--plugin"):
        assert flag in text, flag
    assert "alias of --registry-url" in text and "alias of --registry-kind" in text


def test_daemon_refuses_an_alias_that_disagrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["daemon", "--registry-kind", "consul", "--plugin", "nacos"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pysyncer daemon: config key 'registry-kind'") and "\n" not in err
