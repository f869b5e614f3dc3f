"""Spec conformance: live responses checked against specs/servicecomb-v4.yaml.

Every implemented operation of the official Service-Center v4 (swagger 2.0) spec is
called on a live server; the status must be one the spec declares for the operation,
the body must validate against the declared response schema (with the spec's
definitions), declared headers must be present, and every key we send must be declared
in the schema. Key names are compared case-insensitively: the spec writes
``AllServicesDetail``/``microservice`` where Service-Center sends
``allServicesDetail``/``microService`` (Go decodes JSON keys case-insensitively).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer, build_app
from tests.servicecenter.contract import (
    CONDITIONAL_HEADERS,
    EXTRA_KEYS,
    IMPLEMENTED,
    SCHEMA_ERRATA,
    load_spec,
)

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.timeout(30)


def resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        schema = spec["definitions"][name]
    return schema


def undeclared_keys(
    spec: Mapping[str, Any], schema: Mapping[str, Any], value: Any, where: str = "$"
) -> list[str]:
    """Keys of ``value`` that ``schema`` does not declare (case-insensitive), recursively."""
    schema = resolve(spec, schema)
    found: list[str] = []
    if isinstance(value, dict):
        props = {str(k).lower(): v for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key.lower())
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                found.append(f"{where}.{key}")
            else:
                found.extend(undeclared_keys(spec, sub, item, f"{where}.{key}"))
    elif isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found.extend(undeclared_keys(spec, schema["items"], item, f"{where}[{n}]"))
    return found


def case_to_spec(spec: Mapping[str, Any], schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with keys renamed to the spec's spelling, so jsonschema checks their types."""
    schema = resolve(spec, schema)
    if isinstance(value, dict):
        props = {str(k).lower(): (str(k), v) for k, v in schema.get("properties", {}).items()}
        out = {}
        for key, item in value.items():
            name, sub = props.get(key.lower(), (key, schema.get("additionalProperties", {})))
            out[name] = case_to_spec(spec, sub if isinstance(sub, dict) else {}, item)
        return out
    if isinstance(value, list) and "items" in schema:
        return [case_to_spec(spec, schema["items"], item) for item in value]
    return value


class Checker:
    def __init__(self, spec: dict[str, Any], session: aiohttp.ClientSession, url: str) -> None:
        self.spec = spec
        self.session = session
        self.url = url
        self.covered: set[tuple[str, str, int]] = set()

    async def call(
        self,
        template: str,
        method: str,
        *,
        path: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        expect: int = 200,
    ) -> tuple[Any, Mapping[str, str]]:
        operation = self.spec["paths"][template][method]
        url = self.url + template.format(project="default", **(path or {}))
        async with self.session.request(
            method.upper(), url, params=params, json=body, headers=headers
        ) as response:
            raw = await response.read()
            data = await response.json() if raw else None
            status, got_headers = response.status, response.headers
        assert status == expect, (template, method, status, data)
        declared = {int(code): value for code, value in operation["responses"].items()}
        assert status in declared, f"{method} {template}: {status} is not in the spec"
        answer = declared[status]
        for header in set(answer.get("headers", {})) - CONDITIONAL_HEADERS:
            assert header in got_headers, f"{method} {template}: missing header {header}"
        schema = SCHEMA_ERRATA.get((template, method, status), answer.get("schema"))
        if schema is None:
            assert data is None or status >= 400, f"{method} {template}: unexpected body"
        else:
            assert data is not None, f"{method} {template}: {status} needs a body"
            root = {"definitions": self.spec["definitions"], **schema}
            jsonschema.Draft4Validator(root).validate(case_to_spec(self.spec, schema, data))
            extra = set(undeclared_keys(self.spec, schema, data))
            allowed = {f"$.{k}" for k in EXTRA_KEYS.get((template, method, status), set())}
            assert extra <= allowed, f"{method} {template}: undeclared keys {extra - allowed}"
        self.covered.add((template, method, status))
        return data, got_headers


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    spec = load_spec()
    async with (
        RegistryServer(EmbeddedRegistry(initial_revision=0)) as server,
        aiohttp.ClientSession() as session,
    ):
        yield Checker(spec, session, server.url)


def test_implemented_operations_exist_in_spec() -> None:
    spec = load_spec()
    for template, method in IMPLEMENTED:
        assert method in spec["paths"][template], (template, method)


