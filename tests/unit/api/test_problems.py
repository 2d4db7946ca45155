"""Errors over HTTP are RFC 9457 problems; an unexpected failure leaks nothing internal."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from api.problems import STATUS_BY_KIND
from core.errors import ErrorKind, PrognosError
from ingest.errors import IngestError
from prognos.context import ServiceContext
from tests.unit.api.helpers import assert_problem, bearer

SECRET = "internal-detail-0xDEADBEEF"


def test_an_unexpected_exception_is_a_generic_500(context: ServiceContext) -> None:
    app = create_app(context)

    def explode() -> None:
        raise RuntimeError(f"password={SECRET}")

    def internal() -> None:
        raise IngestError(f"half-written state at {SECRET}")

    app.add_api_route("/boom", explode)
    app.add_api_route("/internal", internal)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/boom", "/internal"):
            response = client.get(path)
            body = assert_problem(response, 500)
            assert body["detail"] == "internal error; see the service log"
            assert body["code"] == "internal"
            assert SECRET not in response.text
            assert "Traceback" not in response.text


def test_a_database_failure_inside_a_route_leaks_no_sql(
    context: ServiceContext, issue: Any
) -> None:
    token = issue(Role.VIEWER)
    with context.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE series RENAME TO series_moved"))
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        response = client.get("/v1/series", headers=bearer(token))
    body = assert_problem(response, 500)
    assert body["instance"] == "/v1/series"
    for leaked in ("SELECT", "series.labels", "no such table", "does not exist", "sqlalchemy"):
        assert leaked not in response.text


def test_unknown_paths_and_methods_are_problems(client: TestClient) -> None:
    assert assert_problem(client.get("/v1/nothing-here"), 404)["title"] == "Not found"
    assert_problem(client.post("/healthz"), 405)


def test_each_error_kind_has_its_status() -> None:
    assert {kind: STATUS_BY_KIND[kind] for kind in ErrorKind} == {
        ErrorKind.NOT_FOUND: 404,
        ErrorKind.CONFLICT: 409,
        ErrorKind.EXPIRED: 410,
        ErrorKind.UNAUTHORIZED: 401,
        ErrorKind.FORBIDDEN: 403,
        ErrorKind.INVALID: 422,
        ErrorKind.UNAVAILABLE: 503,
        ErrorKind.INTERNAL: 500,
    }


def test_a_typed_error_keeps_its_message_and_code(context: ServiceContext) -> None:
    class Gone(PrognosError):
        code = "proposal_expired"
        kind = ErrorKind.EXPIRED

    app = create_app(context)

    def expired() -> None:
        raise Gone("proposal 7 expired at 12:00; propose again")

    app.add_api_route("/expired", expired)
    with TestClient(app, raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/expired"), 410)
    assert body["detail"] == "proposal 7 expired at 12:00; propose again"
    assert body["code"] == "proposal_expired"
    assert body["type"].endswith("/proposal_expired")
