"""Settings and key layouts of the etcd adapter: what its keys and values look like.

Owns the ``[adapter]`` settings of the etcd adapter (:class:`EtcdRegistrySettings`), the
addresses it accepts (:func:`parse_endpoints`) and the three key layouts (:class:`Layout`:
key of an instance, and the JSON value encoded and decoded, with the fields a layout
cannot hold carried in its metadata). Values are JSON:

- ``kratos``: ``/microservices/{name}/{id}`` -> ``{id, name, version, metadata, endpoints}``
- ``grpc``: ``{prefix}{target}/{id}`` -> ``{"Op": 0, "Addr": "host:port", "Metadata": {...}}``
- ``gomicro``: ``/micro/registry/{service}/{node id}`` -> ``{name, version, metadata,
  endpoints, nodes: [{id, address, metadata}]}``

Pure translation: it must not import gRPC, aetcd or the other etcd adapter modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

from pysyncer.adapters._retry import RETRY_MAX
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters.fieldmap import Carried, carry, restore, split_endpoint
from pysyncer.errors import ConfigError
from pysyncer.hostport import format_host_port, parse_host_port
from pysyncer.model import Instance, ServiceKey

__all__ = ["DEFAULT_PREFIX", "LAYOUTS", "EtcdRegistrySettings", "Layout", "parse_endpoints"]

DEFAULT_PREFIX: Final = {"kratos": "/microservices/", "grpc": "", "gomicro": "/micro/registry/"}
LAYOUTS: Final = tuple(DEFAULT_PREFIX)
_DEFAULT_SERVICE: Final = ServiceKey("", "", "")


@dataclass(frozen=True, slots=True)
class EtcdRegistrySettings:
    """Settings of the etcd adapter (``[adapter]`` keys with dashes)."""

    layout: str = "kratos"  # kratos | grpc | gomicro
    prefix: str = ""  # key prefix; empty: the layout's default (grpc: the whole keyspace)
    scheme: str = "grpc"  # endpoint scheme of grpc/gomicro addresses (they have none)
    request_timeout: float = 5.0  # per request and endpoint, seconds
    retry_max: float = RETRY_MAX  # largest backoff of the change feed's retries
    tls_ca: str = ""  # CA file of the etcd server's certificate (turns TLS on)
    tls_cert: str = ""  # client certificate file (etcd's --client-cert-auth), with tls-key
    tls_key: str = ""
    tls_server_name: str = ""  # name the server certificate carries, if not the host
    user: str = ""  # etcd user (auth enabled); the password from password-file or password
    password_file: str = ""
    password: str = field(default="", repr=False)  # e.g. from PYSYNCER_ADAPTER_PASSWORD

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> EtcdRegistrySettings:
        result = settings_from_mapping(cls, "etcd", settings)
        if result.layout not in LAYOUTS:
            raise ConfigError(
                f"etcd adapter: adapter.layout must be one of {', '.join(LAYOUTS)}, "
                f"got {result.layout!r}"
            )
        if result.request_timeout <= 0 or result.retry_max <= 0:
            raise ConfigError("etcd adapter: adapter.request-timeout and retry-max must be > 0")
        if not result.scheme or "://" in result.scheme:
            raise ConfigError(f"etcd adapter: adapter.scheme is not a scheme: {result.scheme!r}")
        return result

    @property
    def key_prefix(self) -> str:
        return self.prefix or DEFAULT_PREFIX[self.layout]


def parse_endpoints(addresses: Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` (also ``http://``, ``etcd://``, comma-separated) -> (host, port)."""
    endpoints: list[tuple[str, int]] = []
    for address in addresses:
        for part in str(address).split(","):
            text = part.strip().split("://", 1)[-1].split("/", 1)[0]
            if not text:
                continue
            try:
                host, port = parse_host_port(text)
            except ValueError:
                port = 0
            if port == 0:
                raise ConfigError(f"etcd adapter: address {part!r} is not host:port")
            endpoints.append((host, port))
    if not endpoints:
        raise ConfigError("etcd adapter: at least one address host:port is required")
    return endpoints


def _string_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("metadata is not an object")
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in value.items()
    }


def _hostport(endpoint: str) -> tuple[str, str] | None:
    """(scheme, ``host:port``) of ``scheme://host:port`` when exactly that, else None."""
    try:
        scheme, host, port = split_endpoint(endpoint)
    except ValueError:
        return None
    text = format_host_port(host, port)
    return (scheme, text) if endpoint == f"{scheme}://{text}" else None


