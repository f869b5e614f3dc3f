"""docs/configuration.md shows exactly the settings table rendered from ``SETTINGS``, and
no other page keeps a hand-written copy of it."""

from __future__ import annotations

from pysyncer.config import SETTINGS
from pysyncer.configdoc import render_markdown
from tests.support.docblocks import BLOCKS, COMMAND, DOCS, read_block


def test_doc_carries_exactly_the_settings_table() -> None:
    assert read_block("settings") == render_markdown(), f"docs/configuration.md: run {COMMAND}"


def test_every_setting_has_a_row_with_its_flag_env_and_aliases() -> None:
    rows = render_markdown().splitlines()[2:]
    assert len(rows) == len(SETTINGS)
    for row, setting in zip(rows, SETTINGS, strict=True):
        assert row.startswith(f"| `{setting.key}`")
        assert f"`{setting.flag} {setting.metavar}`" in row and f"`{setting.env}`" in row
        assert all(f"`--{alias}`" in row for alias in setting.aliases)


def test_no_other_page_has_a_hand_written_settings_table() -> None:
    """A flag table row (``| `--flag ...` | default | meaning |``) outside the generated
    block would drift: the other pages link to the configuration page instead."""
    generated = BLOCKS["settings"][0]
    for page in sorted(DOCS.glob("*.md")):
        if page == generated:
            continue
        for line in page.read_text().splitlines():
            if not line.startswith("|"):
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            assert not any(cells[0].startswith(f"`{setting.flag}") for setting in SETTINGS), (
                f"{page.name}: {line!r} repeats a setting of docs/configuration.md"
            )
