"""Settings and encoding of the Consul adapter: what Consul's service records hold.

Owns the ``[adapter]`` settings of the Consul adapter (:class:`ConsulSettings`), the
encoding of model fields into Consul's limited service ``Meta`` and back, the endpoint a
native service reads as, the status of a health entry (the worst of its checks), and the
``X-Consul-Index`` header.

Meta: keys outside ``[A-Za-z0-9-]`` are escaped (``_`` + hex of each UTF-8 byte), and
pairs that still do not fit (64 pairs, keys <= 128, values <= 512 bytes) travel as one
JSON document split over ``_pysyncer<n>`` keys; what cannot fit at all is a
ConflictError. Native services' Meta is read as is.

Pure translation: it must not do HTTP or import the other Consul adapter modules.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pysyncer.adapters._retry import RETRY_MAX
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters.base import BadResponseError, ConflictError, LocalRef
from pysyncer.adapters.fieldmap import STATUS_FROM_KIND, Carried, restore
from pysyncer.errors import ConfigError
from pysyncer.hostport import bracket_host
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "MARK_KEY",
    "MAX_META_PAIRS",
    "NATIVE_PROJECT",
    "ConsulSettings",
    "consul_index",
    "decode_meta",
    "encode_meta",
    "go_duration",
    "native_endpoint",
    "read_health_entry",
]

log = logging.getLogger(__name__)

MAX_META_PAIRS: Final = 64
MAX_META_KEY: Final = 128
MAX_META_VALUE: Final = 512
NATIVE_PROJECT: Final = "default/default"
NATIVE_SCHEME: Final = "rest"
MARK_KEY: Final = "_pysyncer"  # "1" on every copy; '_p' is never an escape, so no clash
PACK_KEY: Final = "_pysyncer"  # + chunk number
_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE_RE: Final = re.compile(r"_([0-9A-F]{2})")
_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    """Settings of the Consul adapter (``[adapter]`` table; all have defaults)."""

    mode: str = "agent"
    node: str = ""  # catalog mode: the synthetic node of the copies ("" = pysyncer-<dc>)
    node_address: str = "127.0.0.1"
    datacenter: str = ""
    token: str = ""
    wait: float = 300.0  # blocking-query wait, seconds (Consul caps it at 600)
    min_query_interval: float = 0.1  # per watcher, between two blocking queries
    deregister_after: int = 60  # agent mode: DeregisterCriticalServiceAfter, seconds
    include_consul: bool = False  # list Consul's own "consul" service too
    concurrency: int = 16
    timeout: float = 10.0
    connect_timeout: float = 3.0
    max_body: int = 16 * 1024 * 1024
    retry_max: float = RETRY_MAX
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ConsulSettings:
        result = settings_from_mapping(cls, "consul", settings)
        if result.mode not in {"agent", "catalog"}:
            raise ConfigError(f"consul adapter: adapter.mode is agent or catalog: {result.mode!r}")
        if not 0 < result.wait <= 600:
            raise ConfigError("consul adapter: adapter.wait must be in (0, 600] seconds")
        if result.min_query_interval < 0.01:
            raise ConfigError("consul adapter: adapter.min-query-interval must be >= 0.01")
        if result.deregister_after < 60:
            raise ConfigError("consul adapter: adapter.deregister-after: Consul's minimum is 60 s")
        if result.concurrency < 1:
            raise ConfigError("consul adapter: adapter.concurrency must be >= 1")
        return result


def _escape(key: str) -> str:
    out = []
    for char in key:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"_{b:02X}" for b in char.encode())
    text = "".join(out)
    if text.lower().startswith("consul-"):
        text = f"_{ord(text[0]):02X}{text[1:]}"
    return text


def _unescape(key: str) -> str:
    if "_" not in key:
        return key
    raw = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(key):
        raw += key[pos : match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += key[pos:].encode()
    if "_" in key[pos:]:
        raise ValueError(f"meta key {key!r} is not an escaped key")
    return raw.decode()


def _chunks(packed: Mapping[str, str]) -> list[str]:
    if not packed:
        return []
    text = json.dumps(dict(packed), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return [text[i : i + MAX_META_VALUE] for i in range(0, len(text), MAX_META_VALUE)]


def encode_meta(values: Mapping[str, str]) -> dict[str, str]:
    """Consul ``Meta`` holding ``values`` exactly; ConflictError when it cannot fit."""
    direct: list[tuple[str, str, str]] = []
    packed: dict[str, str] = {}
    for key, value in sorted(values.items()):
        escaped = _escape(key)
        if 0 < len(escaped) <= MAX_META_KEY and len(value.encode()) <= MAX_META_VALUE:
            direct.append((escaped, key, value))
        else:
            packed[key] = value
    chunks = _chunks(packed)
    while 1 + len(direct) + len(chunks) > MAX_META_PAIRS and direct:
        _, key, value = direct.pop()
        packed[key] = value
        chunks = _chunks(packed)
    if 1 + len(direct) + len(chunks) > MAX_META_PAIRS:
        size = sum(len(k) + len(v) for k, v in values.items())
        raise ConflictError(
            f"consul: {len(values)} metadata pairs ({size} characters) do not fit in "
            f"service Meta ({MAX_META_PAIRS} pairs, values <= {MAX_META_VALUE} bytes)",
            code="meta-too-large",
        )
    meta = {escaped: value for escaped, _, value in direct}
    meta[MARK_KEY] = "1"
    for n, chunk in enumerate(chunks):
        meta[f"{PACK_KEY}{n}"] = chunk
    return meta


def decode_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """The values :func:`encode_meta` stored; a Meta without the mark is returned as is."""
    if MARK_KEY not in meta:
        return dict(meta)
    values: dict[str, str] = {}
    chunks: dict[int, str] = {}
    for key, value in meta.items():
        if key == MARK_KEY:
            continue
        if key.startswith(PACK_KEY) and key[len(PACK_KEY) :].isdigit():
            chunks[int(key[len(PACK_KEY) :])] = value
            continue
        values[_unescape(key)] = value
    if chunks:
        if sorted(chunks) != list(range(len(chunks))):
            raise ValueError("meta: packed chunks are missing")
        packed = json.loads("".join(chunks[n] for n in range(len(chunks))))
        if not isinstance(packed, dict):
            raise ValueError("meta: packed value is not an object")
        values.update({str(k): str(v) for k, v in packed.items()})
    return values


def native_endpoint(address: str, port: int) -> str:
    """The one endpoint a native Consul service instance reads as."""
    host = bracket_host(address)
    return f"{NATIVE_SCHEME}://{host}:{port}"


def go_duration(seconds: int) -> str:
    """Seconds as a Go duration (``"60s"``; at least one second)."""
    return f"{max(1, seconds)}s"


def read_health_entry(entry: Any) -> tuple[Instance, LocalRef, bool]:
    """The instance of one ``/v1/health/service`` entry, its ref, and whether it is a copy.

    The status is the worst of the entry's checks; a copy's Meta is decoded (a Meta that
    does not decode is read as is, with a warning); a native service's Meta is read as is.
    """
    if not isinstance(entry, dict):
        raise BadResponseError("consul health entry: expected an object")
    node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
    if not isinstance(node, dict) or not isinstance(service, dict):
        raise BadResponseError("consul health entry: Node/Service missing")
    sid, name, port = service.get("ID"), service.get("Service"), service.get("Port", 0)
    if not isinstance(sid, str) or not isinstance(name, str) or not sid or not name:
        raise BadResponseError("consul health entry: Service.ID/Service missing")
    if isinstance(port, bool) or not isinstance(port, int):
        raise BadResponseError(f"consul service {sid}: Port is not an integer")
    address = service.get("Address") or node.get("Address") or ""
    meta_raw = service.get("Meta") or {}
    if not isinstance(meta_raw, dict) or not isinstance(address, str):
        raise BadResponseError(f"consul service {sid}: bad Meta/Address")
    meta = {str(k): str(v) for k, v in meta_raw.items()}
    try:
        props = decode_meta(meta)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("consul service %s: undecodable pysyncer Meta (%s): read as is", sid, exc)
        props = meta
    worst = "passing"
    for check in checks or []:
        status = check.get("Status") if isinstance(check, dict) else None
        if isinstance(status, str) and _SEVERITY.get(status, 0) > _SEVERITY[worst]:
            worst = status
    native = Carried(
        service=ServiceKey("", name, "", "", NATIVE_PROJECT),
        instance_id=sid,
        host_name=str(node.get("Node") or ""),
        endpoints=(native_endpoint(address, port),),
        status=STATUS_FROM_KIND["consul"].get(worst, "DOWN"),
        properties=props,
    )
    return restore(native), LocalRef(name, sid), MARK_KEY in meta


def consul_index(headers: Mapping[str, str]) -> int:
    """The ``X-Consul-Index`` of an answer (0 when absent or not a number)."""
    raw = headers.get("X-Consul-Index", "")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0
