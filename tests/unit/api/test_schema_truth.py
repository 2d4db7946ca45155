"""What the OpenAPI document calls valid is served, and what the service answers is documented:
each case here is an input the schema fuzzer (tests/e2e/test_fuzz.py) found answered otherwise."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth import Role
from tests.unit.api.helpers import assert_problem, bearer

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _operation(client: TestClient, method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = client.get("/openapi.json").json()["paths"][path][method]
    return operation


def _documents_problem(operation: dict[str, Any], status: int) -> bool:
    content = operation["responses"].get(str(status), {}).get("content", {})
    return bool(content.get("application/problem+json", {}).get("schema") == PROBLEM)


def test_a_label_filter_is_refused_exactly_when_the_schema_refuses_it(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    """`label=¹.` was valid by the schema (any string) and answered 422 (not name=value)."""
    (parameter,) = [
        p for p in _operation(client, "get", "/v1/series")["parameters"] if p["name"] == "label"
    ]
    (array,) = [s for s in parameter["schema"]["anyOf"] if s["type"] == "array"]
    pattern = array["items"]["pattern"]
    viewer = bearer(issue(Role.VIEWER))
    for label in ["pod=cart-0", "pod=", "a=b=c", "¹.\U00058819\x7f", "pod", "=cart-0", ""]:
        response = client.get("/v1/series", headers=viewer, params={"label": label})
        valid = re.search(pattern, label) is not None
        assert response.status_code == (200 if valid else 422), (label, response.text)


def _values_schema(client: TestClient) -> dict[str, Any]:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    values: dict[str, Any] = schema["AdhocForecastRequest"]["properties"]["values"]
    return values


def _schema_allows(values_schema: dict[str, Any], values: list[float | None]) -> bool:
    (number,) = [s for s in values_schema["items"]["anyOf"] if s["type"] == "number"]
    numbers = [v for v in values if v is not None]
    return (
        values_schema["minItems"] <= len(values) <= values_schema["maxItems"]
        and len(numbers) >= values_schema["minContains"]
        and all(number["minimum"] <= v <= number["maximum"] for v in numbers)
    )


@pytest.mark.parametrize(
    "values",
    [
        [None, None],  # was valid by the schema: an array of at least 2 numbers or nulls
        [1.0, None, 2.0, None, 3.0],
        # A finite number past float32's range is infinite to the models: was a 422 from them.
        [-2.996e16, 6.95e16, 4.512e142, -4.176e16, 1.189e19, None, None],
        [3.4e38, -3.4e38, 3.4e38, -3.4e38, 0.0],
        [1.0, 2.0, 3.0, 4.0, 5.0, None],
        [1.0, 2.0, 3.0, 4.0],
    ],
)
def test_forecast_values_are_refused_exactly_when_the_schema_refuses_them(
    client: TestClient, issue: Callable[[Role], str], values: list[float | None]
) -> None:
    operator = bearer(issue(Role.OPERATOR))
    body = {"values": values, "step_seconds": 7188, "end": "4209-10-12T06:45:46Z"}
    response = client.post("/v1/forecasts", json=body, headers=operator)
    expected = 200 if _schema_allows(_values_schema(client), values) else 422
    assert response.status_code == expected, response.text
    if expected == 422:
        assert assert_problem(response, 422)["errors"][0]["loc"][:2] == ["body", "values"]


def test_a_body_that_is_not_utf8_is_a_documented_400_problem(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    """FastAPI answers bytes it cannot decode with a 400 that no operation documented."""
    operator = bearer(issue(Role.OPERATOR))
    headers = {**operator, "content-type": "application/json"}
    response = client.post("/v1/forecasts", content=b"\x80\x01", headers=headers)
    assert_problem(response, 400)
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation and path != "/v1/traces":  # OTLP answers its own way
                assert _documents_problem(operation, 400), (method, path)


def test_the_refusals_a_route_gives_are_documented_as_problems(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    admin = bearer(issue(Role.ADMIN))
    rollback = client.post("/v1/models/step60s/rollback", headers=admin)
    assert_problem(rollback, 409)  # no active model to roll back
    unknown = client.post("/v1/remediations", json={"playbook": "0", "target": "0"}, headers=admin)
    assert_problem(unknown, 404)  # no such playbook
    documented = [
        ("post", "/v1/models/{family}/rollback", 409),
        ("post", "/v1/models/{model_id}/promote", 409),
        ("post", "/v1/remediations", 404),
        ("post", "/v1/remediations", 409),
        ("post", "/v1/remediations/{proposal_id}/reject", 409),
        ("post", "/v1/remediations/{proposal_id}/cancel", 409),
        ("get", "/readyz", 503),
    ]
    for method, path, status in documented:
        assert _documents_problem(_operation(client, method, path), status), (method, path)


def test_metrics_documents_its_content_type(client: TestClient) -> None:
    response = client.get("/metrics")
    documented = _operation(client, "get", "/metrics")["responses"]["200"]["content"]
    assert list(documented) == [response.headers["content-type"]]


@pytest.mark.parametrize(
    "end",
    [
        "0001-01-01T00:00:00+00:00",  # the fuzzer's: 9 values at 41881 s started before year 1
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC: the year as written is what counts
        "9998-12-31T23:59:00Z",
        "9999-01-01T00:00:00Z",
    ],
)
def test_a_forecast_end_is_refused_exactly_when_the_schema_refuses_it(
    client: TestClient, issue: Callable[[Role], str], end: str
) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["AdhocForecastRequest"]
    pattern = schema["properties"]["end"]["pattern"]  # beside anyOf: strings only
    values = [-4.8e-209, 2.1e38, 0.5, 4.05e29, -6.9e16, 3.4e38, None, None, None]
    body = {"values": values, "step_seconds": 86_400, "end": end}
    response = client.post("/v1/forecasts", json=body, headers=bearer(issue(Role.OPERATOR)))
    expected = 200 if re.search(pattern, end) else 422
    assert response.status_code == expected, response.text
