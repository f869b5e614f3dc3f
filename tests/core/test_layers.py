"""Each part of pysyncer imports only the parts its docstring names (the layer rules).

Every package (``pysyncer/<name>/__init__.py``) and every top-level module states, in its
docstring, one line ``Imports: a, b, c.`` naming the other parts of pysyncer it may
import at run time (``-`` for none). The docstring is the one place the rule is written;
this test reads it and checks every module's imports against it, leaving out imports
under ``if TYPE_CHECKING:``. docs/architecture.md shows the same rules as a table,
generated from the docstrings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import layers

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pysyncer"


def _parts() -> list[str]:
    return sorted(layers.rules(PACKAGE))


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("pysyncer.")}


def test_every_part_states_its_imports() -> None:
    missing = [part for part, allowed in layers.rules(PACKAGE).items() if allowed is None]
    assert not missing, f"no 'Imports:' line in the docstring of {missing}"


@pytest.mark.parametrize("part", _parts())
def test_part_imports_only_what_its_docstring_allows(part: str) -> None:
    rules = layers.rules(PACKAGE)
    allowed = rules[part] or frozenset()
    known = set(rules)
    bad: list[str] = []
    for path in layers.files_of(PACKAGE, part):
        for name in sorted(_runtime_imports(path)):
            target = layers.part_of(name, known)
            if target is None or target == part or target in allowed:
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name} ({target} not in Imports:)")
    assert not bad, "\n".join(bad)


def test_allowed_parts_exist() -> None:
    rules = layers.rules(PACKAGE)
    for part, allowed in rules.items():
        unknown = sorted((allowed or frozenset()) - set(rules))
        assert not unknown, f"{part}: Imports: names unknown parts {unknown}"


def test_architecture_doc_shows_the_rules() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = layers.render_markdown(PACKAGE)
    assert table in doc, "docs/architecture.md: regenerate with python -m tests.support.docblocks"
    assert re.search(r"\| part \| may import", doc)
