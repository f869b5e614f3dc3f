"""Which instances a syncer exports and imports: include/exclude rules and its direction.

Owns the decision only: a :class:`Rule` matches instances by data center, service key
fields (globs, :func:`fnmatch.fnmatchcase` semantics) and a metadata :class:`Selector`; a
:class:`Filter` holds one direction's include and exclude rules; :class:`Filters` holds both
directions and whether this syncer sends, receives or both. Pure: no I/O, no logging; the
engine asks it and acts. Decisions are cached per (data center, service key), so only the
metadata selectors run per instance, and per data center whether anything of it can be
imported at all (a syncer follows no data center it imports nothing from).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from pysyncer.model import Instance, ServiceKey

__all__ = [
    "DIRECTIONS",
    "Filter",
    "FilterConfigError",
    "Filters",
    "Rule",
    "Selector",
    "filters_from_config",
]

DIRECTIONS: Final = ("both", "send", "receive")
RULE_FIELDS: Final = ("dc", "app", "project", "environment", "name", "version", "metadata")
_GLOB_FIELDS: Final = RULE_FIELDS[:-1]
_MAGIC = re.compile(r"[*?\[]")
_PLAN_CACHE_LIMIT = 65_536  # (dc, service) decisions kept; cleared when full

Matcher = Callable[[str], object]  # truthy when the text matches
Globs = str | Sequence[str] | None


class FilterConfigError(ValueError):
    """A filter setting is invalid; ``key`` is its dotted config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key
        self.message = message


def _compile_globs(globs: tuple[str, ...]) -> Matcher | None:
    """One matcher for "any of these globs"; None when one of them is ``*`` (anything)."""
    if "*" in globs:
        return None
    if not any(_MAGIC.search(glob) for glob in globs):
        return frozenset(globs).__contains__
    return re.compile("|".join(fnmatch.translate(glob) for glob in globs)).match


def _globs(value: object, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        raise TypeError(f"{what}: {value!r} is not a glob string or a sequence of them")
    items = tuple(value)
    if not items:
        raise ValueError(f"{what}: an empty list matches nothing; leave the field out instead")
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what}: {item!r} is not a glob string")
    return items


# --- metadata selectors -------------------------------------------------------------

_KEY = r"[^\s=!,()]+"
_TERM_EQ = re.compile(rf"({_KEY})\s*(==|=|!=)\s*(.*)")
_TERM_SET = re.compile(rf"({_KEY})\s+(in|notin)\s*\((.*)\)")
_TERM_KEY = re.compile(rf"(!?)\s*({_KEY})")
_EXISTS, _ABSENT, _EQUALS, _DIFFERS = "exists", "!exists", "=", "!="


