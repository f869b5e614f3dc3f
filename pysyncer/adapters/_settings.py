"""Settings dataclasses from ``[adapter]`` / ``PYSYNCER_ADAPTER_*`` mappings.

Shared by adapters whose settings are a frozen dataclass of str/int/float/bool fields:
unknown keys and bad values raise ConfigError naming ``adapter.KEY``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def settings_from_mapping(
    cls: type[T],
    kind: str,
    settings: Mapping[str, Any],
    *,
    converters: Mapping[str, Callable[[Any], Any]] | None = None,
    unknown_error: Callable[[list[Any], set[str]], str] | None = None,
    bad_value_error: Callable[[Any, Any, str], str] | None = None,
    unknown_first: bool = False,
) -> T:
    """``cls(**values)`` from a mapping with dash or underscore keys, values converted to
    each field's default type; ConfigError naming ``adapter.KEY`` on anything wrong.

    ``converters`` convert named fields their own way (e.g. an optional bool);
    ``unknown_error(keys, known_field_names)`` and ``bad_value_error(key, raw, expected)``
    word the errors of adapters with messages of their own; ``unknown_first`` reports
    every unknown key before converting anything (otherwise keys are taken in order).
    """
    defaults = cls()
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]

    def unknown(keys: list[Any]) -> ConfigError:
        if unknown_error is not None:
            return ConfigError(unknown_error(keys, known))
        shown = f"adapter.{str(keys[0]).replace('_', '-')}"
        return ConfigError(
            f"{kind} adapter: unknown setting {shown}; known: "
            + ", ".join("adapter." + k.replace("_", "-") for k in sorted(known))
        )

    if unknown_first:
        strays = sorted(k for k in settings if str(k).replace("-", "_") not in known)
        if strays:
            raise unknown(strays)
    values: dict[str, Any] = {}
    for key, raw in settings.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise unknown([key])
        default = getattr(defaults, name)
        try:
            if converters is not None and name in converters:
                values[name] = converters[name](raw)
            elif isinstance(default, bool):
                values[name] = as_bool(raw)
            elif isinstance(default, float):
                values[name] = float(raw)
            elif isinstance(default, int):
                values[name] = int(raw)
            else:
                values[name] = str(raw)
        except (TypeError, ValueError):
            expected = type(default).__name__
            if bad_value_error is not None:
                raise ConfigError(bad_value_error(key, raw, expected)) from None
            shown = f"adapter.{str(key).replace('_', '-')}"
            raise ConfigError(
                f"{kind} adapter: bad value for {shown}: {raw!r} (expected {expected})"
            ) from None
    return cls(**values)
