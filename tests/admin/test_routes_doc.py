"""docs/admin.md shows exactly the route table rendered from ``ROUTES``."""

from __future__ import annotations

from pysyncer.admin.app import ROUTES, render_markdown
from tests.support.docblocks import COMMAND, read_block


def test_doc_carries_exactly_the_route_table() -> None:
    assert read_block("admin-routes") == render_markdown(), f"docs/admin.md: run {COMMAND}"


def test_the_table_has_one_row_per_route() -> None:
    rows = render_markdown().splitlines()[2:]
    assert len(rows) == len(ROUTES) == len({(r.method, r.path) for r in ROUTES})
    for row, route in zip(rows, ROUTES, strict=True):
        assert row.startswith(f"| `{route.method} {route.path}` |")
