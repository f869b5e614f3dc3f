"""Request body checks shared by the registry and admin APIs (pysyncer/httpbody.py)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from pysyncer.httpbody import BodyError, json_depth_exceeds, parse_json_object


def _depth(value: Any) -> int:
    """Nesting depth of arrays/objects in a parsed JSON value (the reference)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(4) if depth < 12 else 3
    if kind == 0:
        return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(3))}
    if kind == 1:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 2:
        return "".join(rng.choice('[]{}"\\ab') for _ in range(rng.randrange(12)))
    return rng.randrange(100)


def test_brackets_inside_strings_do_not_count() -> None:
    shallow = b'{"service": {"description": "' + b"[{" * 100 + b'"}}'
    assert not json_depth_exceeds(shallow, 16)
    assert parse_json_object(shallow, max_depth=16)["service"]["description"] == "[{" * 100


def test_deep_bodies_are_refused() -> None:
    deep = b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}"
    assert json_depth_exceeds(deep, 16)
    with pytest.raises(BodyError):
        parse_json_object(deep, max_depth=16)


def test_agrees_with_the_parsed_depth() -> None:
    rng = random.Random(17)
    for _ in range(2_000):
        value = {"v": _random_value(rng, 1)}
        raw = json.dumps(value).encode()
        limit = rng.randrange(1, 10)
        assert json_depth_exceeds(raw, limit) == (_depth(value) > limit), raw
