"""The adapter entry points in ``pyproject.toml`` are the built-in adapter list, and resolve.

``pysyncer.adapters.BUILTIN_ADAPTERS`` lets an editable checkout load the built-ins before
the package is reinstalled; the entry points are what an installed package advertises.
The two must name the same adapters with the same ``module:factory`` targets.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

from pysyncer.adapters import BUILTIN_ADAPTERS, ENTRY_POINT_GROUP

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _declared_entry_points() -> dict[str, str]:
    with PYPROJECT.open("rb") as handle:
        project = tomllib.load(handle)["project"]
    group = project["entry-points"][ENTRY_POINT_GROUP]
    return {str(name): str(target) for name, target in group.items()}


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    assert module_name and attr, f"{target!r} is not module:attribute"
    resolved: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        resolved = getattr(resolved, part)
    return resolved


def test_entry_points_equal_the_builtin_adapter_list() -> None:
    assert _declared_entry_points() == dict(BUILTIN_ADAPTERS)


def test_every_entry_point_resolves_to_a_callable_factory() -> None:
    for name, target in _declared_entry_points().items():
        factory = _resolve(target)
        assert callable(factory), f"entry point {name} = {target!r} is not callable"
