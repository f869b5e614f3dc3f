"""The settings table of ``docs/configuration.md``, rendered from :data:`config.SETTINGS`.

Owns only the Markdown shape of that table: one row per setting with its config-file key,
flag, environment variable, default and meaning, aliases beside the names they stand
for. Every fact in it comes from :class:`~pysyncer.config.Setting`, so the page cannot
drift from the command line (``tests/daemon/test_settings_doc.py`` checks it). Imports
only the configuration; nothing imports this module but the docs tooling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pysyncer.config import SETTINGS, Setting

__all__ = ["render_markdown"]


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
            setting.help,
        )
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)
