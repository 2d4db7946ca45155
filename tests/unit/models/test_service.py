"""Serving on both databases: the forecast/score cycle, training, promotion and rollback."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from ingest import service as ingest_service
from models import registry
from models.domain import History
from models.scoring import ScoringConfig
from models.service import CalibratorBank, ServingModels, forecast_cycle, train_model
from models.tables import AnomalyScoreRow, ForecastRow, ModelRow
from tests.unit.fakes import FakeSeries, FakeSource, make_target

STEP = 60
START = 1_767_225_600  # 2026-01-01T00:00Z
TARGET = make_target("cpu", lookback=timedelta(hours=6))
TINY_LSTM = {
    "context_length": 30,
    "horizon": 10,
    "hidden_size": 8,
    "max_epochs": 2,
    "windows_per_epoch": 256,
    "batch_size": 64,
}


def wave(phase: float, spike_at: int | None = None):
    def value(ts: int) -> float:
        base = 10 + 3 * math.sin(2 * math.pi * (ts - START) / 3600 + phase)
        base += 0.3 * math.sin(ts * 12.9898)  # deterministic jitter
        return base + (25.0 if spike_at is not None and ts == spike_at else 0.0)

    return value


def ingest_until(sessions: sessionmaker[Session], source: FakeSource, now: datetime) -> None:
    with sessions() as session:
        ingest_service.ingest_target(
            session,
            source=source,
            target=TARGET,
            now=now,
            lag=timedelta(0),
            max_catchup=timedelta(days=1),
        )
        session.commit()


def run_cycle(sessions, models, bank, now):
    with sessions() as session:
        summary = forecast_cycle(
            session, target=TARGET, models=models, calibrators=bank, anomaly_threshold=4.0, now=now
        )
        session.commit()
    return summary


def test_cycle_scores_against_the_previous_forecast_and_flags_a_spike(
    sessions: sessionmaker[Session],
) -> None:
    spike = START + 6 * 3600 + 50 * STEP
    source = FakeSource(
        [
            FakeSeries("cpu", {"service": "a"}, value=wave(0.0, spike_at=spike)),
            FakeSeries("cpu", {"service": "b"}, value=wave(1.0)),
        ]
    )
    models = ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": 10}
    )
    bank = CalibratorBank(ScoringConfig(calibration_min=20))
    now = from_epoch(START + 6 * 3600)
    ingest_until(sessions, source, now)
    first = run_cycle(sessions, models, bank, now)
    assert (first.status, first.series, first.scored) == ("ok", 2, 0)  # nothing to compare yet
    assert run_cycle(sessions, models, bank, now).status == "noop"  # same step: idempotent

    for minute in range(1, 61):
        now = from_epoch(START + 6 * 3600 + minute * STEP)
        ingest_until(sessions, source, now)
        summary = run_cycle(sessions, models, bank, now)
        assert summary.scored == 2
    with sessions() as session:
        scores = {
            (row.series_id, row.ts): row.score
            for row in session.scalars(sa.select(AnomalyScoreRow))
        }
        forecasts = list(session.scalars(sa.select(ForecastRow)))
    assert len(scores) == 120
    spiked = [s for (sid, ts), s in scores.items() if ts == spike and s is not None]
    assert spiked and max(spiked) > 4.0
    others = [s for (sid, ts), s in scores.items() if ts != spike and s is not None]
    assert np.mean(np.array(others) > 4.0) < 0.05
    assert {f.made_at for f in forecasts} == {START + 7 * 3600}
    assert all(len(f.values) == 10 and len(f.values[0]) == 3 for f in forecasts)


def test_calibration_state_survives_a_restart(sessions: sessionmaker[Session]) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"}, value=wave(0.0))])
    models = ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": 10}
    )
    bank = CalibratorBank(ScoringConfig(calibration_min=20))
    for minute in range(0, 40):
        now = from_epoch(START + 6 * 3600 + minute * STEP)
        ingest_until(sessions, source, now)
        run_cycle(sessions, models, bank, now)
    restarted = CalibratorBank(ScoringConfig(calibration_min=20))
    now = from_epoch(START + 6 * 3600 + 40 * STEP)
    ingest_until(sessions, source, now)
    run_cycle(sessions, models, restarted, now)
    with sessions() as session:
        newest = session.scalars(
            sa.select(AnomalyScoreRow).order_by(AnomalyScoreRow.ts.desc()).limit(1)
        ).one()
    assert newest.score is not None  # 39 earlier magnitudes were reloaded, so it is calibrated


def histories(n: int = 4, hours: int = 12) -> list[History]:
    from ingest.domain import SeriesKey

    steps = hours * 60
    out = []
    for i in range(n):
        ts = START + np.arange(steps) * STEP
        values = np.array([wave(i * 0.7)(int(t)) for t in ts])
        out.append(History(SeriesKey.of("cpu", {"service": f"s{i}"}), STEP, START, values))
    return out


def test_training_registers_promotes_and_a_worse_model_is_rejected(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with sessions() as session:
        first = train_model(
            session,
            histories=histories(),
            forecaster_name="lstm",
            forecaster_config=TINY_LSTM,
            holdout=0.2,
            model_dir=tmp_path,
            targets=["cpu"],
            now=now,
        )
        session.commit()
        assert first.promoted and first.active_loss is None
        # A model that only repeats the last value is worse on a clean wave: not promoted.
        second = train_model(
            session,
            histories=histories(),
            forecaster_name="naive",
            forecaster_config={"context_length": 30, "horizon": 10},
            holdout=0.2,
            model_dir=tmp_path,
            targets=["cpu"],
            now=now,
        )
        session.commit()
        rows = {row.version: row for row in registry.list_models(session)}
    assert not second.promoted and second.active_loss == pytest.approx(first.candidate_loss)
    assert rows[1].status == "active" and rows[2].status == "rejected"
    assert (tmp_path / "step60s" / "v1" / "weights.pt").is_file()


def test_a_corrupt_artifact_is_refused_and_the_previous_model_keeps_serving(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with sessions() as session:
        train_model(
            session,
            histories=histories(),
            forecaster_name="lstm",
            forecaster_config=TINY_LSTM,
            holdout=0.2,
            model_dir=tmp_path,
            targets=["cpu"],
            now=now,
        )
        session.commit()
    models = ServingModels(cold_start="median_band", cold_config={})
    with sessions() as session:
        serving = models.for_step(session, STEP)
        assert serving.name == "lstm"
        # v2 is registered, then its weights are damaged before anyone promotes it.
        shutil.copytree(tmp_path / "step60s" / "v1", tmp_path / "step60s" / "v2")
        (tmp_path / "step60s" / "v2" / "weights.pt").write_bytes(b"garbage")
        v1 = registry.active_model(session, "step60s")
        assert v1 is not None
        row = ModelRow(
            family="step60s",
            version=2,
            forecaster="lstm",
            step=STEP,
            path=str(tmp_path / "step60s" / "v2"),
            status="candidate",
            created_at=now,
            train_start=v1.train_start,
            train_end=v1.train_end,
            series_count=4,
            metrics={},
        )
        session.add(row)
        session.flush()
        with pytest.raises(Exception, match=r"weights\.pt"):
            registry.promote(session, model_id=row.id, now=now)
        session.commit()
        assert registry.active_model(session, "step60s").version == 1  # type: ignore[union-attr]
        assert models.for_step(session, STEP) is serving


def test_rollback_returns_to_the_previous_version(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with sessions() as session:
        for _ in range(2):
            train_model(
                session,
                histories=histories(),
                forecaster_name="median_band",
                forecaster_config={"context_length": 30, "horizon": 10},
                holdout=0.2,
                model_dir=tmp_path,
                targets=["cpu"],
                now=now,
            )
            session.commit()
        # Same loss both times: v2 is not better, so force it active to roll it back.
        v2 = session.scalars(sa.select(ModelRow).where(ModelRow.version == 2)).one()
        v2.status = "candidate"
        registry.promote(session, model_id=v2.id, now=now)
        session.commit()
        back = registry.rollback(session, family="step60s", now=now)
        session.commit()
        assert back.version == 1
        assert {r.version: r.status for r in registry.list_models(session)} == {
            1: "active",
            2: "rejected",
        }


def test_alarms_fire_on_k_of_n_recent_scores_and_name_their_service(
    sessions: sessionmaker[Session],
) -> None:
    from models.service import firing_alarms

    source = FakeSource(
        [
            FakeSeries("cpu", {"service": "cart", "pod": "a"}),
            FakeSeries("cpu", {"service": "shop", "pod": "b"}),
            FakeSeries("cpu", {"service": "shop", "pod": "c"}),
        ]
    )
    ingest_until(sessions, source, from_epoch(START + 600))
    with sessions() as session:
        ids = session.scalars(sa.text("SELECT id FROM series ORDER BY id")).all()
        scores = {
            ids[0]: [1.0, 5.0, 1.0, 6.0],  # newest is a hit, 2 of the last 3: fires
            ids[1]: [5.0, 6.0, 7.0, 1.0],  # newest is quiet: cleared
            ids[2]: [1.0, 1.0, 1.0, 9.0],  # one hit only: not yet
        }
        for series_id, values in scores.items():
            for i, value in enumerate(values):
                session.add(
                    AnomalyScoreRow(
                        series_id=series_id,
                        ts=START + i * STEP,
                        z=0.0,
                        magnitude=0.0,
                        score=value,
                        model="m",
                    )
                )
        session.commit()
        fired = firing_alarms(session, threshold=4.0, hits=2, window=3, since=START - 1)
        assert [(a.series_id, a.service, a.score, a.since) for a in fired] == [
            (ids[0], "cart", 6.0, START + STEP)
        ]
        # Scores older than `since` do not count.
        assert firing_alarms(session, threshold=4.0, hits=2, window=3, since=START + 2 * STEP) == []
