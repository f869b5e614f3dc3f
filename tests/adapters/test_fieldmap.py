"""The field-mapping table: docs/adapters.md shows it as is; carry/restore lose nothing.

For every registry kind, the model fields it keeps natively are read off
:data:`FIELD_MAP` (a cell starting with ``-`` means "carried as metadata"); whatever
the kind's own fields give back for the others (any guess), :func:`restore` of the
native values plus :func:`carry`'s metadata is the original instance.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.adapters.fieldmap import (
    CANONICAL_STATUSES,
    CARRIED_PREFIX,
    FIELD_MAP,
    KINDS,
    STATUS_FROM_KIND,
    STATUS_TO_KIND,
    Carried,
    carry,
    render_markdown,
    restore,
)
from pysyncer.model import Instance, ServiceKey

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"

# FIELD_MAP's model column -> the field names carry() takes
_FIELDS = {
    "service.name": ("name",),
    "service.app": ("app",),
    "service.version": ("version",),
    "service.environment": ("environment",),
    "service.project": ("project",),
    "instance_id": ("instance_id",),
    "host_name": ("host_name",),
    "endpoints": ("endpoints",),
    "status": ("status",),
    "properties": (),
    "health_interval, health_times": ("health",),
}


def native_fields(kind: str) -> frozenset[str]:
    """The model fields ``kind`` keeps in its own fields, according to FIELD_MAP."""
    native: set[str] = set()
    for row in FIELD_MAP:
        if not row.where(kind).startswith("-"):
            native.update(_FIELDS[row.model])
    return frozenset(native)


def test_doc_carries_exactly_the_table() -> None:
    text = DOC.read_text()
    table = render_markdown()
    assert table in text
    lines = text.splitlines()
    start = lines.index(table.splitlines()[0])
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    assert "\n".join(block) == table, "docs/adapters.md: regenerate with render_markdown()"
    assert text.count(table.splitlines()[0]) == 1


def test_every_model_column_is_known() -> None:
    assert {row.model for row in FIELD_MAP} == set(_FIELDS)
    assert native_fields("servicecomb") == {
        f for names in _FIELDS.values() for f in names
    }  # the model is SC-shaped: nothing to carry


def test_status_tables_cover_every_canonical_status() -> None:
    for kind, table in STATUS_TO_KIND.items():
        assert set(table) == set(CANONICAL_STATUSES), kind
        for value in table.values():
            assert STATUS_FROM_KIND[kind][value] in CANONICAL_STATUSES


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=","), min_size=0, max_size=12
)
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=10)
_endpoint = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}:{port}",
    st.sampled_from(["rest", "http", "https", "highway", "grpc"]),
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.integers(1, 65535),
)
_carried_keys = {
    CARRIED_PREFIX + k
    for k in ("app", "name", "version", "env", "project", "id", "host", "endpoints")
} | {CARRIED_PREFIX + "status", CARRIED_PREFIX + "health"}
_properties = st.dictionaries(_text.filter(lambda k: k not in _carried_keys), _text, max_size=4)
_services = st.builds(
    ServiceKey,
    app=_word,
    name=_word,
    version=st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}", fullmatch=True),
    environment=st.sampled_from(["", "development", "testing", "production"]),
    project=st.builds(lambda d, p: f"{d}/{p}", _word, _word),
)
_instances = st.builds(
    Instance,
    service=_services,
    instance_id=_word,
    host_name=_text,
    endpoints=st.lists(_endpoint, max_size=3).map(tuple),
    status=st.sampled_from(CANONICAL_STATUSES),
    properties=_properties,
    health_interval=st.integers(1, 10**6),
    health_times=st.integers(0, 1000),
)


@settings(max_examples=60, deadline=None)
@given(instance=_instances, guess=_instances, kind=st.sampled_from(KINDS))
def test_carry_then_restore_round_trips(instance: Instance, guess: Instance, kind: str) -> None:
    native = native_fields(kind)

    def pick(field: str, mine: object, theirs: object) -> object:
        return mine if field in native else theirs

    s, g = instance.service, guess.service
    seen = Carried(
        service=ServiceKey(
            app=str(pick("app", s.app, g.app)),
            name=str(pick("name", s.name, g.name)),
            version=str(pick("version", s.version, g.version)),
            environment=str(pick("environment", s.environment, g.environment)),
            project=str(pick("project", s.project, g.project)),
        ),
        instance_id=str(pick("instance_id", instance.instance_id, guess.instance_id)),
        host_name=str(pick("host_name", instance.host_name, guess.host_name)),
        endpoints=instance.endpoints if "endpoints" in native else guess.endpoints,
        status=str(pick("status", instance.status, guess.status)),
        properties=carry(instance, native),
        health_interval=instance.health_interval if "health" in native else 30,
        health_times=instance.health_times if "health" in native else 3,
    )
    assert restore(seen) == instance


def test_carry_adds_nothing_for_native_fields() -> None:
    instance = Instance(ServiceKey("a", "b", "1.0.0"), "i", "h", ("rest://x:1",))
    assert carry(instance, native_fields("servicecomb")) == {}
    carried = carry(instance, native_fields("zookeeper"))
    assert all(k.startswith(CARRIED_PREFIX) for k in carried)
