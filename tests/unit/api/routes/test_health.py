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
    assert body["checks"] == {
        "database": {"status": "ok"},
        "source": {"status": "ok"},
        "models": {"status": "ok"},
    }


def test_a_failing_source_is_degraded_not_unready(make_context: MakeContext) -> None:
    """The API and the approvals page stay useful while Prometheus is away."""
    source = shop_source()
    source.check_error = SourceUnavailableError("Prometheus at http://prom:9090 is unreachable")
    with TestClient(create_app(make_context(source)), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["source"] == {
        "status": "failed",
        "error": "Prometheus at http://prom:9090 is unreachable",
    }


def test_a_crashing_source_check_leaks_nothing(make_context: MakeContext) -> None:
    source = shop_source()
    source.check_error = OSError("[Errno 13] Permission denied: '/secret/path'")
    with TestClient(create_app(make_context(source)), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.json()["checks"]["source"]["status"] == "failed"
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


def test_a_corrupt_database_file_is_found_at_start_and_not_ready(tmp_path: Path) -> None:
    from core.settings import Settings
    from prognos.composition import build_context

    settings = Settings(data_dir=tmp_path)
    build_context(settings).engine.dispose()  # a migrated SQLite file
    path = tmp_path / "prognos.db"
    data = bytearray(path.read_bytes())
    page = 4096
    for i in range(3 * page, min(len(data), 6 * page)):  # scribble over some b-tree pages
        data[i] = 0xA5
    path.write_bytes(bytes(data))
    context = build_context(settings)
    try:
        assert context.integrity is not None and "integrity" in context.integrity
        with TestClient(create_app(context), raise_server_exceptions=False) as client:
            body = assert_problem(client.get("/readyz"), 503)
            assert client.get("/healthz").status_code == 200
    finally:
        context.engine.dispose()
    assert body["checks"]["database"]["status"] == "failed"
    assert "integrity" in body["checks"]["database"]["error"]


def test_a_lost_active_model_is_reported_degraded(tmp_path: Path) -> None:
    import shutil
    from datetime import UTC, datetime

    import numpy as np

    from core.settings import Settings
    from ingest.domain import SeriesKey
    from models.domain import History
    from models.registry import ArtifactStore
    from models.service import train_model
    from prognos.composition import build_context

    settings = Settings(data_dir=tmp_path)
    context = build_context(settings)
    history = History(
        SeriesKey.of("cpu", {}), 60, 1_767_225_600, np.sin(np.arange(600) / 20.0) + 5.0
    )
    with context.sessions() as session:
        train_model(
            session,
            histories=[history],
            forecaster_name="median_band",
            forecaster_config={"context_length": 30, "horizon": 10},
            holdout=0.2,
            store=ArtifactStore("directory", settings.model_dir),
            targets=["cpu"],
            now=datetime(2026, 1, 2, tzinfo=UTC),
        )
        session.commit()
    context.engine.dispose()
    shutil.rmtree(settings.model_dir / "step60s" / "v1")  # the active version's artifact
    context = build_context(settings)
    try:
        with TestClient(create_app(context), raise_server_exceptions=False) as client:
            response = client.get("/readyz")
    finally:
        context.engine.dispose()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["models"]["status"] == "failed"
    assert "step60s v1" in body["checks"]["models"]["error"]
