"""/metrics: Prognos' own state for Prometheus, read from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import Role
from ingest.errors import SourceUnavailableError
from tests.unit.api.helpers import NOW, MakeContext, assert_problem, bearer, ingest_once

NEWEST = int((NOW - timedelta(seconds=30)).timestamp()) // 60 * 60


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_expose_series_runs_and_watermarks(make_context: MakeContext) -> None:
    context = make_context()
    ingest_once(context)
    context.clock.advance(timedelta(minutes=2))
    context.source.fail_with = SourceUnavailableError("down")
    from prognos.jobs import ingest_cycle

    ingest_cycle(context)
    with TestClient(create_app(context)) as client:
        response = client.get("/metrics")  # open by default
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "prognos_series", target="cpu") == 3
    assert value(found, "prognos_series", target="memory") == 1
    assert value(found, "prognos_ingest_runs_total", target="cpu", status="ok") == 1
    assert value(found, "prognos_ingest_runs_total", target="cpu", status="failed") == 1
    assert value(found, "prognos_ingest_points_total", target="cpu") == 3 * 30
    assert value(found, "prognos_ingest_watermark_timestamp_seconds", target="cpu") == NEWEST
    # The last success is the first cycle (the failed one does not count), in epoch seconds.
    last_ok = value(found, "prognos_ingest_last_success_timestamp_seconds", target="memory")
    assert abs(last_ok - NOW.timestamp()) < 5
    [build] = [dict(labels) for name, labels in found if name == "prognos_build_info"]
    assert build["source"] == "fake" and build["version"]


def test_metrics_of_an_empty_database(make_context: MakeContext) -> None:
    with TestClient(create_app(make_context())) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families["prognos_series"] == "gauge"
    assert families["prognos_ingest_runs"] == "counter"
    assert "prognos_ingest_runs_total" in response.text


def test_metrics_can_require_a_token(make_context: MakeContext, issue: Any) -> None:
    context = make_context(api={"metrics_require_token": True})
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        assert_problem(client.get("/metrics"), 401)
        assert_problem(client.get("/metrics", headers=bearer("pgn_x_y")), 401)
        assert_problem(client.get("/metrics", headers=bearer(issue(Role.INGEST))), 403)
        response = client.get("/metrics", headers=bearer(issue(Role.VIEWER)))
        assert response.status_code == 200
        assert "prognos_series" in response.text
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_pruning_runs_never_makes_the_counters_go_down(make_context: MakeContext) -> None:
    """A counter that drops reads as a reset to Prometheus: increase() would count the whole
    value again (a false `increase(prognos_ingest_runs_total{status="failed"}[15m]) > 3`)."""
    from ingest.service import prune_runs
    from prognos.jobs import ingest_cycle

    context = make_context()
    for _ in range(3):
        ingest_once(context)
        context.clock.advance(timedelta(minutes=2))
    context.source.fail_with = SourceUnavailableError("down")
    for _ in range(2):
        ingest_cycle(context)
        context.clock.advance(timedelta(minutes=2))
    with TestClient(create_app(context)) as client:
        before = samples(client.get("/metrics").text)
        with context.sessions() as session:
            pruned = prune_runs(session, before=context.clock.now(), limit=100)
            session.commit()
        after = samples(client.get("/metrics").text)
    assert pruned > 0
    for name, labels in (
        ("prognos_ingest_runs_total", {"target": "cpu", "status": "ok"}),
        ("prognos_ingest_runs_total", {"target": "cpu", "status": "failed"}),
        ("prognos_ingest_points_total", {"target": "cpu"}),
    ):
        assert value(after, name, **labels) == value(before, name, **labels) > 0
