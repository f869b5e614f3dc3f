"""Reading a JSON request body whole, bounded in size and in nesting depth.

Owns the one way pysyncer's HTTP servers (the embedded registry, the admin API) turn a
request body into a JSON object: the body is read to its end however slowly it arrives
(``request.read()``; the application's ``client_max_size`` answers 413 beyond the size
limit), nesting is measured without recursion before the JSON parser runs (so a
400,000-deep body is refused, never a ``RecursionError``), and anything that is not a
JSON object raises :class:`BodyError`. Each server maps that error to its own error body.

It must not import the servers that use it (nor anything above this module) and knows
no error codes.

Imports: errors.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aiohttp import web

from pysyncer.errors import PysyncerError

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "BodyError",
    "json_depth_exceeds",
    "parse_json_object",
    "read_json_object",
]

DEFAULT_MAX_JSON_DEPTH: Final = 64

# A JSON string (its escapes included): brackets inside strings do not nest.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


class BodyError(PysyncerError, ValueError):
    """A request body that is not an acceptable JSON object (bad JSON, too deep, not
    an object)."""


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit`` (iterative, no parse).

    Invalid JSON is measured as well as can be; the parser refuses it afterwards.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # even with the ones inside strings, too few openings to nest deeper
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False  # fewer openings than the limit: no need to follow them
    depth = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def parse_json_object(raw: bytes, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """``raw`` as a JSON object (empty means ``{}``), or :class:`BodyError`."""
    if json_depth_exceeds(raw, max_depth):
        raise BodyError(f"body is nested deeper than {max_depth} levels")
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"body is not JSON: {exc}") from None
    except RecursionError:  # cannot happen after the depth check; never a traceback
        raise BodyError(f"body is nested deeper than {max_depth} levels") from None
    if not isinstance(body, dict):
        raise BodyError("body must be a JSON object")
    return body


async def read_json_object(
    request: web.Request, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> dict[str, Any]:
    """The request's whole body as a JSON object.

    Raises :class:`aiohttp.web.HTTPRequestEntityTooLarge` beyond the application's
    ``client_max_size`` and :class:`BodyError` for a body that is not a JSON object or
    nests deeper than ``max_depth``.
    """
    raw = await request.read()  # to the end, however slowly it comes
    return parse_json_object(raw, max_depth=max_depth)
