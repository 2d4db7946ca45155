"""The OpenAPI document says what the API does: how to authenticate, which problems come back,
what /v1/traces takes; and a 405 still says which methods are allowed."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from api.auth import Role
from tests.unit.api.helpers import assert_problem, bearer


def test_every_token_route_declares_the_bearer_scheme_and_its_problems(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            public = path in ("/healthz", "/readyz", "/metrics", "/ui")
            assert bool(operation.get("security")) is not public, (method, path)
            if public or path == "/v1/traces":
                continue
            for code in ("401", "403", "422"):
                content = operation["responses"][code]["content"]
                assert list(content) == ["application/problem+json"], (method, path, code)
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
    approve = schema["paths"]["/v1/remediations/{proposal_id}/approve"]["post"]
    assert "409" in approve["responses"]


def test_the_otlp_intake_documents_its_body_and_its_status_answers(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/traces"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "application/x-protobuf",
        "application/json",
    }
    assert {"400", "401", "403", "413", "415", "503"} <= set(operation["responses"])


def test_a_wrong_method_is_a_405_problem_that_keeps_allow(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    response = client.delete("/v1/series", headers=bearer(issue(Role.VIEWER)))
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"
