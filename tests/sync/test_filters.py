"""Export/import filters: matchers, selectors, precedence, directions, config errors."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysyncer.config import load_config
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey
from pysyncer.sync.filters import (
    Filter,
    FilterConfigError,
    Filters,
    Rule,
    Selector,
    filters_from_config,
)

SHOP_ORDER = ServiceKey("shop", "order-api", "1.2.0", "production", "default/default")


def instance(
    service: ServiceKey = SHOP_ORDER, properties: Mapping[str, str] | None = None, iid: str = "i1"
) -> Instance:
    return Instance(service, iid, "host-1", ("rest://10.0.0.1:8080",), "UP", properties or {})


# --- matchers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule(), True),
        (Rule(app="shop"), True),
        (Rule(app="sho"), False),
        (Rule(app="sh*"), True),
        (Rule(app="SHOP"), False),  # case-sensitive, as fnmatchcase
        (Rule(app=["crm", "shop"]), True),
        (Rule(app=("crm", "bill*")), False),
        (Rule(name="order-api"), True),
        (Rule(name="order-?pi"), True),
        (Rule(name="order-[a-c]pi"), True),
        (Rule(name="order-[!a]pi"), False),
        (Rule(name="order"), False),
        (Rule(name="*"), True),
        (Rule(version="1.*"), True),
        (Rule(version="2.*"), False),
        (Rule(environment="production"), True),
        (Rule(environment=""), False),
        (Rule(project="default/*"), True),
        (Rule(project="other/*"), False),
        (Rule(dc="dc-east"), True),
        (Rule(dc="dc-e*"), True),
        (Rule(dc="dc-west"), False),
        (Rule(app="shop", name="order*", version="1.*"), True),
        (Rule(app="shop", name="cart*"), False),  # every given field must match
        (Rule(app="shop", metadata="zone=a"), True),
        (Rule(app="shop", metadata="zone=b"), False),
    ],
)
def test_rule_fields(rule: Rule, expected: bool) -> None:
    assert rule.matches("dc-east", instance(properties={"zone": "a"})) is expected


def test_globs_agree_with_fnmatchcase() -> None:
    names = ["order-api", "order", "Order-API", "a[b", "x*y", "", "ord?r", "[abc]"]
    globs = ["order*", "*-api", "?rder*", "[ao]*", "a[b", "x[*]y", "", "*", "ord[?]r", "[[]abc]"]
    for glob in globs:
        rule = Rule(name=glob)
        for name in names:
            service = ServiceKey("shop", name, "1.0.0")
            assert rule.matches("dc", instance(service)) is fnmatch.fnmatchcase(name, glob), (
                glob,
                name,
            )


# --- metadata selectors --------------------------------------------------------------------

PROPS = {"env": "prod", "tier": "web", "zone": "eu-1", "empty": ""}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", True),
        ("env==prod", True),
        ("env = prod", True),
        ("env=dev", False),
        ("env=pr*", True),
        ("env=p?od", True),
        ("env=*", True),
        ("missing=*", False),
        ("env!=dev", True),
        ("env!=prod", False),
        ("env!=p*", False),
        ("missing!=x", True),  # absent counts as "not equal", as in Kubernetes
        ("zone", True),
        ("missing", False),
        ("!missing", True),
        ("!zone", False),
        ("! zone", False),
        ("empty=", True),
        ("empty", True),
        ("env=", False),
        ("env=prod,tier!=cache,zone", True),
        ("env=prod,tier!=web", False),
        ("env=prod, !missing , zone=eu-*", True),
        ("tier in (web,cache)", True),
        ("tier in (cache, batch)", False),
        ("tier in (w*)", True),
        ("tier notin (cache,batch)", True),
        ("tier notin (web)", False),
        ("missing notin (web)", True),
        ("missing in (web)", False),
        ("tier in (web,cache),env=prod", True),
        ("a.b/c-d_e", False),
    ],
)
def test_selector_strings(selector: str, expected: bool) -> None:
    assert Selector(selector).matches(PROPS) is expected
    assert Rule(metadata=selector).matches("dc", instance(properties=PROPS)) is expected
    # the canonical text parses back to the same selector
    assert Selector(Selector(selector).text) == Selector(selector)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"env": "prod"}, True),
        ({"env": "prod", "zone": "eu-*"}, True),
        ({"env": "prod", "zone": "us-*"}, False),
        ({"missing": "*"}, False),
    ],
)
def test_selector_tables(table: dict[str, str], expected: bool) -> None:
    assert Selector(table).matches(PROPS) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("env=prod,,zone", "empty term"),
        ("env=prod,", "empty term"),
        ("a b", "bad selector term 'a b'"),
        ("tier in (a,", "bad selector term"),
        ("tier in (a,,b)", "bad value list"),
        ("tier in ()", "bad value list"),
        ("=prod", "bad selector term"),
        ({}, "empty"),
        ({"internal": True}, 'must be a glob string (metadata values are text: write "True")'),
        ({"": "x"}, "non-empty string"),
        (5, "must be a selector string or a table, not an integer"),
    ],
)
def test_bad_selectors(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Selector(spec)


def test_bad_rule_globs() -> None:
    with pytest.raises(ValueError, match="empty list"):
        Rule(app=[])
    with pytest.raises(ValueError, match="not a glob string"):
        Rule(name=["ok", 5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a glob string"):
        Rule(name=5)  # type: ignore[arg-type]


# --- include / exclude ---------------------------------------------------------------------

CART = ServiceKey("shop", "cart", "1.0.0")
CRM = ServiceKey("crm", "contacts", "2.0.0")


@pytest.mark.parametrize(
    ("include", "exclude", "service", "properties", "expected"),
    [
        ([], [], SHOP_ORDER, {}, True),
        ([Rule(app="shop")], [], SHOP_ORDER, {}, True),
        ([Rule(app="shop")], [], CRM, {}, False),
        ([Rule(app="crm"), Rule(name="order*")], [], SHOP_ORDER, {}, True),  # any include
        ([], [Rule(app="crm")], SHOP_ORDER, {}, True),
        ([], [Rule(app="shop")], SHOP_ORDER, {}, False),
        ([Rule(app="shop")], [Rule(name="order*")], SHOP_ORDER, {}, False),  # exclude wins
        ([Rule(app="shop")], [Rule(name="order*")], CART, {}, True),
        ([Rule(app="shop")], [Rule(metadata="internal=true")], CART, {"internal": "true"}, False),
        ([Rule(app="shop")], [Rule(metadata="internal=true")], CART, {"internal": "no"}, True),
        ([Rule(metadata="expose")], [], CRM, {"expose": "1"}, True),
        ([Rule(metadata="expose")], [], CRM, {}, False),
        # a metadata include and a plain include for the same service: the plain one wins
        ([Rule(metadata="expose"), Rule(app="crm")], [], CRM, {}, True),
        ([Rule(metadata="a"), Rule(metadata="b")], [], CRM, {"b": ""}, True),
        ([Rule(metadata="a"), Rule(metadata="b")], [], CRM, {"c": ""}, False),
        ([], [Rule(metadata="a"), Rule(metadata="b")], CRM, {"b": ""}, False),
        ([], [Rule(metadata="a"), Rule(app="shop")], CRM, {"c": ""}, True),
        ([Rule()], [Rule()], CRM, {}, False),
    ],
)
def test_include_exclude(
    include: list[Rule],
    exclude: list[Rule],
    service: ServiceKey,
    properties: dict[str, str],
    expected: bool,
) -> None:
    filter_ = Filter(include, exclude)
    subject = instance(service, properties)
    assert filter_.passes("dc-a", subject) is expected
    assert filter_.passes("dc-a", subject) is expected  # again, from the cached plan
    # other instances of the same service are decided by their own metadata
    other = instance(service, {"internal": "true", "expose": "", "a": ""}, iid="i2")
    naive = (not include or any(r.matches("dc-a", other) for r in include)) and not any(
        r.matches("dc-a", other) for r in exclude
    )
    assert filter_.passes("dc-a", other) is naive
    # the service-level verdict, when there is one, is every instance's decision
    verdict = filter_.passes_service("dc-a", service)
    if verdict is not None:
        assert filter_.passes("dc-a", subject) is verdict
        assert filter_.passes("dc-a", other) is verdict
        assert filter_.passes("dc-a", instance(service, iid="i3")) is verdict


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ([], [], True),
        ([Rule(app="shop")], [], True),
        ([Rule(app="crm")], [], False),
        ([], [Rule(name="order*")], False),
        ([], [Rule(name="cart")], True),
        ([Rule(metadata="expose")], [], None),  # depends on each instance's metadata
        ([], [Rule(app="shop", metadata="internal=true")], None),
        ([], [Rule(app="crm", metadata="internal=true")], True),  # the rule never applies
        ([Rule(metadata="expose"), Rule(app="shop")], [], True),  # a plain include wins
        ([Rule(metadata="expose")], [Rule(app="shop")], False),  # exclude wins
        ([Rule(dc="dc-b")], [], False),
        ([], [Rule(dc="dc-a")], False),
    ],
)
def test_passes_service(include: list[Rule], exclude: list[Rule], expected: bool | None) -> None:
    filter_ = Filter(include, exclude)
    assert filter_.passes_service("dc-a", SHOP_ORDER) is expected
    assert filter_.passes_service("dc-a", SHOP_ORDER) is expected  # from the cached plan


def test_imports_service_follows_rules_and_direction() -> None:
    import_ = Filter(exclude=[Rule(dc="dc-test*"), Rule(name="cart", metadata="tier=cache")])
    filters = Filters(import_=import_, dc="dc-east")
    assert filters.imports_service("dc-west", SHOP_ORDER) is True
    assert filters.imports_service("dc-test-1", SHOP_ORDER) is False
    assert filters.imports_service("dc-west", CART) is None
    # sending only: nothing is imported, whatever the rules
    send = Filters(import_=import_, direction="send", dc="dc-east")
    assert send.imports_service("dc-west", SHOP_ORDER) is False
    assert Filters(direction="send").imports_service("dc-west", CART) is False
    assert Filters(direction="receive").imports_service("dc-west", CART) is True


def test_plan_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pysyncer.sync.filters as module

    monkeypatch.setattr(module, "_PLAN_CACHE_LIMIT", 10)
    filter_ = Filter([Rule(name="s-1*")])
    for i in range(100):
        subject = instance(ServiceKey("shop", f"s-{i}", "1.0.0"))
        assert filter_.passes("dc", subject) is fnmatch.fnmatchcase(f"s-{i}", "s-1*")
        assert len(filter_._plans) <= 10


# --- per data center rules and directions --------------------------------------------------


def test_import_rules_match_the_origin_dc() -> None:
    filters = Filters(
        import_=Filter(exclude=[Rule(dc="dc-test*"), Rule(dc="dc-west", app="shop")]),
        dc="dc-east",
    )
    assert filters.imports("dc-prod", instance())
    assert not filters.imports("dc-test-1", instance())
    assert not filters.imports("dc-west", instance())
    assert filters.imports("dc-west", instance(CRM))


def test_export_rules_match_the_local_dc() -> None:
    rules = Filter(include=[Rule(dc="dc-east", app="shop"), Rule(dc="dc-west", app="crm")])
    east, west = Filters(export=rules, dc="dc-east"), Filters(export=rules, dc="dc-west")
    assert east.exports(instance()) and not east.exports(instance(CRM))
    assert west.exports(instance(CRM)) and not west.exports(instance())
    # export rules never look at the import side, and the other way round
    assert east.imports("dc-west", instance(CRM))


@pytest.mark.parametrize(
    ("direction", "sends", "receives"),
    [("both", True, True), ("send", True, False), ("receive", False, True)],
)
def test_directions(direction: str, sends: bool, receives: bool) -> None:
    filters = Filters(direction=direction, dc="dc-a")
    assert (filters.sends, filters.receives) == (sends, receives)
    assert filters.exports(instance()) is sends
    assert filters.imports("dc-b", instance()) is receives


def test_bad_direction() -> None:
    with pytest.raises(ValueError, match="must be one of both, send, receive"):
        Filters(direction="sideways")


# --- unused rules --------------------------------------------------------------------------


def test_unused_rules() -> None:
    filters = filters_from_config(
        {
            "include": [{"app": "shop"}, {"app": "nothing-here"}],
            "exclude": [{"metadata": "internal=true"}, {"dc": "dc-other", "app": "shop"}],
        },
        {"exclude": [{"dc": "dc-test*"}, {"name": "cart"}]},
        dc="dc-east",
    )
    local = [instance(), instance(CART, {"internal": "true"}, iid="i2")]
    assert filters.unused_rules(local) == [
        "export.include[2] (app='nothing-here'): matched none of 2 local instances",
        "export.exclude[2] (dc='dc-other' app='shop'): never applies, "
        "this data center is 'dc-east'",
    ]
    remote = [("dc-west", instance(CART))]
    assert filters.unused_rules(local, remote)[2:] == [
        "import.exclude[1] (dc='dc-test*'): matched none of 1 remote instances",
    ]
    assert filters.unused_rules(local, [])[2:] == [
        "import.exclude[1] (dc='dc-test*'): matched none of 0 remote instances",
        "import.exclude[2] (name='cart'): matched none of 0 remote instances",
    ]


def test_unused_rules_by_direction() -> None:
    tables = {"include": [{"app": "shop"}]}
    send = filters_from_config(tables, tables, direction="send", dc="dc-a")
    assert send.unused_rules([instance()], [("dc-b", instance())]) == [
        "import.include[1] (app='shop'): ignored, direction is 'send'"
    ]
    receive = filters_from_config(tables, tables, direction="receive", dc="dc-a")
    assert receive.unused_rules([instance()], [("dc-b", instance())]) == [
        "export.include[1] (app='shop'): ignored, direction is 'receive'"
    ]


def test_no_rules_nothing_unused() -> None:
    assert Filters().unused_rules([]) == []
    assert not Filters().has_rules


@pytest.mark.parametrize(
    ("include", "exclude", "direction", "expected"),
    [
        ([], [], "both", True),
        ([], [], "receive", True),
        ([], [], "send", False),  # imports nothing at all
        ([Rule(dc="dc-a")], [], "both", True),
        ([Rule(dc="dc-b")], [], "both", False),  # every include rule names another dc
        ([Rule(dc=["dc-b", "dc-c"]), Rule(dc="x*", app="shop")], [], "both", False),
        ([Rule(dc="dc-?")], [], "both", True),
        ([Rule(app="shop")], [], "both", True),  # no dc: may match any dc's shop
        ([Rule(dc="dc-b"), Rule(metadata="expose")], [], "both", True),
        ([], [Rule(dc="dc-a")], "both", False),  # a dc-only exclude rule
        ([], [Rule(dc="dc-*")], "both", False),
        ([], [Rule(dc="dc-a", name="*")], "both", False),  # "*" narrows nothing
        ([], [Rule()], "both", False),  # excludes everything, from every dc
        ([], [Rule(dc="dc-a", app="shop")], "both", True),  # other services may pass
        ([], [Rule(dc="dc-a", metadata="internal")], "both", True),
        ([], [Rule(dc="dc-b")], "both", True),
        ([Rule(dc="dc-a")], [Rule(dc="dc-a", app="crm")], "both", True),
    ],
)
def test_imports_dc(
    include: list[Rule], exclude: list[Rule], direction: str, expected: bool
) -> None:
    filters = Filters(import_=Filter(include, exclude), direction=direction, dc="dc-home")
    assert filters.imports_dc("dc-a") is expected
    assert filters.imports_dc("dc-a") is expected  # from the cache
    assert (filters.not_imported_reason("dc-a") == "") is expected


def test_not_imported_reasons() -> None:
    rules = Filter(include=[Rule(dc="dc-b")], exclude=[Rule(app="x"), Rule(dc="dc-t*")])
    filters = Filters(import_=rules, dc="dc-home")
    assert filters.not_imported_reason("dc-a") == (
        "no import.include rule applies to data center 'dc-a'"
    )
    only_exclude = Filters(import_=Filter(exclude=rules.exclude), dc="dc-home")
    assert only_exclude.not_imported_reason("dc-test") == (
        "import.exclude[2] (dc='dc-t*') refuses all of it"
    )
    assert Filters(direction="send").not_imported_reason("dc-a") == (
        "direction is 'send': nothing is imported"
    )


def test_dc_verdict_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pysyncer.sync.filters as module

    monkeypatch.setattr(module, "_PLAN_CACHE_LIMIT", 10)
    filters = Filters(import_=Filter(include=[Rule(dc="dc-1*")]))
    for i in range(100):
        assert filters.imports_dc(f"dc-{i}") is fnmatch.fnmatchcase(f"dc-{i}", "dc-1*")
        assert len(filters._dcs) <= 10


# --- properties ----------------------------------------------------------------------------

text = st.text(alphabet="abc-*?.[]!/", max_size=8)
services = st.builds(ServiceKey, text, text, text, text, text)
props = st.dictionaries(st.text(alphabet="abxyz", min_size=1, max_size=3), text, max_size=4)
instances = st.builds(Instance, services, text, text, st.just(()), st.just("UP"), props.map(dict))


@given(instances, text)
def test_empty_filters_pass_everything(subject: Instance, dc: str) -> None:
    filters = Filters(dc=dc)
    assert filters.exports(subject)
    assert filters.imports(dc, subject)


@given(instances, text, st.sampled_from([Rule(), Rule(name="*"), Rule(metadata="x!=*,!x")]))
def test_exclude_all_excludes_everything(subject: Instance, dc: str, everything: Rule) -> None:
    # Rule(metadata="x!=*,!x") holds for every instance without an "x" property
    props = {k: v for k, v in subject.properties.items() if k != "x"}
    subject = Instance(subject.service, "i", "h", properties=props)
    filters = Filters(Filter(exclude=[everything]), Filter(exclude=[everything]), dc=dc)
    assert not filters.exports(subject)
    assert not filters.imports("dc-any", subject)


@given(
    instances,
    text,
    st.lists(st.sampled_from([Rule(app="a*"), Rule(name="b?"), Rule(metadata="x")]), max_size=2),
    st.lists(st.sampled_from([Rule(dc="c*"), Rule(metadata="y=a*"), Rule()]), max_size=2),
)
def test_service_verdict_agrees_with_every_instance(
    subject: Instance, dc: str, include: list[Rule], exclude: list[Rule]
) -> None:
    filters = Filters(import_=Filter(include, exclude))
    verdict = filters.imports_service(dc, subject.service)
    if verdict is not None:
        assert filters.imports(dc, subject) is verdict


dc_rules = st.sampled_from(
    [
        Rule(dc="a*"),
        Rule(dc=["b", "c?"]),
        Rule(dc="a*", name="b?"),
        Rule(dc="c*", metadata="x"),
        Rule(dc="*", app="*"),
        Rule(app="a*"),
        Rule(metadata="y=a*"),
        Rule(),
    ]
)


@given(
    instances,
    st.text(alphabet="abc", max_size=3),
    st.sampled_from(["both", "send", "receive"]),
    st.lists(dc_rules, max_size=3),
    st.lists(dc_rules, max_size=3),
)
def test_a_dc_not_imported_has_no_instance_imported(
    subject: Instance, dc: str, direction: str, include: list[Rule], exclude: list[Rule]
) -> None:
    filters = Filters(import_=Filter(include, exclude), direction=direction)
    if not filters.imports_dc(dc):
        assert not filters.imports(dc, subject)
        assert filters.imports_service(dc, subject.service) is False


@given(instances, st.lists(text, min_size=1, max_size=3), text)
def test_include_name_agrees_with_fnmatchcase(subject: Instance, globs: list[str], dc: str) -> None:
    filter_ = Filter(include=[Rule(name=globs)])
    expected = any(fnmatch.fnmatchcase(subject.service.name, glob) for glob in globs)
    assert filter_.passes(dc, subject) is expected


# --- config ----------------------------------------------------------------------------------

CONFIG = """
direction = "both"
[[export.include]]
app = "shop"
name = "order*"
[[export.include]]
app = ["crm", "billing"]
metadata = { expose = "true" }
[[export.exclude]]
metadata = "internal=true"
[[import.exclude]]
dc = "dc-test*"
"""


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    config = load_config({"dc": "dc-east"}, environ={}, config_file=path)
    filters = config.filters
    assert filters.direction == config.direction == "both"
    assert filters.dc == "dc-east"
    assert filters.export.include == (
        Rule(app="shop", name="order*"),
        Rule(app=["crm", "billing"], metadata="expose=true"),
    )
    assert filters.export.exclude == (Rule(metadata="internal=true"),)
    assert filters.import_.exclude == (Rule(dc="dc-test*"),)
    assert filters.exports(instance())
    assert not filters.exports(instance(properties={"internal": "true"}))
    assert not filters.exports(instance(CRM))
    assert filters.exports(instance(CRM, {"expose": "true"}))
    assert not filters.imports("dc-test-2", instance())
    assert filters.to_dict() == {
        "direction": "both",
        "export": {
            "include": [
                {"app": "shop", "name": "order*"},
                {"app": ["crm", "billing"], "metadata": "expose=true"},
            ],
            "exclude": [{"metadata": "internal=true"}],
        },
        "import": {"include": [], "exclude": [{"dc": "dc-test*"}]},
    }


def test_config_defaults() -> None:
    config = load_config({}, environ={})
    assert config.direction == "both"
    assert config.filters == Filters(dc=config.dc)
    assert config.filters.sends and config.filters.receives and not config.filters.has_rules


def test_direction_sources(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('direction = "send"\n')
    assert load_config({}, environ={}, config_file=path).filters.direction == "send"
    env = {"PYSYNCER_DIRECTION": "Receive"}
    assert load_config({}, environ=env, config_file=path).filters.direction == "receive"
    config = load_config({"direction": "both"}, environ=env, config_file=path)
    assert config.filters.direction == config.direction == "both"
    assert config.filters.sends and config.filters.receives


def test_bad_direction_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"direction": "up"}, environ={})
    assert str(info.value) == (
        "config key 'direction' (flag --direction): 'up' must be one of both, send, receive"
    )
    with pytest.raises(ConfigError, match=r"config key 'direction' \(env PYSYNCER_DIRECTION\)"):
        load_config({}, environ={"PYSYNCER_DIRECTION": "x"})


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("[[export.include]]\ncolour = 'red'", "export.include[1].colour", "unknown field"),
        (
            "[[export.include]]\napp='a'\n[[export.include]]\nmetadata = 'a b'",
            "export.include[2].metadata",
            "bad selector term 'a b'",
        ),
        ("[[import.exclude]]\nname = 5", "import.exclude[1].name", "not an integer"),
        ("[[import.exclude]]\nname = [1]", "import.exclude[1].name", "item 1 is an integer"),
        ("[[import.exclude]]\nname = []", "import.exclude[1].name", "empty array"),
        ("[[export.exclude]]\nmetadata = ''", "export.exclude[1].metadata", "empty"),
        ("[[export.exclude]]\nmetadata = 3", "export.exclude[1].metadata", "not an integer"),
        (
            "[[export.exclude]]\nmetadata = { internal = true }",
            "export.exclude[1].metadata",
            "must be a glob string",
        ),
        ("[export]\ninclude = 'shop'", "export.include", "must be an array of tables"),
        ("[export]\ninclude = ['shop']", "export.include[1]", "must be a table, not a string"),
        ("[[export.includes]]\napp = 'x'", "export.includes", "unknown key"),
        ("[[import.exclude]]\ndc = true", "import.exclude[1].dc", "not a boolean"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, toml: str, key: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, environ={}, config_file=path)
    error = str(info.value)
    assert error.startswith(f"config key {key!r} (config file {path}): "), error
    assert message in error
    assert "\n" not in error


def test_export_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('export = "all"\n')
    with pytest.raises(ConfigError, match="'export' must be a table"):
        load_config({}, environ={}, config_file=path)


def test_filter_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"config key 'import.include\[1\]\.x'"):
        filters_from_config(None, {"include": [{"x": 1}]})
    assert issubclass(FilterConfigError, ValueError)
