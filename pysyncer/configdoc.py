"""The settings table of ``docs/configuration.md`` and the example config file
``deploy/pysyncer.example.toml``, both rendered from :data:`config.SETTINGS`.

Owns only their shapes: the Markdown table has one row per setting with its config-file
key, flag, environment variable, default and meaning, aliases beside the names they stand
for; the example file has one commented-out ``key = default`` line per setting, its meaning
above it. Every fact in them comes from :class:`~pysyncer.config.Setting`, so neither can
drift from the command line (``tests/daemon/test_settings_doc.py`` and
``tests/daemon/test_readiness.py`` check them). Imports only the configuration; nothing
imports this module but the docs tooling.

Imports: config.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Callable
from typing import Any

from pysyncer.config import SETTINGS, Setting

__all__ = ["render_markdown", "render_toml"]


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple | list):
        return ", ".join(f"`{item}`" for item in value) if value else "none"
    if value == "":
        return '`""`'
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _with_aliases(setting: Setting, shown: str, name: Callable[[Setting], str]) -> str:
    """``shown`` for the setting, then ``name`` of each alias (the setting under its key)."""
    aliases = [f"`{name(dataclasses.replace(setting, key=alias))}`" for alias in setting.aliases]
    return f"`{shown}`" + (f" (alias {', '.join(aliases)})" if aliases else "")


def render_markdown() -> str:
    """:data:`~pysyncer.config.SETTINGS` as the Markdown table the configuration page shows."""
    lines = [
        "| config-file key | flag | env var | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        cells = (
            _with_aliases(setting, setting.key, lambda s: s.key),
            _with_aliases(setting, f"{setting.flag} {setting.metavar}", lambda s: s.flag),
            _with_aliases(setting, setting.env, lambda s: s.env),
            _default(setting.default),
            setting.meaning,
        )
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _toml_value(setting: Setting) -> str:
    """The default as TOML, or a placeholder (``"NAME"``) when the setting has none."""
    value = setting.default
    if value is None:
        return json.dumps(setting.metavar)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(json.dumps(str(item)) for item in value) + "]"
    return json.dumps(str(value))


def render_toml() -> str:
    """:data:`~pysyncer.config.SETTINGS` as a commented example config file (every line
    commented out: uncommenting one sets it; unset ones show a placeholder)."""
    lines = [
        "# pysyncer daemon configuration (--config FILE or PYSYNCER_CONFIG).",
        "# Generated from pysyncer.config.SETTINGS: python -m tests.support.docblocks",
        "# Precedence: defaults < this file < PYSYNCER_* environment < flags.",
        "# Check it without starting anything: pysyncer validate --config FILE",
    ]
    for setting in SETTINGS:
        lines.append("")
        unset = setting.default is None and "default" not in setting.help
        meaning = setting.meaning + (" (unset by default)" if unset else "")
        lines += textwrap.wrap(meaning, 88, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"# {setting.key} = {_toml_value(setting)}")
    lines += [
        "",
        "# The registry adapter's own settings (docs/adapters.md), for example:",
        "# [adapter]",
        "# timeout = 10",
        "",
        "# Filter rules (docs/filters.md), for example:",
        "# [[export.exclude]]",
        '# metadata = "internal=true"',
    ]
    return "\n".join(lines) + "\n"