async def test_responses_match_the_spec(checker: Checker) -> None:
    c = checker
    base = "/v4/{project}/registry"
    services = base + "/microservices"
    one = services + "/{serviceId}"
    instances = one + "/instances"
    inst = instances + "/{instanceId}"
    service = {
        "appId": "shop",
        "serviceName": "orders",
        "version": "1.0.0",
        "schemas": ["s1"],
        "framework": {"name": "java", "version": "1"},
        "paths": [{"Path": "/orders", "Property": {"a": "b"}}],
        "properties": {"team": "x"},
        "level": "BACK",
        "description": "orders",
    }
    instance = {
        "hostName": "h1",
        "endpoints": ["rest://10.0.0.1:8080"],
        "properties": {"zone": "a"},
        "healthCheck": {"mode": "push", "interval": 30, "times": 3, "port": 0},
        "dataCenterInfo": {"name": "dc1", "region": "r1", "availableZone": "az1"},
    }

    await c.call(base + "/version", "get")
    await c.call(base + "/health", "get")
    created, _ = await c.call(services, "post", body={"service": service})
    sid = created["serviceId"]
    await c.call(services, "post", body={"service": {"appId": "a"}}, expect=400)
    await c.call(services, "get")
    await c.call(one, "get", path={"serviceId": sid})
    await c.call(one, "get", path={"serviceId": "nope"}, expect=400)
    exist = {"type": "microservice", "appId": "shop", "serviceName": "orders"}
    await c.call(base + "/existence", "get", params={**exist, "version": "1.0.0"})
    await c.call(base + "/existence", "get", params={**exist, "version": "9.0.0"}, expect=400)
    await c.call(
        base + "/existence", "get", params={"type": "schema", "serviceId": sid, "schemaId": "s1"}
    )

    registered, _ = await c.call(
        instances, "post", path={"serviceId": sid}, body={"instance": instance}
    )
    iid = registered["instanceId"]
    await c.call(instances, "post", path={"serviceId": sid}, body={"instance": {}}, expect=400)
    _, headers = await c.call(instances, "get", path={"serviceId": sid})
    rev = headers["X-Resource-Revision"]
    await c.call(instances, "get", path={"serviceId": sid}, params={"rev": rev}, expect=304)
    ids = {"serviceId": sid, "instanceId": iid}
    await c.call(inst, "get", path=ids)
    await c.call(inst, "get", path=ids, params={"rev": rev}, expect=304)
    await c.call(inst, "get", path={**ids, "instanceId": "x"}, expect=400)
    await c.call(inst + "/heartbeat", "put", path=ids)
    await c.call(inst + "/heartbeat", "put", path={**ids, "instanceId": "x"}, expect=400)
    await c.call(inst + "/status", "put", path=ids, params={"value": "UP"})
    await c.call(inst + "/status", "put", path=ids, params={"value": "?"}, expect=400)
    await c.call(inst + "/properties", "put", path=ids, body={"properties": {"k": "v"}})
    await c.call(inst + "/properties", "put", path=ids, body={"properties": 1}, expect=400)
    await c.call(base + "/heartbeats", "put", body={"Instances": [ids]})
    await c.call(
        base + "/heartbeats",
        "put",
        body={"Instances": [ids, {**ids, "instanceId": "x"}]},
        expect=400,
    )
    find = {"appId": "shop", "serviceName": "orders"}
    _, headers = await c.call(base + "/instances", "get", params=find)
    rev = headers["X-Resource-Revision"]
    await c.call(
        base + "/instances", "get", params=find, headers={"x-resource-revsion": rev}, expect=304
    )
    await c.call(base + "/instances", "get", params={"appId": "shop"}, expect=400)
    await c.call("/v4/{project}/govern/microservices", "get", params={"options": "all"})
    await c.call("/v4/{project}/govern/microservices", "get")
    await c.call("/v4/{project}/govern/microservices/{serviceId}", "get", path={"serviceId": sid})
    await c.call(
        "/v4/{project}/govern/microservices/{serviceId}",
        "get",
        path={"serviceId": "x"},
        expect=400,
    )
    await c.call(one, "delete", path={"serviceId": sid}, expect=400)  # has an instance
    await c.call(inst, "delete", path=ids)
    await c.call(inst, "delete", path=ids, expect=400)
    await c.call(one, "delete", path={"serviceId": sid})
    created, _ = await c.call(services, "post", body={"service": service})
    batch = {"serviceIds": [created["serviceId"], "nope"], "force": True}
    await c.call(services, "delete", body=batch)
    await c.call(services, "delete", body={"serviceIds": []}, expect=400)

    assert {(t, m) for t, m, _ in c.covered} == IMPLEMENTED


def test_implemented_operations_are_the_apps_routes() -> None:
    """IMPLEMENTED is exactly the app's routes that the spec declares (none forgotten)."""
    spec = load_spec()
    app = build_app(EmbeddedRegistry())
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    declared = {(t, m) for t, item in spec["paths"].items() for m in item if m != "parameters"}
    assert routes & declared == IMPLEMENTED
