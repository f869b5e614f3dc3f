"""The layer rules of pysyncer, read from the docstrings that state them.

A *part* of pysyncer is a package (``pysyncer/<name>/``) or a top-level module
(``pysyncer/<name>.py``). Its docstring (the package's ``__init__``) ends with a paragraph
``Imports: a, b, c.`` naming the other parts it may import at run time, or ``Imports: -.``
for none. This module parses those lines, maps an imported name to its part, and renders
the rules as the table of docs/architecture.md. It only reads files: it imports nothing of
pysyncer, so it works on a tree that does not import.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

# "Imports:" up to the end of its paragraph (a long list wraps onto the next lines)
_LINE = re.compile(r"^\s*Imports:\s*(?P<names>.*?)\.?\s*(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
_SKIPPED = {"__init__", "__main__", "_version"}  # the package root and its entry points


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _summary(doc: str) -> str:
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def _part_files(package: Path) -> dict[str, Path]:
    """Each part's name and the file whose docstring states its rule."""
    parts: dict[str, Path] = {}
    for path in sorted(package.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            parts[path.name] = path / "__init__.py"
        elif path.suffix == ".py" and path.stem not in _SKIPPED:
            parts[path.stem] = path
    return parts


def rules(package: Path) -> dict[str, frozenset[str] | None]:
    """Part name -> the parts it may import (``None`` when its docstring has no rule)."""
    found: dict[str, frozenset[str] | None] = {}
    for part, path in _part_files(package).items():
        match = _LINE.search(_docstring(path))
        if match is None:
            found[part] = None
            continue
        names = " ".join(match.group("names").split())
        found[part] = frozenset(
            name.strip().removeprefix("pysyncer.")
            for name in names.split(",")
            if name.strip() and name.strip() != "-"
        )
    return found


def files_of(package: Path, part: str) -> Iterator[Path]:
    """Every Python file of a part."""
    target = package / part
    if target.is_dir():
        yield from sorted(target.rglob("*.py"))
    else:
        yield target.with_suffix(".py")


def part_of(module: str, known: set[str]) -> str | None:
    """The part an imported ``pysyncer.x.y`` belongs to (``None``: the package root)."""
    pieces = module.split(".")
    if len(pieces) < 2 or pieces[0] != "pysyncer":
        return None
    return pieces[1] if pieces[1] in known else None


def render_markdown(package: Path) -> str:
    """The rules as a Markdown table: part, what it owns (first paragraph), may import."""
    lines = ["| part | may import | owns |", "|---|---|---|"]
    files = _part_files(package)
    for part, allowed in sorted(rules(package).items()):
        doc = _docstring(files[part])
        kind = f"`{part}/`" if files[part].name == "__init__.py" else f"`{part}.py`"
        shown = ", ".join(f"`{name}`" for name in sorted(allowed or ())) or "nothing"
        lines.append(f"| {kind} | {shown} | {_summary(doc)} |")
    return "\n".join(lines)
