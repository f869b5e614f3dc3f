"""schemathesis against the embedded registry: the contract's operations, generated requests.

Every operation of ``servicecomb-v4.yaml`` the registry implements
(:data:`tests.servicecenter.contract.IMPLEMENTED`, spec errata applied) gets requests
generated from the spec's parameter and body schemas: positive ones aimed at a seeded
service and instance of the default tenant, positive ones with every value generated,
and negative ones. Each answer must not be a server error, must use a status the spec
declares for the operation, and must match the declared content type, headers and body
schema. A bounded number of examples per operation; the run stops within a time budget.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
from hypothesis.errors import Unsatisfiable

from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer
from tests.servicecenter.contract import IMPLEMENTED, implemented_spec, load_spec

schemathesis = pytest.importorskip("schemathesis")

# Failures come grouped (a BaseExceptionGroup on Python 3.11+).
_EXCEPTION_GROUPS: tuple[type[BaseException], ...] = tuple(
    group for group in (getattr(builtins, "BaseExceptionGroup", None),) if group is not None
)

pytestmark = pytest.mark.timeout(120)

EXAMPLES_PER_RUN = 6
TIME_BUDGET = 30.0  # seconds for the generated runs (the aimed run of each operation is whole)
SERVICE = {"appId": "shop", "serviceName": "orders", "version": "1.0.0", "serviceId": "svc-1"}
INSTANCE = {"instanceId": "inst-1", "hostName": "h1", "endpoints": ["rest://10.0.0.1:8080"]}
# Positive requests aimed at the seeded records (the rest of each request is generated).
AIMED = {
    "path_parameters": {"project": "default", "serviceId": "svc-1", "instanceId": "inst-1"},
    "headers": {"x-domain-name": "default"},
    "query": {
        "value": "UP",
        "type": "microservice",
        "appId": "shop",
        "serviceName": "orders",
        "version": "1.0.0",
    },
}

# Bodies of aimed requests where a generated body is almost never valid (names, endpoints).
AIMED_BODIES: dict[tuple[str, str], Any] = {
    ("/v4/{project}/registry/microservices", "post"): {
        "service": {**SERVICE, "serviceId": "", "version": "2.0.0"}
    },
    ("/v4/{project}/registry/heartbeats", "put"): {
        "Instances": [{"serviceId": "svc-1", "instanceId": "inst-1"}]
    },
    ("/v4/{project}/registry/microservices/{serviceId}/instances", "post"): {
        "instance": {**INSTANCE, "instanceId": "inst-2"}
    },
}

IN = {"path_parameters": "path", "headers": "header", "query": "query"}


class ServerThread:
    """A :class:`RegistryServer` on its own event loop in a thread (schemathesis is sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.registry = EmbeddedRegistry()
        self.server = RegistryServer(self.registry, eviction_interval=0.5)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def seed(self) -> None:
        """The service and instance the aimed requests name (again, if a request deleted
        them)."""
        self.run(self.registry.create_service(SERVICE))
        self.run(self.registry.register_instance("svc-1", INSTANCE))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


def test_contract_operations_conform(server: ServerThread) -> None:
    from schemathesis.generation import GenerationMode

    base_url = server.server.url
    spec = implemented_spec(load_spec())
    spec["host"], spec["schemes"], spec["basePath"] = base_url.split("//", 1)[1], ["http"], "/"
    schema = schemathesis.openapi.from_dict(spec)
    runs: list[tuple[str, GenerationMode, dict[str, Any]]] = [
        ("aimed", GenerationMode.POSITIVE, AIMED),
        ("positive", GenerationMode.POSITIVE, {}),
        ("negative", GenerationMode.NEGATIVE, {}),
    ]
    run = Run(base_url, float("inf"))  # the aimed runs are not cut
    for name, mode, wanted in runs:  # every operation aimed first: the budget cuts the rest
        if name != "aimed" and run.deadline == float("inf"):
            run.deadline = time.monotonic() + TIME_BUDGET
        for template, method in sorted(IMPLEMENTED):
            declared = {
                (p["in"], p["name"]) for p in spec["paths"][template][method].get("parameters", [])
            }
            overrides: dict[str, Any] = {  # only parameters the operation declares
                kind: {k: v for k, v in values.items() if (IN[kind], k) in declared}
                for kind, values in wanted.items()
            }
            if name == "aimed" and (template, method) in AIMED_BODIES:
                body = AIMED_BODIES[template, method]
                overrides = {**overrides, "body": body, "media_type": "application/json"}
            operation = schema[template][method.upper()]
            strategy = operation.as_strategy(generation_mode=mode, **overrides)
            server.seed()
            run.operation(f"{method.upper()} {template} ({name})", strategy, (template, method))

    assert not run.failures, "\n\n".join(run.failures[:5])
    assert set(run.answered) == IMPLEMENTED
    succeeded = {op for op, statuses in run.answered.items() if any(s < 300 for s in statuses)}
    assert succeeded == IMPLEMENTED, sorted(IMPLEMENTED - succeeded)


class Run:
    """Examples of each operation sent to ``base_url`` and checked; failures collected."""

    def __init__(self, base_url: str, deadline: float) -> None:
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        self.base_url = base_url
        self.deadline = deadline
        self.checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ]
        self.failures: list[str] = []
        self.answered: dict[tuple[str, str], set[int]] = {}

    def operation(self, label: str, strategy: Any, key: tuple[str, str]) -> None:
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_RUN,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=strategy)
        def check(case: Any) -> None:
            if time.monotonic() > self.deadline:
                return
            response = case.call(base_url=self.base_url, timeout=10)
            self.answered.setdefault(key, set()).add(response.status_code)
            try:
                case.validate_response(response, checks=self.checks)
            except Exception as exc:
                self.failures.append(f"{label}: {exc}")
                raise

        recorded = len(self.failures)
        try:
            check()
        except Unsatisfiable:
            if "(negative)" not in label:
                raise  # a negative run of an operation with nothing to negate is empty
        except BaseException as exc:  # schemathesis groups its failures (an exception group)
            if not isinstance(exc, (Exception, *_EXCEPTION_GROUPS)):
                raise
            if len(self.failures) == recorded:  # not a non-conformance: a broken test
                raise
