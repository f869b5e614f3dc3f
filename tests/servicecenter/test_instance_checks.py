"""validate_instance's quick paths (plain strings, plain endpoint lists, health checks looked
up by their values) answer exactly what the full checks answer, error for error."""

from __future__ import annotations

from typing import Any

import pytest

from pysyncer.servicecenter import RegistryError
from pysyncer.servicecenter.errors import ERR_INVALID_PARAMS
from pysyncer.servicecenter.settings import ServiceCenterSettings
from pysyncer.servicecenter.validation import validate_instance


class Text(str):
    """A string subclass: not the quick path's plain str, still a string to the checks."""


def body(**fields: Any) -> dict[str, Any]:
    return {"instanceId": "i-1", "hostName": "h1", "endpoints": ["rest://h1:80"], **fields}


def refused(value: Any, limits: ServiceCenterSettings | None = None) -> str:
    with pytest.raises(RegistryError) as raised:
        if limits is None:
            validate_instance(value)
        else:
            validate_instance(value, limits)
    assert raised.value.code == ERR_INVALID_PARAMS
    return str(raised.value)


def test_defaults_and_subclasses_pass_as_before() -> None:
    out = validate_instance({"hostName": Text("h1"), "endpoints": [Text("rest://h1:80")]})
    assert (out["instanceId"], out["status"]) == ("", "UP")
    assert out["healthCheck"] == {"mode": "push", "interval": 30, "times": 3}
    assert validate_instance(body(status=None, instanceId=None))["status"] == "UP"
    assert validate_instance(body(status=Text("DOWN")))["status"] == "DOWN"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hostName": "x" * 65}, "'hostName' is longer than 64"),
        ({"hostName": 7}, "'hostName' must be a string"),
        ({"hostName": "has space"}, "'hostName' must be 1-64"),
        ({"instanceId": "x" * 65}, "'instanceId' is longer than 64"),
        ({"instanceId": "bad/id"}, "'instanceId' must be 1-64"),
        ({"status": "x" * 257}, "'status' is longer than 256"),
        ({"status": "SLEEPY"}, "'status' must be one of"),
        ({"endpoints": ["rest://ok", ""]}, "'endpoints' must be a list"),
        ({"endpoints": ["x" * 1025]}, "'endpoints' must be a list"),
        ({"endpoints": ("rest://h1:80",)}, "'endpoints' must be a list"),
        ({"endpoints": ["rest://h1:80", 7]}, "'endpoints' must be a list"),
    ],
)
def test_bad_fields_are_refused_by_the_full_checks(fields: dict[str, Any], message: str) -> None:
    assert message in refused(body(**fields))


def test_health_checks_are_looked_up_by_type_and_limits() -> None:
    plain = {"mode": "push", "interval": 10, "times": 2}
    first = validate_instance(body(healthCheck=plain))["healthCheck"]
    assert first == plain
    assert validate_instance(body(healthCheck=dict(plain)))["healthCheck"] is first
    # The same values of other types are not the same request: bool and float are refused.
    assert "'interval' must be an integer" in refused(body(healthCheck={**plain, "interval": 10.0}))
    assert "'times' must be an integer" in refused(body(healthCheck={**plain, "times": True}))
    # The same values under other limits are decided again.
    strict = ServiceCenterSettings(min_interval=1, max_ttl=29)
    assert "more than 29 s" in refused(body(healthCheck=plain), strict)
    assert "'interval' must be an integer" in refused(
        body(healthCheck=plain), ServiceCenterSettings(min_interval=11)
    )
    assert "'healthCheck.mode' must be" in refused(body(healthCheck={**plain, "mode": "poke"}))
    empty_mode = validate_instance(body(healthCheck={**plain, "mode": ""}))["healthCheck"]
    assert empty_mode["mode"] == "push"
    with_port = validate_instance(body(healthCheck={**plain, "port": 8080}))["healthCheck"]
    assert with_port == {**plain, "port": 8080}
    assert "'port' must be an integer" in refused(body(healthCheck={**plain, "port": -1}))