class _Requirement:
    __slots__ = ("key", "kind", "matcher", "values")

    def __init__(self, key: str, kind: str, values: tuple[str, ...] = ()) -> None:
        self.key = key
        self.kind = kind
        self.values = values
        self.matcher = _compile_globs(values) if values else None

    def matches(self, properties: Mapping[str, str]) -> bool:
        value = properties.get(self.key)
        if self.kind == _EXISTS:
            return value is not None
        if self.kind == _ABSENT:
            return value is None
        hit = value is not None and (self.matcher is None or bool(self.matcher(value)))
        return hit if self.kind == _EQUALS else not hit

    def text(self) -> str:
        if self.kind == _EXISTS:
            return self.key
        if self.kind == _ABSENT:
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{self.kind}{self.values[0]}"
        return f"{self.key} {'in' if self.kind == _EQUALS else 'notin'} ({','.join(self.values)})"


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` is two terms)."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _parse_term(term: str) -> _Requirement:
    if match := _TERM_SET.fullmatch(term):
        key, op, inner = match.groups()
        values = tuple(value.strip() for value in inner.split(","))
        if "(" in inner or ")" in inner or not all(values):
            raise ValueError(f"bad value list in {term!r}: write key in (a,b)")
        return _Requirement(key, _EQUALS if op == "in" else _DIFFERS, values)
    if match := _TERM_EQ.fullmatch(term):
        key, op, value = match.groups()
        return _Requirement(key, _DIFFERS if op == "!=" else _EQUALS, (value.strip(),))
    if match := _TERM_KEY.fullmatch(term):
        bang, key = match.groups()
        return _Requirement(key, _ABSENT if bang else _EXISTS)
    raise ValueError(
        f"bad selector term {term!r}: use key=glob, key!=glob, key, !key, "
        "key in (a,b) or key notin (a,b)"
    )


class Selector:
    """A metadata selector, Kubernetes label-selector style, with globs in values.

    Terms are joined by commas and all must hold: ``key=glob`` (present and matching;
    ``==`` too), ``key!=glob`` (absent or not matching), ``key`` (present), ``!key``
    (absent), ``key in (g1,g2)`` and ``key notin (g1,g2)``. A mapping ``{key: glob}`` means
    ``key=glob`` for each entry.
    """

    __slots__ = ("_requirements", "text")

    def __init__(self, spec: object) -> None:
        if isinstance(spec, str):
            terms = [term.strip() for term in _split_terms(spec)]
            if not spec.strip():
                raise ValueError("the selector is empty; leave it out to match any metadata")
            if not all(terms):
                raise ValueError(f"empty term in selector {spec!r}")
            requirements = tuple(_parse_term(term) for term in terms)
        elif isinstance(spec, Mapping):
            if not spec:
                raise ValueError("the selector is empty; leave it out to match any metadata")
            for key, value in spec.items():
                if not isinstance(key, str) or not key:
                    raise ValueError(f"metadata key {key!r} must be a non-empty string")
                if not isinstance(value, str):
                    raise ValueError(
                        f"metadata {key!r}: {value!r} must be a glob string "
                        f'(metadata values are text: write "{value}")'
                    )
            requirements = tuple(_Requirement(k, _EQUALS, (v,)) for k, v in spec.items())
        else:
            raise ValueError(f"must be a selector string or a table, not {_type_name(spec)}")
        self._requirements = requirements
        self.text = ",".join(requirement.text() for requirement in requirements)

    def matches(self, properties: Mapping[str, str]) -> bool:
        for requirement in self._requirements:  # noqa: SIM110 - per instance; all() is slower
            if not requirement.matches(properties):
                return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"


# --- rules ----------------------------------------------------------------------------


class Rule:
    """Matches instances whose every given field matches; an omitted field matches anything.

    ``dc`` is the data center the rule applies to: the local one for export rules, the
    instance's origin for import rules. ``project`` is ServiceComb's ``domain/project``
    (a namespace elsewhere), ``name`` the service name. Each glob field takes one glob or
    a sequence of globs (any may match); ``metadata`` takes a :class:`Selector` or its spec.
    """

    __slots__ = (
        "_key_checks",
        "app",
        "dc",
        "dc_matcher",
        "environment",
        "metadata",
        "name",
        "project",
        "version",
    )

    dc: tuple[str, ...] | None
    app: tuple[str, ...] | None
    project: tuple[str, ...] | None
    environment: tuple[str, ...] | None
    name: tuple[str, ...] | None
    version: tuple[str, ...] | None
    metadata: Selector | None

    def __init__(
        self,
        *,
        dc: Globs = None,
        app: Globs = None,
        project: Globs = None,
        environment: Globs = None,
        name: Globs = None,
        version: Globs = None,
        metadata: Selector | str | Mapping[str, str] | None = None,
    ) -> None:
        self.dc = _globs(dc, "dc")
        self.app = _globs(app, "app")
        self.project = _globs(project, "project")
        self.environment = _globs(environment, "environment")
        self.name = _globs(name, "name")
        self.version = _globs(version, "version")
        if metadata is None or isinstance(metadata, Selector):
            self.metadata = metadata
        else:
            self.metadata = Selector(metadata)
        self.dc_matcher = None if self.dc is None else _compile_globs(self.dc)
        checks: list[tuple[str, Matcher]] = []
        for field in ("app", "project", "environment", "name", "version"):
            globs: tuple[str, ...] | None = getattr(self, field)
            matcher = None if globs is None else _compile_globs(globs)
            if matcher is not None:
                checks.append((field, matcher))
        self._key_checks = tuple(checks)

    def applies_to(self, dc: str) -> bool:
        """True when the rule's ``dc`` glob matches (or it has none)."""
        return self.dc_matcher is None or bool(self.dc_matcher(dc))

    def covers(self, dc: str) -> bool:
        """True when the rule matches every instance of data center ``dc``: it applies to
        ``dc`` and no other field narrows it (a ``*`` glob does not)."""
        return self.applies_to(dc) and not self._key_checks and self.metadata is None

    def matches_service(self, dc: str, service: ServiceKey) -> bool:
        """The data center and service key part of the rule (everything but metadata)."""
        if self.dc_matcher is not None and not self.dc_matcher(dc):
            return False
        for field, matcher in self._key_checks:  # noqa: SIM110 - all() is slower here
            if not matcher(getattr(service, field)):
                return False
        return True

    def matches(self, dc: str, instance: Instance) -> bool:
        """True when the whole rule matches ``instance`` seen in (or from) data center ``dc``."""
        return self.matches_service(dc, instance.service) and (
            self.metadata is None or self.metadata.matches(instance.properties)
        )

    def to_dict(self) -> dict[str, Any]:
        """The given fields, as in the config file (globs as one string or a list)."""
        out: dict[str, Any] = {}
        for field in _GLOB_FIELDS:
            globs: tuple[str, ...] | None = getattr(self, field)
            if globs is not None:
                out[field] = globs[0] if len(globs) == 1 else list(globs)
        if self.metadata is not None:
            out["metadata"] = self.metadata.text
        return out

    def describe(self) -> str:
        """``app='shop' name='order*'``; ``(everything)`` for a rule without fields."""
        parts = [f"{key}={value!r}" for key, value in self.to_dict().items()]
        return " ".join(parts) or "(everything)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.describe())

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.to_dict().items())
        return f"Rule({args})"


# --- one direction ----------------------------------------------------------------------

# A plan is the decision for one (dc, service): True/False, or the metadata checks left:
# (include selectors, None when already included; exclude selectors).
_Plan = bool | tuple[tuple[Selector, ...] | None, tuple[Selector, ...]]


class Filter:
    """Include and exclude rules of one direction.

    An instance passes when (there are no include rules, or any include rule matches it)
    and no exclude rule matches it: exclude wins.
    """

    __slots__ = ("_plans", "exclude", "include")

    def __init__(self, include: Iterable[Rule] = (), exclude: Iterable[Rule] = ()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._plans: dict[tuple[str, ServiceKey], _Plan] = {}

    @property
    def empty(self) -> bool:
        return not self.include and not self.exclude

    def passes(self, dc: str, instance: Instance) -> bool:
        """The decision for ``instance`` of (exported by, or imported from) ``dc``."""
        if not self.include and not self.exclude:
            return True
        key = (dc, instance.service)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(dc, instance.service)
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        if isinstance(plan, bool):
            return plan
        include, exclude = plan
        properties = instance.properties
        if include is not None:
            for selector in include:
                if selector.matches(properties):
                    break
            else:
                return False
        for selector in exclude:  # noqa: SIM110 - per instance; all() is slower
            if selector.matches(properties):
                return False
        return True

    def passes_service(self, dc: str, service: ServiceKey) -> bool | None:
        """The decision for every instance of ``service`` of ``dc``: True (all pass), False
        (none passes), or None when it depends on their metadata."""
        if not self.include and not self.exclude:
            return True
        key = (dc, service)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(dc, service)
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        return plan if isinstance(plan, bool) else None

    def _plan(self, dc: str, service: ServiceKey) -> _Plan:
        include: tuple[Selector, ...] | None = None
        if self.include:
            selectors: list[Selector] = []
            for rule in self.include:
                if rule.matches_service(dc, service):
                    if rule.metadata is None:
                        break  # included whatever the metadata
                    selectors.append(rule.metadata)
            else:
                if not selectors:
                    return False
                include = tuple(selectors)
        exclude: list[Selector] = []
        for rule in self.exclude:
            if rule.matches_service(dc, service):
                if rule.metadata is None:
                    return False
                exclude.append(rule.metadata)
        if include is None and not exclude:
            return True
        return include, tuple(exclude)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "include": [rule.to_dict() for rule in self.include],
            "exclude": [rule.to_dict() for rule in self.exclude],
        }

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Filter)
            and other.include == self.include
            and other.exclude == self.exclude
        )

    def __hash__(self) -> int:
        return hash((self.include, self.exclude))

    def __repr__(self) -> str:
        return f"Filter(include={list(self.include)!r}, exclude={list(self.exclude)!r})"


# --- both directions ---------------------------------------------------------------------


class Filters:
    """Export and import filters of one syncer, and whether it sends, receives or both.

    ``dc`` is this syncer's data center: export rules with a ``dc`` glob apply only when it
    matches. ``direction`` ``"send"`` never imports; ``"receive"`` exports nothing.
    """

    __slots__ = ("_dcs", "dc", "direction", "export", "import_", "receives", "sends")

    def __init__(
        self,
        export: Filter | None = None,
        import_: Filter | None = None,
        direction: str = "both",
        dc: str = "",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"{direction!r} must be one of both, send, receive")
        self.export = export if export is not None else Filter()
        self.import_ = import_ if import_ is not None else Filter()
        self.direction = direction
        self.dc = dc
        self.sends = direction != "receive"
        self.receives = direction != "send"
        self._dcs: dict[str, bool] = {}  # imports_dc, per origin data center

    def exports(self, instance: Instance) -> bool:
        """True when this syncer publishes ``instance`` (one registered in its own dc)."""
        return self.sends and self.export.passes(self.dc, instance)

    def imports(self, origin_dc: str, instance: Instance) -> bool:
        """True when this syncer keeps a copy of ``instance`` from data center ``origin_dc``."""
        return self.receives and self.import_.passes(origin_dc, instance)

    def imports_service(self, origin_dc: str, service: ServiceKey) -> bool | None:
        """:meth:`imports` for every instance of ``service`` from ``origin_dc`` at once:
        True (all are imported), False (none is), None (it depends on their metadata)."""
        if not self.receives:
            return False
        return self.import_.passes_service(origin_dc, service)

    def imports_dc(self, origin_dc: str) -> bool:
        """False when no instance of ``origin_dc`` can be imported, whatever its service
        and metadata: there is nothing to follow that data center for. True otherwise,
        also when it is only unknown (a rule naming the data center and another field)."""
        known = self._dcs.get(origin_dc)
        if known is None:
            if len(self._dcs) >= _PLAN_CACHE_LIMIT:
                self._dcs.clear()
            known = self._dcs[origin_dc] = not self.not_imported_reason(origin_dc)
        return known

    def not_imported_reason(self, origin_dc: str) -> str:
        """Why nothing of ``origin_dc`` can be imported ("" when something may be)."""
        if not self.receives:
            return f"direction is {self.direction!r}: nothing is imported"
        rules = self.import_
        if rules.include and not any(rule.applies_to(origin_dc) for rule in rules.include):
            return f"no import.include rule applies to data center {origin_dc!r}"
        for index, rule in enumerate(rules.exclude, 1):
            if rule.covers(origin_dc):
                return f"import.exclude[{index}] ({rule.describe()}) refuses all of it"
        return ""

    @property
    def has_rules(self) -> bool:
        return not (self.export.empty and self.import_.empty)

    def unused_rules(
        self,
        local: Iterable[Instance] = (),
        remote: Iterable[tuple[str, Instance]] | None = None,
    ) -> list[str]:
        """One line per rule that matched none of the given instances, in config order.

        Export rules are checked against ``local`` (this data center's instances), import
        rules against ``remote`` (origin dc, instance) pairs; with ``remote`` None, import
        rules are not judged (nothing is known of the other data centers yet). Rules
        that can never apply here (their ``dc`` does not match this data center, or the
        direction turns their side off) are reported with that reason.
        """
        local = list(local)
        out: list[str] = []
        for kind, rules in (("include", self.export.include), ("exclude", self.export.exclude)):
            for index, rule in enumerate(rules, 1):
                label = f"export.{kind}[{index}] ({rule.describe()})"
                if not self.sends:
                    out.append(f"{label}: ignored, direction is {self.direction!r}")
                elif not rule.applies_to(self.dc):
                    out.append(f"{label}: never applies, this data center is {self.dc!r}")
                elif not any(rule.matches(self.dc, instance) for instance in local):
                    out.append(f"{label}: matched none of {len(local)} local instances")
        pairs = None if remote is None else list(remote)
        for kind, rules in (("include", self.import_.include), ("exclude", self.import_.exclude)):
            for index, rule in enumerate(rules, 1):
                label = f"import.{kind}[{index}] ({rule.describe()})"
                if not self.receives:
                    out.append(f"{label}: ignored, direction is {self.direction!r}")
                elif pairs is not None and not any(rule.matches(dc, i) for dc, i in pairs):
                    out.append(f"{label}: matched none of {len(pairs)} remote instances")
        return out

    def to_dict(self) -> dict[str, Any]:
        """For status pages: direction and rules as in the config file."""
        return {
            "direction": self.direction,
            "export": self.export.to_dict(),
            "import": self.import_.to_dict(),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filters) and (
            other.export,
            other.import_,
            other.direction,
            other.dc,
        ) == (self.export, self.import_, self.direction, self.dc)

    def __hash__(self) -> int:
        return hash((self.export, self.import_, self.direction, self.dc))

    def __repr__(self) -> str:
        return (
            f"Filters(export={self.export!r}, import_={self.import_!r}, "
            f"direction={self.direction!r}, dc={self.dc!r})"
        )


# --- from the config file ------------------------------------------------------------------


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", dict: "a table"}
    names |= {list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _rule_from_table(table: Any, key: str) -> Rule:
    if not isinstance(table, Mapping):
        raise FilterConfigError(key, f"must be a table, not {_type_name(table)}")
    for field in table:
        if field not in RULE_FIELDS:
            raise FilterConfigError(
                f"{key}.{field}", f"unknown field; a rule has {', '.join(RULE_FIELDS)}"
            )
    arguments: dict[str, Any] = {}
    for field in _GLOB_FIELDS:
        if field not in table:
            continue
        value = table[field]
        if isinstance(value, list):
            if not value:
                raise FilterConfigError(
                    f"{key}.{field}", "an empty array matches nothing; leave the field out"
                )
            for index, item in enumerate(value, 1):
                if not isinstance(item, str):
                    raise FilterConfigError(
                        f"{key}.{field}", f"item {index} is {_type_name(item)}, not a glob string"
                    )
        elif not isinstance(value, str):
            raise FilterConfigError(
                f"{key}.{field}",
                f"must be a glob string or an array of them, not {_type_name(value)}",
            )
        arguments[field] = value
    if "metadata" in table:
        try:
            arguments["metadata"] = Selector(table["metadata"])
        except ValueError as exc:
            raise FilterConfigError(f"{key}.metadata", str(exc)) from None
    return Rule(**arguments)


def _filter_from_table(table: Any, side: str) -> Filter:
    if table is None:
        return Filter()
    if not isinstance(table, Mapping):
        raise FilterConfigError(side, f"must be a table ([[{side}.include]]), not a value")
    for kind in table:
        if kind not in ("include", "exclude"):
            raise FilterConfigError(f"{side}.{kind}", "unknown key; use include or exclude")
    lists: dict[str, list[Rule]] = {"include": [], "exclude": []}
    for kind, rules in lists.items():
        entries = table.get(kind, [])
        if not isinstance(entries, list):
            raise FilterConfigError(
                f"{side}.{kind}", f"must be an array of tables ([[{side}.{kind}]])"
            )
        for index, entry in enumerate(entries, 1):
            rules.append(_rule_from_table(entry, f"{side}.{kind}[{index}]"))
    return Filter(lists["include"], lists["exclude"])


def filters_from_config(
    export: Any = None, import_: Any = None, *, direction: str = "both", dc: str = ""
) -> Filters:
    """Build :class:`Filters` from the config file's ``export`` and ``import`` tables.

    Each table has ``include`` and ``exclude`` arrays of rule tables (numbered from 1 in
    error messages). Raises :class:`FilterConfigError` naming the exact key.
    """
    return Filters(
        _filter_from_table(export, "export"),
        _filter_from_table(import_, "import"),
        direction=direction,
        dc=dc,
    )
