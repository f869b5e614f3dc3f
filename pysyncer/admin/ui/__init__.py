"""The dashboard's files (``GET /ui/``): HTML, plain JavaScript and CSS, shipped in the package.

Owns finding an asset by name and its content type, and the page's security headers
(a Content-Security-Policy that allows this server only: no CDN, no inline script).
Only the files of this directory with a known suffix are served; any other name is
None (404). No build step: the files are served as written.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["INDEX", "SECURITY_HEADERS", "asset"]

INDEX = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.(html|js|css)")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the dashboard file ``name``; None when there is none."""
    if not _NAME.fullmatch(name):
        return None
    found = resources.files(__name__).joinpath(name)
    if not found.is_file():
        return None
    suffix = name[name.rindex(".") :]
    return found.read_bytes(), _TYPES[suffix]
