"""The bounded history of forecasts the page's chart draws: each cycle keeps, per series, the
band it forecast for the step 15 minutes ahead (or the nearest the horizon reaches), in the
cycle's own transaction, once per step; old steps are pruned in batches."""

from __future__ import annotations

import math
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from ingest import service as ingest_service
from ingest.tables import SeriesRow
from models.detector import DetectorConfig
from models.service import ServingModels, forecast_cycle, prune_forecast_history
from models.tables import ForecastHistoryRow, ForecastRow
from tests.unit.fakes import FakeSeries, FakeSource, make_target

STEP = 60
START = 1_767_225_600  # 2026-01-01T00:00Z
TARGET = make_target("cpu", lookback=timedelta(hours=2))


def _source() -> FakeSource:
    def value(phase: float):  # type: ignore[no-untyped-def]
        return lambda ts: 10 + 3 * math.sin(2 * math.pi * (ts - START) / 3600 + phase)

    return FakeSource(
        [
            FakeSeries("cpu", {"service": "a"}, value=value(0.0)),
            FakeSeries("cpu", {"service": "b"}, value=value(1.0)),
        ]
    )


def _cycle(
    sessions: sessionmaker[Session], models: ServingModels, minute: int, *, commit: bool = True
) -> str:
    now = from_epoch(START + 2 * 3600 + minute * STEP)
    with sessions() as session:
        ingest_service.ingest_target(
            session,
            source=_source(),
            target=TARGET,
            now=now,
            lag=timedelta(0),
            max_catchup=timedelta(days=1),
        )
        session.commit()
        summary = forecast_cycle(
            session, target=TARGET, models=models, detector=DetectorConfig(), now=now
        )
        if commit:
            session.commit()
        else:
            session.rollback()
    return summary.status


def _history(sessions: sessionmaker[Session]) -> list[ForecastHistoryRow]:
    with sessions() as session:
        query = sa.select(ForecastHistoryRow).order_by(
            ForecastHistoryRow.series_id, ForecastHistoryRow.target_ts
        )
        return list(session.scalars(query))


def _models(horizon: int) -> ServingModels:
    return ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": horizon}
    )


def test_each_cycle_keeps_the_band_it_made_for_fifteen_minutes_ahead(
    sessions: sessionmaker[Session],
) -> None:
    models = _models(horizon=30)
    assert _cycle(sessions, models, 0) == "ok"
    with sessions() as session:
        forecasts = {f.series_id: f for f in session.scalars(sa.select(ForecastRow))}
    kept = _history(sessions)
    assert len(kept) == 2 and {k.series_id for k in kept} == set(forecasts)
    for k in kept:
        f = forecasts[k.series_id]
        assert k.made_at == f.made_at and k.target_ts == f.made_at + 900
        # the 15th step of the horizon (made_at + 15 * 60 s), quantiles 0.1 / 0.5 / 0.9
        assert [k.p10, k.p50, k.p90] == f.values[14]
        assert k.p10 < k.p50 < k.p90

    assert _cycle(sessions, models, 0) == "noop"  # the same step again writes nothing twice
    assert len(_history(sessions)) == 2
    for minute in (1, 2, 3):
        _cycle(sessions, models, minute)
    kept = _history(sessions)
    assert len(kept) == 8
    made = sorted({k.made_at for k in kept})
    assert [m - made[0] for m in made] == [0, 60, 120, 180]


def test_a_horizon_short_of_fifteen_minutes_keeps_its_last_step(
    sessions: sessionmaker[Session],
) -> None:
    _cycle(sessions, _models(horizon=10), 0)
    assert {k.target_ts - k.made_at for k in _history(sessions)} == {600}


def test_a_rolled_back_cycle_keeps_no_history(sessions: sessionmaker[Session]) -> None:
    _cycle(sessions, _models(horizon=30), 0, commit=False)
    assert _history(sessions) == []


def test_old_steps_are_pruned_in_batches_and_recent_ones_stay(
    sessions: sessionmaker[Session],
) -> None:
    now = START + 3 * 86400
    cutoff = now - 2 * 86400
    old = [cutoff - STEP * i for i in range(1, 6)]
    recent = [cutoff, now]
    with sessions() as session:
        series = SeriesRow(
            target="cpu",
            key="k",
            labels={},
            service="a",
            first_seen=from_epoch(START),
            last_seen=from_epoch(now),
        )
        session.add(series)
        session.flush()
        for ts in old + recent:
            session.add(
                ForecastHistoryRow(
                    series_id=series.id, target_ts=ts, made_at=ts - 900, p10=1, p50=2, p90=3
                )
            )
        session.commit()
    with sessions() as session:
        assert prune_forecast_history(session, before=cutoff, limit=3) == 3
        assert prune_forecast_history(session, before=cutoff, limit=3) == 2  # short: done
        assert prune_forecast_history(session, before=cutoff, limit=3) == 0
        session.commit()
    assert [k.target_ts for k in _history(sessions)] == recent
