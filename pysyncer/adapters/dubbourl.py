"""Dubbo provider URLs <-> :class:`~pysyncer.model.Instance` (the ZooKeeper node names).

A Dubbo provider registers one node under ``/dubbo/{interface}/providers`` whose name is
its URL-encoded (Java ``URLEncoder``) URL, e.g.
``dubbo://10.0.0.1:20880/com.foo.Bar?application=app&interface=com.foo.Bar&side=provider
&version=1.0.0``. The interface is the service name, ``application`` the app and
``version`` the version; every other parameter is instance metadata (``group``
included). Model fields a URL has no place for are carried as ``pysyncer.*`` parameters
by :func:`pysyncer.adapters.fieldmap.carry`, so a copy reads back unchanged. Pure
functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from pysyncer.adapters.fieldmap import Carried, carry, restore, split_endpoint
from pysyncer.hostport import bracket_host, format_host_port
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "ESCAPE_PREFIX",
    "RESERVED_PARAMS",
    "decode_node_name",
    "encode_node_name",
    "instance_from_url",
    "instance_to_url",
    "parse_url",
]

RESERVED_PARAMS: Final = frozenset({"interface", "application", "version", "side"})
ESCAPE_PREFIX: Final = "pysyncer.prop."
"""A property whose key is a reserved parameter (or starts with this) is written under it."""

_SAFE: Final = "-_.~!$'()*,;:@/[]"  # kept as is inside parameter keys and values
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_HOST = re.compile(r"^[A-Za-z0-9._-]+$|^\[[0-9A-Fa-f:.]+\]$")
_DEFAULT_SERVICE = ServiceKey("", "", "")
# every key fieldmap.carry can add: a property of that name is always written escaped
_CARRIED_KEYS: Final = frozenset(carry(Instance(_DEFAULT_SERVICE, "", ""), frozenset()).keys())


def encode_node_name(url: str) -> str:
    """The node name of a URL, as Java's ``URLEncoder.encode(url, "UTF-8")`` writes it."""
    return quote_plus(url, safe="*").replace("~", "%7E")


def decode_node_name(name: str) -> str:
    return unquote_plus(name)


def _endpoint(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{format_host_port(host, port)}"


def _address(instance: Instance) -> tuple[str, str, int, bool]:
    """(scheme, URL host, port, whether the endpoints are fully native)."""
    if instance.endpoints:
        try:
            scheme, host, port = split_endpoint(instance.endpoints[0])
        except ValueError:
            pass
        else:
            url_host = bracket_host(host)
            if _SCHEME.match(scheme) and _HOST.match(url_host):
                native = (
                    len(instance.endpoints) == 1
                    and _endpoint(scheme, host, port) == instance.endpoints[0]
                )
                return scheme, url_host, port, native
    return "dubbo", "0.0.0.0", 0, False


def instance_to_url(instance: Instance, *, extra: dict[str, str] | None = None) -> str:
    """The provider URL of an instance (``extra``: parameters added first, e.g. side)."""
    scheme, host, port, native_endpoints = _address(instance)
    service = instance.service
    native = {"name", "app", "version"}
    if native_endpoints:
        native.add("endpoints")
    if instance.status == "UP":
        native.add("status")
    if service.environment == _DEFAULT_SERVICE.environment:
        native.add("environment")
    if service.project == _DEFAULT_SERVICE.project:
        native.add("project")
    if instance.host_name == host.strip("[]"):
        native.add("host_name")
    if (instance.health_interval, instance.health_times) == (30, 3):
        native.add("health")  # what a native provider reads as
    carried = carry(instance._replace(properties={}), frozenset(native))
    params: dict[str, str] = {"interface": service.name}
    if service.app:
        params["application"] = service.app
    params["side"] = "provider"
    if service.version:
        params["version"] = service.version
    for key, value in (extra or {}).items():
        params.setdefault(key, value)
    for key, value in instance.properties.items():
        if key in RESERVED_PARAMS or key in _CARRIED_KEYS or key.startswith(ESCAPE_PREFIX):
            key = ESCAPE_PREFIX + key
        params[key] = value
    params.update(carried)
    query = "&".join(f"{quote(k, safe=_SAFE)}={quote(v, safe=_SAFE)}" for k, v in params.items())
    path = quote(service.name, safe="-_.$")
    return f"{scheme}://{host}:{port}/{path}?{query}"


def parse_url(url: str) -> tuple[str, str, int, str, dict[str, str]]:
    """(scheme, host without brackets, port, path, params); ValueError when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{url[:80]!r} is not a URL")
    rest, _, query = rest.partition("?")
    hostport, _, path = rest.partition("/")
    hostport = hostport.rpartition("@")[2]  # user:password@ is not ours
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "0")
    port = int(port_text) if port_text.isdigit() else 0
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        if key:
            params[unquote(key)] = unquote(value)
    return scheme, host, port, unquote(path), params


def instance_from_url(url: str, interface: str = "") -> Instance:
    """The instance a provider URL describes; ValueError when it is not a URL.

    The service name is, first found: the ``interface`` parameter, the URL's path, its
    ``service`` parameter (Apache Dubbo's Python SDK writes only that, e.g.
    ``tri://10.0.0.1:50051?service=org.example.Echo``), else ``interface``: the znode
    path's interface segment the node was found under. ``service`` stays a parameter.
    Its id is the carried ``pysyncer.id`` (a copy) or else the URL itself.
    """
    scheme, host, port, path, params = parse_url(url)
    name = params.pop("interface", "") or path or params.get("service", "") or interface
    if not name:
        raise ValueError(f"{url[:80]!r} names no interface")
    app = params.pop("application", "")
    version = params.pop("version", "")
    params.pop("side", None)
    plain: dict[str, str] = {}
    escaped: dict[str, str] = {}
    for key, value in params.items():
        if key.startswith(ESCAPE_PREFIX):
            escaped[key[len(ESCAPE_PREFIX) :]] = value
        else:
            plain[key] = value
    native = Carried(
        service=ServiceKey(app, name, version),
        instance_id=url,
        host_name=host,
        endpoints=(_endpoint(scheme, host, port),) if host else (),
        status="UP",
        properties=plain,
    )
    instance = restore(native)
    if escaped:
        instance = instance._replace(properties={**instance.properties, **escaped})
    return instance
