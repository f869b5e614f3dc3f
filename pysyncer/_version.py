"""The single place pysyncer's version is written (read by pyproject.toml and the CLI)."""

__version__ = "0.1.0"
