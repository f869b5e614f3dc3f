"""Where settings values come from: flags, ``PYSYNCER_*`` env vars and the TOML file.

Owns the names a setting has in each source (``--key``, ``PYSYNCER_KEY``, the ``key``
attribute), reading the config file (unknown keys and malformed tables are errors), the
``[adapter]`` table with its ``PYSYNCER_ADAPTER_*`` overrides, and which source wins for
one setting (flag, then env var, then file, then the default; a key and its alias must
agree). Knows nothing of particular settings: the table is :data:`pysyncer.config.SETTINGS`,
which this module must not import at run time.

Imports: errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysyncer.errors import ConfigError

if TYPE_CHECKING:
    from pysyncer.config import Setting

import tomllib

__all__ = [
    "CONFIG_TABLES",
    "ENV_PREFIX",
    "adapter_settings",
    "attr_name",
    "env_name",
    "flag_name",
    "parse_value",
    "read_file",
    "setting_value",
]

ENV_PREFIX = "PYSYNCER_"
# config-file tables beside the flat keys: [adapter] for --plugin; export and import hold
# the filter rules as arrays of tables ([[export.include]], [[import.exclude]], ...)
CONFIG_TABLES = ("adapter", "export", "import")


def flag_name(key: str) -> str:
    return f"--{key}"


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def attr_name(key: str) -> str:
    return key.replace("-", "_")


def read_file(path: Path, known: Iterable[str]) -> dict[str, Any]:
    """The config file's table; ``known`` are the flat keys it may hold (and their aliases)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(known) - set(CONFIG_TABLES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r}")
    for table in CONFIG_TABLES:
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"config file {path}: {table!r} must be a table ([{table}])")
    return data


def adapter_settings(from_file: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``[adapter]`` of the config file, overridden by ``PYSYNCER_ADAPTER_<KEY>`` env vars.

    Keys are normalised to lower case with dashes (``PYSYNCER_ADAPTER_POLL_INTERVAL`` ->
    ``poll-interval``); the adapter validates the values and names ``adapter.KEY``.
    """
    settings = {
        str(k).lower().replace("_", "-"): v for k, v in from_file.get("adapter", {}).items()
    }
    prefix = ENV_PREFIX + "ADAPTER_"
    for name, value in environ.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            settings[name[len(prefix) :].lower().replace("_", "-")] = value
    return settings


def setting_value(
    setting: Setting,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    from_file: Mapping[str, Any],
    file_path: Path | None,
) -> Any:
    """The parsed value of ``setting`` from the first source that gives it (flag, env,
    file), else its default; within a source, its key and aliases must agree."""
    sources: list[tuple[Callable[[str], tuple[bool, Any]], Callable[[str], str]]] = [
        (lambda k: (k in flags, flags.get(k)), lambda k: f"flag {flag_name(k)}"),
        (
            lambda k: (env_name(k) in environ, environ.get(env_name(k))),
            lambda k: f"env {env_name(k)}",
        ),
        (lambda k: (k in from_file, from_file.get(k)), lambda k: f"config file {file_path}"),
    ]
    for lookup, describe in sources:
        given = []
        for name in setting.names:
            present, raw = lookup(name)
            if present:
                given.append((name, parse_value(setting, name, raw, describe(name))))
        if given:
            name, value = given[0]
            for other, other_value in given[1:]:
                if other_value != value:
                    raise ConfigError(
                        f"config key {name!r} ({describe(name)}) and its alias {other!r} "
                        f"({describe(other)}) differ: give one of them"
                    )
            return value
    if setting.default is None:
        return None
    return parse_value(setting, setting.key, setting.default, "default")


def parse_value(setting: Setting, name: str, raw: Any, source: str) -> Any:
    if raw is None:
        return None
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config key {name!r} ({source}): {exc}") from None
