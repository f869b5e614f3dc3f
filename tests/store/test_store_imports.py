"""Each store module imports only what its docstring allows (one job per module).

The etcd backend's parts reach each other only through the facade (``etcd.py``); the
shared record body (``codec.py``) and the SQLite file (``sqlite_db.py``) stay free of
the backends; nothing in the store reaches up into the sync logic, the adapters or the
daemon.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STORE = Path(__file__).resolve().parents[2] / "pysyncer" / "store"

_ETCD_PARTS = {"etcd", "etcd_mirror", "etcd_txn", "etcd_writes", "etcd_watch", "etcd_coordinator"}

FORBIDDEN: dict[str, set[str]] = {
    "codec": {"sqlite", "sqlite_db", "etcd_layout", "etcd_client"} | _ETCD_PARTS,
    "etcd_layout": {"etcd_client", "sqlite", "sqlite_db"} | _ETCD_PARTS,
    "etcd_client": {"etcd_layout", "codec", "sqlite", "sqlite_db"} | _ETCD_PARTS,
    "etcd_mirror": _ETCD_PARTS - {"etcd_mirror"},
    "etcd_txn": _ETCD_PARTS - {"etcd_txn", "etcd_mirror"} | {"etcd_spool"},
    "etcd_writes": _ETCD_PARTS - {"etcd_writes", "etcd_mirror", "etcd_txn"},
    "etcd_watch": _ETCD_PARTS - {"etcd_watch", "etcd_mirror"},
    "etcd_coordinator": _ETCD_PARTS - {"etcd_coordinator"},
    "sqlite_db": {"codec", "sqlite", "etcd_layout", "etcd_client"} | _ETCD_PARTS,
    "sqlite": {"etcd_layout", "etcd_client"} | _ETCD_PARTS,
    "sqlite_worker": {"codec", "sqlite", "sqlite_db", "etcd_layout", "etcd_client"} | _ETCD_PARTS,
    "sqlite_checkpoint": {
        "codec",
        "sqlite",
        "sqlite_db",
        "etcd_layout",
        "etcd_client",
    }
    | _ETCD_PARTS,
    "etcd": {"sqlite", "sqlite_db", "sqlite_worker", "sqlite_checkpoint"},
    "spool": {"codec", "sqlite", "sqlite_db", "etcd_layout", "etcd_client", "etcd_spool"}
    | _ETCD_PARTS,
    "etcd_spool": {"codec", "sqlite", "sqlite_db", "etcd_layout", "etcd_client"} | _ETCD_PARTS,
}
"""Per module of ``pysyncer.store``: the sibling modules it must not import."""

_OUTSIDE_ALLOWED = {
    "pysyncer._core",  # the slot count (store/base)
    "pysyncer.model",
    "pysyncer.errors",
    "pysyncer.etcdchannels",
    "pysyncer.hostport",
    "pysyncer.supervisor",  # a leaf (standard library only): the background tasks run under it
}


def _imports(module: str) -> set[str]:
    tree = ast.parse((STORE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("pysyncer")}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_store_module_imports_only_what_it_may(module: str) -> None:
    imported = _imports(module)
    siblings = {name.removeprefix("pysyncer.store.") for name in imported}
    assert not siblings & FORBIDDEN[module], (
        f"store/{module}.py imports {siblings & FORBIDDEN[module]}"
    )
    outside = {
        name
        for name in imported
        if not name.startswith("pysyncer.store") and name not in _OUTSIDE_ALLOWED
    }
    assert not outside, f"store/{module}.py reaches outside the store: {sorted(outside)}"


def test_every_store_module_is_covered() -> None:
    modules = {path.stem for path in STORE.glob("*.py")} - {"__init__", "base", "url"}
    assert modules == set(FORBIDDEN)
