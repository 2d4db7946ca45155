"""Liveness and readiness as a load balancer or Kubernetes probe sees them."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.database import create_engine, session_factory
from ingest.errors import SourceUnavailableError
from tests.support.servers import free_port
from tests.unit.api.helpers import MakeContext, assert_problem, shop_source

PASSWORD = "pg-secret-5e1d"


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_and_source_answer(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": {"status": "ok"}, "source": {"status": "ok"}}


def test_not_ready_names_the_failing_source(make_context: MakeContext) -> None:
    source = shop_source()
    source.check_error = SourceUnavailableError("Prometheus at http://prom:9090 is unreachable")
    with TestClient(create_app(make_context(source)), raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/readyz"), 503)
    assert body["detail"] == "not ready: source failing"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["source"] == {
        "status": "failed",
        "error": "Prometheus at http://prom:9090 is unreachable",
    }


def test_not_ready_when_the_source_check_crashes(make_context: MakeContext) -> None:
    source = shop_source()
    source.check_error = OSError("[Errno 13] Permission denied: '/secret/path'")
    with TestClient(create_app(make_context(source)), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    body = assert_problem(response, 503)
    assert body["checks"]["source"]["status"] == "failed"
    assert "/secret/path" not in response.text


def test_not_ready_when_the_database_is_down(tmp_path: Path, make_context: MakeContext) -> None:
    context = make_context()
    context.engine = create_engine(f"postgresql://prognos:{PASSWORD}@127.0.0.1:{free_port()}/p")
    context.sessions = session_factory(context.engine)
    try:
        with TestClient(create_app(context), raise_server_exceptions=False) as client:
            response = client.get("/readyz")
            assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        context.engine.dispose()
    body = assert_problem(response, 503)
    assert body["detail"] == "not ready: database failing"
    assert body["checks"]["database"]["status"] == "failed"
    assert "127.0.0.1" in body["checks"]["database"]["error"]
    assert body["checks"]["source"] == {"status": "ok"}
    assert PASSWORD not in response.text


def test_start_and_stop_hooks_run_with_the_app(make_context: MakeContext) -> None:
    context = make_context()
    events: list[str] = []
    context.on_start.append(lambda: events.append("start"))
    context.on_stop.extend([lambda: events.append("stop 1"), lambda: events.append("stop 2")])
    with TestClient(create_app(context)) as client:
        assert events == ["start"]
        client.get("/healthz")
    assert events == ["start", "stop 2", "stop 1"]  # stopped in reverse order
