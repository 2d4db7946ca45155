"""Forecasts, anomalies and models over HTTP, and their export on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from core.clock import FixedClock
from models.tables import AnomalyScoreRow
from prognos.context import ServiceContext
from prognos.jobs import forecast_cycle
from tests.unit.api.helpers import NOW, assert_problem, bearer, ingest_once


def _serve(context: ServiceContext) -> None:
    ingest_once(context)
    forecast_cycle(context)


def test_forecasts_come_with_ordered_quantiles_for_every_horizon_step(
    client: TestClient, context: ServiceContext, issue: Callable[[Role], str]
) -> None:
    _serve(context)
    token = issue(Role.VIEWER)
    body = client.get("/v1/forecasts", headers=bearer(token)).json()
    assert len(body["items"]) == 4
    item = body["items"][0]
    assert len(item["points"]) == 30
    assert item["points"][0]["at"] > item["made_at"]
    for point in item["points"]:
        q = point["quantiles"]
        assert q["p10"] <= q["p50"] <= q["p90"]
    cart = client.get("/v1/forecasts", params={"service": "cart"}, headers=bearer(token)).json()
    assert {i["service"] for i in cart["items"]} == {"cart"}
    page = client.get("/v1/forecasts", params={"limit": 3}, headers=bearer(token)).json()
    assert len(page["items"]) == 3 and page["next_cursor"] is not None


def test_anomalies_are_filtered_by_score_and_time(
    client: TestClient,
    context: ServiceContext,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
) -> None:
    _serve(context)
    with sessions() as session:
        ids = session.scalars(sa.text("SELECT id FROM series ORDER BY id")).all()
        ts = int(NOW.timestamp()) - 60
        for i, score in zip(ids, (0.5, 5.0, None, 9.0), strict=True):
            session.add(
                AnomalyScoreRow(series_id=i, ts=ts, z=1.0, magnitude=1.0, score=score, model="m")
            )
        session.commit()
    token = issue(Role.VIEWER)
    found = client.get("/v1/anomalies", headers=bearer(token)).json()
    assert sorted(a["score"] for a in found) == [5.0, 9.0]  # default threshold 4
    assert (
        len(client.get("/v1/anomalies", params={"min_score": 0}, headers=bearer(token)).json()) == 4
    )
    later = (NOW + timedelta(minutes=5)).isoformat()
    assert client.get("/v1/anomalies", params={"since": later}, headers=bearer(token)).json() == []
    metrics = client.get("/metrics").text
    assert "prognos_anomaly_score{" in metrics
    assert 'prognos_anomaly{pod="cart-0",service="cart",target="memory"} 1.0' in metrics
    assert 'horizon="15m"' in metrics and 'prognos_quantile="0.5"' in metrics


def test_models_list_and_admin_only_promotion(
    client: TestClient, context: ServiceContext, issue: Callable[[Role], str]
) -> None:
    token = issue(Role.VIEWER)
    assert client.get("/v1/models", headers=bearer(token)).json() == []
    assert_problem(client.post("/v1/models/1/promote", headers=bearer(token)), 403)
    admin = issue(Role.ADMIN)
    assert_problem(client.post("/v1/models/1/promote", headers=bearer(admin)), 404)
    assert_problem(client.post("/v1/models/step60s/rollback", headers=bearer(admin)), 409)
    assert isinstance(context.clock, FixedClock)
