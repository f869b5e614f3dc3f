"""The etcd key layout: docs/store.md shows the table the code generates; keys parse back.

No server: these check :mod:`pysyncer.store.etcd_layout` alone.
"""

from __future__ import annotations

from pathlib import Path

from pysyncer.store.etcd_layout import KEY_TABLE, Kind, Layout, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def test_doc_carries_exactly_the_key_table() -> None:
    text = DOC.read_text()
    table = render_markdown()
    header = table.splitlines()[0]
    assert text.count(header) == 1, "docs/store.md: the etcd key table is missing"
    lines = text.splitlines()
    start = lines.index(header)
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    assert "\n".join(block) == table, "docs/store.md: regenerate with etcd_layout.render_markdown()"


def test_table_lists_every_kind_once_and_its_keys_parse_back() -> None:
    kinds = [row.kind for row in KEY_TABLE]
    assert sorted(kinds, key=lambda k: k.value) == sorted(
        (k for k in Kind if k is not Kind.OTHER), key=lambda k: k.value
    )
    layout = Layout("/p/")
    built = {
        Kind.META: layout.meta,
        Kind.COUNTER: layout.counter,
        Kind.LOG: layout.log(42),
        Kind.EXPORTED: layout.exported("app/svc", "id"),
        Kind.MAPPING: layout.mapping("dc", "id"),
        Kind.CURSOR: layout.cursor("node", "dc"),
        Kind.TRUST: layout.trust("dc/b"),
        Kind.MEMBER: layout.member("node"),
        Kind.SLOT_TABLE: layout.slot_table,
        Kind.SLOT_EPOCH: layout.slot_epoch,
    }
    for row in KEY_TABLE:
        key = built[row.kind]
        assert layout.parse(key).kind is row.kind
        # the documented pattern names the same head under the prefix
        head = row.pattern().removeprefix("<P>").split("<")[0]
        assert key.decode().removeprefix("/p/").startswith(head)
    assert layout.parse(b"/p/log/r/x").kind is Kind.OTHER
    assert layout.parse(b"/p/map/only-one").kind is Kind.OTHER
    assert layout.parse(b"/q/meta").kind is Kind.OTHER
