"""Generated blocks in the docs: tables rendered from code, between two marker lines; and
generated whole files (:data:`FILES`: the example config file under ``deploy/``).

A page carries ``<!-- generated: NAME (python -m tests.support.docblocks) -->``, the
rendered text, and ``<!-- end generated: NAME -->``. :data:`BLOCKS` says which page holds
which block and which function renders it; the doc tests compare the two, and running
this module rewrites every block from the code (``python -m tests.support.docblocks``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pysyncer import cli, configdoc
from pysyncer.admin import app
from tests.support import layers

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMMAND = "python -m tests.support.docblocks"

# block name -> (page, renderer)
BLOCKS: dict[str, tuple[Path, Callable[[], str]]] = {
    "admin-routes": (DOCS / "admin.md", app.render_markdown),
    "settings": (DOCS / "configuration.md", configdoc.render_markdown),
    "layers": (DOCS / "architecture.md", lambda: layers.render_markdown(DOCS.parent / "pysyncer")),
    "cli": (DOCS / "cli.md", cli.render_reference),
}


ROOT = DOCS.parent
# generated whole files: path -> renderer
FILES: dict[Path, Callable[[], str]] = {
    ROOT / "deploy" / "pysyncer.example.toml": configdoc.render_toml,
}


class DocBlockError(ValueError):
    """A page lacks a block's markers, or has them more than once or out of order."""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} ({COMMAND}) -->", f"<!-- end generated: {name} -->"


def _span(text: str, name: str, page: Path) -> tuple[int, int]:
    begin, end = _markers(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise DocBlockError(f"{page}: needs exactly one {begin!r} and one {end!r}")
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise DocBlockError(f"{page}: the end marker of {name!r} comes before its start")
    return start, stop


def read_block(name: str) -> str:
    """The text a page holds between the markers of block ``name`` (without the newlines
    around it)."""
    page, _ = BLOCKS[name]
    text = page.read_text()
    start, stop = _span(text, name, page)
    return text[start:stop].strip("\n")


def write_block(name: str) -> bool:
    """Render block ``name`` into its page; True when the page changed."""
    page, render = BLOCKS[name]
    text = page.read_text()
    start, stop = _span(text, name, page)
    updated = text[:start] + "\n" + render() + "\n" + text[stop:]
    if updated == text:
        return False
    page.write_text(updated)
    return True


def main() -> int:
    for name in BLOCKS:
        if write_block(name):
            print(f"rewrote {name} in {BLOCKS[name][0]}")
    for path, render in FILES.items():
        text = render()
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
