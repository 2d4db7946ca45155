"""GET /v1/series/{id}/chart: a series' values against the band forecast 15 minutes before
each step, its anomalies, its breach limit and newest forecast; bounded spans and row counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role
from core.clock import FixedClock, from_epoch, to_epoch
from core.settings import BreachSettings
from ingest.tables import SampleRow, SeriesRow
from models.tables import AnomalyScoreRow, ForecastHistoryRow
from prognos.jobs import forecast_cycle
from tests.unit.api.helpers import NOW, TARGETS, MakeContext, assert_problem, bearer, ingest_once

T0 = to_epoch(NOW) // 60 * 60 - 3600  # an hour before the pinned clock, on the minute grid


def iso(epoch: int) -> str:
    return from_epoch(epoch).isoformat()


def to_epoch_iso(text: str) -> int:
    return to_epoch(datetime.fromisoformat(text))


def _seeded(sessions: sessionmaker[Session]) -> int:
    """A memory series with an hour of values, a band for each step, two alarms and scores."""
    with sessions() as session:
        series = SeriesRow(
            target="memory", key="m", labels={"pod": "cart-0"}, service="cart",
            first_seen=NOW, last_seen=NOW,
        )  # fmt: skip
        session.add(series)
        session.flush()
        for i in range(60):
            ts = T0 + 60 * i
            session.add(SampleRow(series_id=series.id, ts=ts, value=float(i)))
            session.add(
                ForecastHistoryRow(
                    series_id=series.id, target_ts=ts, made_at=ts - 900,
                    p10=i - 1.0, p50=float(i), p90=i + 1.0,
                )
            )  # fmt: skip
            score = {10: 5.0, 20: 2.0, 30: 1.0}.get(i, 0.5)
            session.add(
                AnomalyScoreRow(
                    series_id=series.id, ts=ts, z=score, magnitude=0.0, score=score,
                    model="m", alarm=i in (10, 40), evidence=None,
                )
            )  # fmt: skip
        session.commit()
        return series.id


def _chart(client: TestClient, token: str, series_id: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/series/{series_id}/chart", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_the_chart_reads_values_band_and_anomalies_of_the_span(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    series_id = _seeded(sessions)
    token = issue(Role.VIEWER)
    body = _chart(client, token, series_id)  # default: the 6 hours up to now
    assert body["series"]["id"] == series_id and body["step_seconds"] == 60
    assert len(body["actual"]) == 60 and len(body["band"]) == 60
    assert [v for _, v in body["actual"]] == [float(i) for i in range(60)]  # oldest first
    point = body["band"][5]
    assert (point["p10"], point["p50"], point["p90"]) == (4.0, 5.0, 6.0)
    assert to_epoch_iso(point["at"]) - to_epoch_iso(point["made_at"]) == 900
    # alarms, and other steps scoring at least min_score (default 3)
    marks = [(to_epoch_iso(a["at"]) - T0) // 60 for a in body["anomalies"]]
    assert marks == [10, 40] and [a["alarm"] for a in body["anomalies"]] == [True, True]
    lower = _chart(client, token, series_id, min_score=1.5)["anomalies"]
    assert [(to_epoch_iso(a["at"]) - T0) // 60 for a in lower] == [10, 20, 40]
    assert body["limit"] is None and body["breach"] is None and body["ahead"] == []
    assert body["truncated"] is False

    # A span reads its own steps (both ends included); a limit keeps the newest rows.
    since, until = iso(T0 + 600), iso(T0 + 1200)
    span = _chart(client, token, series_id, since=since, until=until)
    assert [v for _, v in span["actual"]] == [float(i) for i in range(10, 21)]
    assert len(span["band"]) == 11 and span["truncated"] is False
    cut = _chart(client, token, series_id, limit=5)
    assert [v for _, v in cut["actual"]] == [55.0, 56.0, 57.0, 58.0, 59.0]
    assert len(cut["band"]) == 5 and cut["truncated"] is True


def test_the_serving_cycle_fills_the_chart_with_its_limit_and_newest_forecast(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = make_context()
    limit = BreachSettings(threshold=-1e9, consecutive=1)
    context = dataclasses.replace(
        context, targets=[TARGETS[0].model_copy(update={"breach": limit}), TARGETS[1]]
    )
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        for _ in range(3):
            ingest_once(context)
            forecast_cycle(context)
            assert isinstance(context.clock, FixedClock)
            context.clock.advance(timedelta(minutes=1))
        (series,) = [
            s
            for s in client.get("/v1/series", headers=bearer(token)).json()["items"]
            if s["labels"]["pod"] == "cart-0" and s["target"] == "cpu"
        ]
        now = context.clock.now()
        body = _chart(client, token, series["id"], until=(now + timedelta(minutes=30)).isoformat())
    assert len(body["actual"]) >= 30  # the lookback window
    # one band per cycle, each made 15 minutes before the step it forecast
    assert len(body["band"]) == 3
    made = [to_epoch_iso(b["made_at"]) for b in body["band"]]
    assert [m - made[0] for m in made] == [0, 60, 120]
    for b in body["band"]:
        assert to_epoch_iso(b["at"]) - to_epoch_iso(b["made_at"]) == 900
        assert b["p10"] <= b["p50"] <= b["p90"]
    # the newest forecast ahead, from the last cycle's step, and the limit it is checked against
    assert len(body["ahead"]) == 30 and {a["made_at"] for a in body["ahead"]} == {
        body["band"][-1]["made_at"]
    }
    assert body["limit"] == {"threshold": -1e9, "direction": "above"}
    assert body["breach"]["warning"] is True and body["breach"]["probability"] == 1.0


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"since": "2026-01-05T12:00:00Z", "until": "2026-01-05T11:00:00Z"}, 422),
        ({"since": "2025-12-01T00:00:00Z", "until": "2026-01-05T00:00:00Z"}, 422),
        ({"until": "0001-01-01T01:00:00Z"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 11_001}, 422),
        ({"min_score": -1}, 422),
    ],
)
def test_spans_and_counts_are_bounded(
    client: TestClient,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
    params: dict[str, Any],
    status: int,
) -> None:
    series_id = _seeded(sessions)
    response = client.get(
        f"/v1/series/{series_id}/chart", params=params, headers=bearer(issue(Role.VIEWER))
    )
    assert_problem(response, status)


def test_an_unknown_series_is_a_404_and_the_chart_needs_a_token(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    token = issue(Role.VIEWER)
    assert_problem(client.get("/v1/series/999/chart", headers=bearer(token)), 404)
    assert_problem(client.get(f"/v1/series/{2**31}/chart", headers=bearer(token)), 422)
    assert_problem(client.get("/v1/series/1/chart"), 401)
