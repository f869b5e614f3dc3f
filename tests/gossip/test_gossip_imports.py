"""Each gossip module imports at run time only what its docstring allows (one job per module).

The Serf parts (``serf_model``, ``serf_intents``, ``serf_queries``, ``serf_reaper``,
``serf_delegate``) reach the :class:`Serf` that composes them only for type checking;
the probe cycle does not import the node that composes it; the message table and the
membership state machine know nothing of the node or Serf; and nothing in the gossip
package reaches up into the registries, the store, the sync engine or the daemon.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GOSSIP = Path(__file__).resolve().parents[2] / "pysyncer" / "gossip"

_SERF_PARTS = {"serf_model", "serf_intents", "serf_queries", "serf_reaper", "serf_delegate"}
_SERF = {"serf"} | _SERF_PARTS
_ABOVE_NODE = {"node", "probe", "agent", "stack"} | _SERF

_ALL = {path.stem for path in GOSSIP.glob("*.py")}

FORBIDDEN: dict[str, set[str]] = {
    "messages": _ALL - {"messages"},
    "serf_messages": _ALL - {"serf_messages", "messages"},
    "lamport": _ALL - {"lamport"},
    "timing": _ALL - {"timing"},
    "clock": _ALL - {"clock"},
    "keyring": _ALL - {"keyring"},
    "broadcast": _ABOVE_NODE,
    "coalesce": _ABOVE_NODE,
    "transport": _ABOVE_NODE,
    "simulator": _SERF | {"agent", "stack", "transport"},
    "keymanager": {"node", "probe", "agent", "stack"} | _SERF_PARTS,
    "snapshot": {"node", "probe", "agent", "stack"} | _SERF_PARTS,
    "membership": _ABOVE_NODE,
    "probe": _ABOVE_NODE - {"probe"},
    "node": _SERF | {"agent", "stack"},
    "serf_model": _ABOVE_NODE - {"serf_model"},
    "serf_intents": _SERF - {"serf_intents", "serf_model"},
    "serf_queries": _SERF - {"serf_queries", "serf_model"},
    "serf_reaper": _SERF - {"serf_reaper", "serf_model", "serf_intents"},
    "serf_delegate": _SERF - {"serf_delegate", "serf_model", "serf_intents", "serf_queries"},
}
"""Per module of ``pysyncer.gossip``: the sibling modules it must not import at run time."""

_LAYERS_ABOVE = (
    "pysyncer.sync",
    "pysyncer.store",
    "pysyncer.adapters",
    "pysyncer.servicecenter",
    "pysyncer.rpc",
    "pysyncer.admin",
    "pysyncer.daemon",
)


def _runtime_imports(path: Path) -> set[str]:
    """The pysyncer modules ``path`` imports, leaving out ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "pysyncer.gossip":
                found.update(f"pysyncer.gossip.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name.startswith("pysyncer")}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_gossip_module_imports_only_what_it_may(module: str) -> None:
    siblings = {
        name.removeprefix("pysyncer.gossip.")
        for name in _runtime_imports(GOSSIP / f"{module}.py")
        if name.startswith("pysyncer.gossip.")
    }
    assert not siblings & FORBIDDEN[module], (
        f"gossip/{module}.py imports {sorted(siblings & FORBIDDEN[module])}"
    )


@pytest.mark.parametrize("path", sorted(GOSSIP.glob("*.py")), ids=lambda p: p.name)
def test_gossip_does_not_reach_up_into_other_layers(path: Path) -> None:
    above = {name for name in _runtime_imports(path) if name.startswith(_LAYERS_ABOVE)}
    assert not above, f"gossip/{path.name} imports {sorted(above)}"


def test_the_serf_parts_do_not_import_the_serf_that_composes_them() -> None:
    for part in sorted(_SERF_PARTS):
        assert "pysyncer.gossip.serf" not in _runtime_imports(GOSSIP / f"{part}.py"), part
