"""Forecasts, anomalies and models over HTTP, and their export on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from core.clock import FixedClock
from ingest.tables import SeriesRow
from models.tables import AnomalyFeedbackRow, AnomalyScoreRow, DetectorStateRow
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
            alarm = score is not None and score > 4
            session.add(
                AnomalyScoreRow(
                    series_id=i,
                    ts=ts,
                    z=1.0,
                    magnitude=1.0,
                    score=score,
                    model="m",
                    alarm=alarm,
                    evidence={"component": "level", "z": score} if alarm else None,
                )
            )
        session.commit()
    token = issue(Role.VIEWER)
    found = client.get("/v1/anomalies", headers=bearer(token)).json()
    assert sorted(a["score"] for a in found) == [5.0, 9.0]  # the detector's alarms by default
    assert all(a["alarm"] and a["evidence"]["component"] == "level" for a in found)
    at = datetime.fromtimestamp(ts, UTC).isoformat()
    every = client.get(
        "/v1/anomalies", params={"min_score": 0, "since": at}, headers=bearer(token)
    ).json()
    assert len(every) == 4
    assert [
        a["score"]
        for a in client.get("/v1/anomalies", params={"min_score": 7}, headers=bearer(token)).json()
    ] == [9.0]
    later = (NOW + timedelta(minutes=5)).isoformat()
    assert client.get("/v1/anomalies", params={"since": later}, headers=bearer(token)).json() == []
    # /metrics exports each series' newest verdict, kept with its detector state.
    with sessions() as session:
        session.execute(
            sa.update(DetectorStateRow)
            .where(DetectorStateRow.series_id == ids[1])
            .values(last_score=5.0, last_alarm=True)
        )
        session.commit()
        cart = session.get(SeriesRow, ids[1])
        assert cart is not None
    metrics = client.get("/metrics").text
    assert metrics.count("prognos_anomaly_score{") == len(ids)
    labels = ",".join(
        f'{k}="{v}"' for k, v in sorted({**cart.labels, "target": cart.target}.items())
    )
    assert f"prognos_anomaly{{{labels}}} 1.0" in metrics
    assert f"prognos_anomaly_score{{{labels}}} 5.0" in metrics
    assert 'horizon="15m"' in metrics and 'prognos_quantile="0.5"' in metrics


def test_an_operator_marks_an_alarm_false_and_the_verdict_is_kept(
    client: TestClient,
    context: ServiceContext,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
) -> None:
    _serve(context)
    with sessions() as session:
        series_id = session.scalars(sa.text("SELECT id FROM series ORDER BY id")).first()
        ts = int(NOW.timestamp()) - 60
        session.add(
            AnomalyScoreRow(
                series_id=series_id, ts=ts, z=6.0, magnitude=6.0, score=6.0, model="m", alarm=True
            )
        )
        session.commit()
    alarm = client.get("/v1/anomalies", headers=bearer(issue(Role.VIEWER))).json()[0]
    url = f"/v1/anomalies/{alarm['id']}/feedback"
    body = {"verdict": "false_alarm", "note": "deploy restart"}
    assert_problem(client.post(url, json=body, headers=bearer(issue(Role.VIEWER))), 403)
    operator = issue(Role.OPERATOR)
    made = client.post(url, json=body, headers=bearer(operator))
    assert made.status_code == 201, made.text
    assert (made.json()["verdict"], made.json()["series_id"], made.json()["ts"]) == (
        "false_alarm",
        series_id,
        ts,
    )
    with sessions() as session:
        kept = session.scalars(sa.select(AnomalyFeedbackRow)).all()
    assert [(k.verdict, k.note) for k in kept] == [("false_alarm", "deploy restart")]
    # A step never scored, a malformed id and an unknown verdict are refused, nothing is kept.
    assert_problem(
        client.post(f"/v1/anomalies/{series_id}-1/feedback", json=body, headers=bearer(operator)),
        404,
    )
    assert_problem(
        client.post("/v1/anomalies/x-1/feedback", json=body, headers=bearer(operator)), 422
    )
    assert_problem(client.post(url, json={"verdict": "meh"}, headers=bearer(operator)), 422)
    with sessions() as session:
        assert len(session.scalars(sa.select(AnomalyFeedbackRow)).all()) == 1


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