class Layout:
    """One registry's key and value shapes (see the module docstring)."""

    def __init__(self, name: str, prefix: str, scheme: str) -> None:
        self.name = name
        self.prefix = prefix
        self.scheme = scheme

    def key(self, service_name: str, instance_id: str) -> str:
        if self.name == "gomicro":
            return f"{self.prefix}{service_name.replace('/', '-')}/{instance_id.replace('/', '-')}"
        if self.name == "grpc":
            return f"{self.prefix}{service_name}/{quote(instance_id, safe='')}"
        return f"{self.prefix}{service_name}/{instance_id}"

    def service_prefix(self, service_name: str) -> str:
        return self.key(service_name, "x")[:-1]

    def encode(self, instance: Instance) -> bytes:
        service = instance.service
        native = {"name", "instance_id"}
        if service.environment == _DEFAULT_SERVICE.environment:
            native.add("environment")
        if service.project == _DEFAULT_SERVICE.project:
            native.add("project")
        if service.app == "":
            native.add("app")
        if instance.status == "UP":
            native.add("status")
        if (instance.health_interval, instance.health_times) == (30, 3):
            native.add("health")
        first = _hostport(instance.endpoints[0]) if instance.endpoints else None
        host = parse_host_port(first[1]).host if first else ""
        if self.name == "kratos":
            native |= {"version", "endpoints"}
            if instance.host_name == host:
                native.add("host_name")
            meta = carry(instance, frozenset(native))
            value: dict[str, Any] = {
                "id": instance.instance_id,
                "name": service.name,
                "version": service.version,
                "metadata": meta,
                "endpoints": list(instance.endpoints),
            }
        else:
            addr = first[1] if first else ""
            if len(instance.endpoints) == 1 and first is not None and first[0] == self.scheme:
                native.add("endpoints")
            if instance.host_name == host:
                native.add("host_name")
            if self.name == "grpc":
                if "/" in instance.instance_id or not instance.instance_id:
                    native.discard("instance_id")
                if service.version == "":
                    native.add("version")
                meta = carry(instance, frozenset(native))
                value = {"Op": 0, "Addr": addr, "Metadata": meta}
            else:
                native.add("version")
                if "/" in instance.instance_id:
                    native.discard("instance_id")
                meta = carry(instance, frozenset(native))
                value = {
                    "name": service.name,
                    "version": service.version,
                    "metadata": {},
                    "endpoints": [],
                    "nodes": [{"id": instance.instance_id, "address": addr, "metadata": meta}],
                }
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, key: str, raw: bytes) -> Instance:
        """The instance a key holds; ValueError when it is not one of this layout."""
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        if self.name == "kratos":
            name, iid, version = value.get("name"), value.get("id"), value.get("version", "")
            endpoints = value.get("endpoints") or []
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
                raise ValueError("endpoints is not a list of strings")
            props = _string_map(value.get("metadata"))
            first = _hostport(endpoints[0]) if endpoints else None
            native_endpoints = tuple(endpoints)
        elif self.name == "grpc":
            rest = key[len(self.prefix) :]
            name, _, id_text = rest.rpartition("/")
            iid, version = unquote(id_text), ""
            addr = value.get("Addr")
            if value.get("Op", 0) != 0 or not isinstance(addr, str):
                raise ValueError("not a grpc naming endpoint")
            metadata = value.get("Metadata")
            if metadata is None or isinstance(metadata, dict):
                props = _string_map(metadata)
            else:
                props = {"grpc.metadata": json.dumps(metadata, separators=(",", ":"))}
            native_endpoints = (f"{self.scheme}://{addr}",) if addr else ()
            first = (self.scheme, addr) if addr else None
        else:
            name, version = value.get("name"), value.get("version", "")
            nodes = value.get("nodes")
            if not isinstance(nodes, list) or not nodes or not isinstance(nodes[0], dict):
                raise ValueError("no nodes")
            node = nodes[0]
            iid, addr = node.get("id"), node.get("address", "")
            if not isinstance(addr, str):
                raise ValueError("node address is not a string")
            props = {**_string_map(value.get("metadata")), **_string_map(node.get("metadata"))}
            native_endpoints = (f"{self.scheme}://{addr}",) if addr else ()
            first = (self.scheme, addr) if addr else None
        if not isinstance(name, str) or not name or not isinstance(iid, str) or not iid:
            raise ValueError("no service name or instance id")
        if not isinstance(version, str):
            raise ValueError("version is not a string")
        host = parse_host_port(first[1]).host if first else ""
        return restore(
            Carried(
                service=ServiceKey("", name, version),
                instance_id=iid,
                host_name=host,
                endpoints=native_endpoints,
                status="UP",
                properties=props,
            )
        )
