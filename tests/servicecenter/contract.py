"""The Service-Center v4 contract the embedded registry is checked against, in one place.

Where the spec lives (``../shared/specs/servicecomb-v4.yaml`` next to the repository;
tests skip when it is absent), the spec operations the embedded registry implements
(:data:`IMPLEMENTED`), the keys it sends beyond the spec on purpose, and the spec
errata (where Service-Center itself answers another shape than its spec). Used by the
hand-written conformance test and the schemathesis run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "specs" / "servicecomb-v4.yaml"

# The spec operations the embedded registry implements (path template, method).
IMPLEMENTED = {
    ("/v4/{project}/registry/version", "get"),
    ("/v4/{project}/registry/health", "get"),
    ("/v4/{project}/registry/microservices", "get"),
    ("/v4/{project}/registry/microservices", "post"),
    ("/v4/{project}/registry/microservices", "delete"),
    ("/v4/{project}/registry/microservices/{serviceId}", "get"),
    ("/v4/{project}/registry/microservices/{serviceId}", "delete"),
    ("/v4/{project}/registry/existence", "get"),
    ("/v4/{project}/registry/microservices/{serviceId}/instances", "post"),
    ("/v4/{project}/registry/microservices/{serviceId}/instances", "get"),
    ("/v4/{project}/registry/microservices/{serviceId}/instances/{instanceId}", "get"),
    ("/v4/{project}/registry/microservices/{serviceId}/instances/{instanceId}", "delete"),
    (
        "/v4/{project}/registry/microservices/{serviceId}/instances/{instanceId}/heartbeat",
        "put",
    ),
    ("/v4/{project}/registry/microservices/{serviceId}/instances/{instanceId}/status", "put"),
    (
        "/v4/{project}/registry/microservices/{serviceId}/instances/{instanceId}/properties",
        "put",
    ),
    ("/v4/{project}/registry/heartbeats", "put"),
    ("/v4/{project}/registry/instances", "get"),
    ("/v4/{project}/govern/microservices", "get"),
    ("/v4/{project}/govern/microservices/{serviceId}", "get"),
}

# Keys we send beyond the spec's schema, on purpose (documented in docs/registry.md).
EXTRA_KEYS = {
    # The batch heartbeat's 400 body is InstancesHbRst plus the usual Error fields.
    ("/v4/{project}/registry/heartbeats", "put", 400): {"errorCode", "errorMessage", "detail"},
}

# Sent only when there is something to say (a schema summary: we store none).
CONDITIONAL_HEADERS = {"X-Schema-Summary"}

# Spec errata: where the spec's schema is not what Service-Center sends, the schema we check.
SCHEMA_ERRATA: dict[tuple[str, str, int], dict[str, Any]] = {
    # The spec reuses GetMicroServicesResponse ({"services": [...]}); Service-Center's
    # GetServiceResponse is {"service": MicroService}, which clients read.
    ("/v4/{project}/registry/microservices/{serviceId}", "get", 200): {
        "type": "object",
        "required": ["service"],
        "properties": {"service": {"$ref": "#/definitions/MicroService"}},
    },
}


def load_spec() -> dict[str, Any]:
    """The spec as a dict; skips the calling test when the file or PyYAML is absent."""
    yaml = pytest.importorskip("yaml")
    if not SPEC_PATH.exists():
        pytest.skip(f"the Service-Center spec is not at {SPEC_PATH}")
    with SPEC_PATH.open(encoding="utf-8") as handle:
        spec: dict[str, Any] = yaml.safe_load(handle)
    return spec


def implemented_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with only the implemented operations, errata applied."""
    out = copy.deepcopy(spec)
    paths: dict[str, Any] = {}
    for template, item in spec["paths"].items():
        kept = {
            key: copy.deepcopy(value)
            for key, value in item.items()
            if (template, key) in IMPLEMENTED or key == "parameters"
        }
        if set(kept) - {"parameters"}:
            paths[template] = kept
    for (template, method, status), schema in SCHEMA_ERRATA.items():
        answer = paths[template][method]["responses"]
        key = status if status in answer else str(status)
        answer[key]["schema"] = schema
    out["paths"] = paths
    return out
