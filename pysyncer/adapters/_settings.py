"""Settings dataclasses from ``[adapter]`` / ``PYSYNCER_ADAPTER_*`` mappings.

Shared by adapters whose settings are a frozen dataclass of str/int/float/bool fields:
unknown keys and bad values raise ConfigError naming ``adapter.KEY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from pysyncer.errors import ConfigError

__all__ = ["as_bool", "settings_from_mapping"]

T = TypeVar("T")


def as_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def settings_from_mapping(cls: type[T], kind: str, settings: Mapping[str, Any]) -> T:
    """``cls(**values)`` from a mapping with dash or underscore keys, values converted to
    each field's default type; ConfigError naming ``adapter.KEY`` on anything wrong."""
    defaults = cls()
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in settings.items():
        name = str(key).replace("-", "_")
        shown = f"adapter.{str(key).replace('_', '-')}"
        if name not in known:
            raise ConfigError(
                f"{kind} adapter: unknown setting {shown}; known: "
                + ", ".join("adapter." + k.replace("_", "-") for k in sorted(known))
            )
        default = getattr(defaults, name)
        try:
            if isinstance(default, bool):
                values[name] = as_bool(raw)
            elif isinstance(default, float):
                values[name] = float(raw)
            elif isinstance(default, int):
                values[name] = int(raw)
            else:
                values[name] = str(raw)
        except (TypeError, ValueError):
            expected = type(default).__name__
            raise ConfigError(
                f"{kind} adapter: bad value for {shown}: {raw!r} (expected {expected})"
            ) from None
    return cls(**values)
