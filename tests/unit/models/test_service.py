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
from ingest.tables import SampleRow
from models import registry
from models.detector import Detector, DetectorConfig, unit_score
from models.domain import History
from models.evaluation.backtest import detect
from models.service import ServingModels, forecast_cycle, train_model
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


DETECTOR = DetectorConfig()


def run_cycle(sessions, models, now, detector=DETECTOR):
    with sessions() as session:
        summary = forecast_cycle(session, target=TARGET, models=models, detector=detector, now=now)
        session.commit()
    return summary


def test_cycle_scores_each_new_step_and_alarms_on_a_spike(
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
    now = from_epoch(START + 6 * 3600)
    ingest_until(sessions, source, now)
    first = run_cycle(sessions, models, now)
    # A new series is scored over the detector's window of history at once (its warm-up).
    assert (first.status, first.series, first.scored) == ("ok", 2, 2 * DETECTOR.window)
    assert run_cycle(sessions, models, now).status == "noop"  # same step: idempotent

    for minute in range(1, 61):
        now = from_epoch(START + 6 * 3600 + minute * STEP)
        ingest_until(sessions, source, now)
        summary = run_cycle(sessions, models, now)
        assert summary.scored == 2
    with sessions() as session:
        rows = list(session.scalars(sa.select(AnomalyScoreRow)))
        forecasts = list(session.scalars(sa.select(ForecastRow)))
    assert len(rows) == 2 * (DETECTOR.window + 60)
    alarms = [(r.ts, r.evidence) for r in rows if r.alarm]
    assert [ts for ts, _ in alarms] == [spike]
    assert alarms[0][1] is not None and alarms[0][1]["component"] == "level"
    assert alarms[0][1]["direction"] == "above"
    assert {f.made_at for f in forecasts} == {START + 7 * 3600}
    assert all(len(f.values) == 10 and len(f.values[0]) == 3 for f in forecasts)


def test_missed_cycles_are_caught_up_and_match_the_backtest(
    sessions: sessionmaker[Session],
) -> None:
    """The daemon's cycle, run at irregular moments (missed cycles, a restart between), gives
    the same scores and alarms as the backtest's one pass of the detector over the series."""
    spike = START + 6 * 3600 + 37 * STEP
    source = FakeSource([FakeSeries("cpu", {"service": "a"}, value=wave(0.0, spike_at=spike))])
    models = ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": 10}
    )
    for minute in (0, 1, 2, 9, 10, 30, 31, 55, 80):  # gaps of 7, 20, 24 and 25 steps
        now = from_epoch(START + 6 * 3600 + minute * STEP)
        ingest_until(sessions, source, now)
        run_cycle(sessions, models, now)
    with sessions() as session:
        rows = list(session.scalars(sa.select(AnomalyScoreRow).order_by(AnomalyScoreRow.ts)))
    ts = np.array([r.ts for r in rows])
    assert (np.diff(ts) == STEP).all()  # every step scored once, none skipped
    assert ts[-1] == START + 6 * 3600 + 80 * STEP
    with sessions() as session:
        stored = np.array(list(session.scalars(sa.select(SampleRow.ts).order_by(SampleRow.ts))))
    # The first cycle warmed the detector on the whole stored lookback and wrote one window.
    assert ts[0] == stored[-1] - 80 * STEP - (DETECTOR.window - 1) * STEP
    values = np.array([wave(0.0, spike_at=spike)(int(t)) for t in stored])
    expected = Detector(DETECTOR).update(None, stored, values)
    tail = np.isin(stored, ts)
    np.testing.assert_allclose([r.score for r in rows], expected.score[tail], rtol=1e-5, atol=1e-9)
    assert [r.alarm for r in rows] == expected.alarm[tail].tolist()
    assert spike in ts[expected.alarm[tail]]
    # `prognos backtest nab` writes z / (1 + z) of the new-high score: the same numbers.
    backtest = detect(stored, values, DETECTOR)
    np.testing.assert_allclose(unit_score([r.magnitude for r in rows]), backtest[tail], rtol=1e-5)


def test_a_changed_detector_setting_starts_a_fresh_state(sessions: sessionmaker[Session]) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"}, value=wave(0.0))])
    models = ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": 10}
    )
    for minute in range(0, 5):
        now = from_epoch(START + 6 * 3600 + minute * STEP)
        ingest_until(sessions, source, now)
        run_cycle(sessions, models, now)
    other = DetectorConfig(threshold=5.0)
    now = from_epoch(START + 6 * 3600 + 5 * STEP)
    ingest_until(sessions, source, now)
    # A fresh state warms up on the window again; the steps already scored are kept, not doubled.
    assert run_cycle(sessions, models, now, detector=other).scored == 1
    with sessions() as session:
        models_used = set(session.scalars(sa.select(AnomalyScoreRow.model)))
    assert len(models_used) == 2


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
            store=registry.ArtifactStore("directory", tmp_path),
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
            store=registry.ArtifactStore("directory", tmp_path),
            targets=["cpu"],
            now=now,
        )
        session.commit()
        rows = {row.version: row for row in registry.list_models(session)}
    assert not second.promoted and second.active_loss == pytest.approx(first.candidate_loss)
    assert rows[1].status == "active" and rows[2].status == "rejected"
    assert (tmp_path / "step60s" / "v1" / "weights.pt").is_file()


def test_the_detector_settings_are_saved_with_the_model_and_old_artifacts_serve_defaults(
    sessions: sessionmaker[Session], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    now = datetime(2026, 1, 2, tzinfo=UTC)
    with sessions() as session:
        train_model(
            session,
            histories=histories(),
            forecaster_name="median_band",
            forecaster_config={"context_length": 30, "horizon": 10},
            holdout=0.2,
            store=registry.ArtifactStore("directory", tmp_path),
            targets=["cpu"],
            now=now,
            detector=DetectorConfig(threshold=4.5),
        )
        session.commit()
    metadata = tmp_path / "step60s" / "v1" / "metadata.json"
    assert json.loads(metadata.read_text())["detector"]["threshold"] == 4.5
    models = ServingModels(cold_start="median_band", cold_config={})
    with sessions() as session:
        models.for_step(session, STEP)
    assert models.detector_settings(STEP)["threshold"] == 4.5

    # An artifact from before detectors were saved: it loads, and says the defaults apply.
    raw = json.loads(metadata.read_text())
    del raw["detector"]
    metadata.write_text(json.dumps(raw))
    fresh = ServingModels(cold_start="median_band", cold_config={})
    with sessions() as session, caplog.at_level("INFO"):
        assert fresh.for_step(session, STEP).name == "median_band"
    assert fresh.detector_settings(STEP) == {}
    assert "without detector settings" in caplog.text


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
            store=registry.ArtifactStore("directory", tmp_path),
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
                store=registry.ArtifactStore("directory", tmp_path),
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
            ids[0]: [1.0, 5.0, 1.0, 6.0],  # alarms at steps 1 and 3
            ids[1]: [5.0, 6.0, 7.0, 1.0],  # one alarm, at step 0
            ids[2]: [1.0, 1.0, 1.0, 1.0],  # none
        }
        alarmed = {ids[0]: {1, 3}, ids[1]: {0}, ids[2]: set()}
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
                        alarm=i in alarmed[series_id],
                    )
                )
        session.commit()
        fired = firing_alarms(session, since=START - 1)
        assert [(a.series_id, a.service, a.score, a.since, a.ts) for a in fired] == [
            (ids[0], "cart", 6.0, START + STEP, START + 3 * STEP),
            (ids[1], fired[1].service, 5.0, START, START),
        ]
        # Alarms older than `since` do not count.
        assert [a.series_id for a in firing_alarms(session, since=START + 2 * STEP)] == [ids[0]]
        assert firing_alarms(session, since=START + 3 * STEP) == []


def test_the_cycle_gives_the_breach_check_the_season_so_a_daily_peak_is_no_trend(
    sessions: sessionmaker[Session],
) -> None:
    """A forecast band that reaches the limit near a daily peak: the series that peaked the
    same way yesterday is not warned about; a series without a yesterday still is."""
    from core.settings import BreachSettings
    from models.service import update_breaches

    step = 300
    target = make_target("mem", step=step, lookback=timedelta(days=2))
    now_ts = START + 2 * 86400

    def daily(ts: int) -> float:
        return 100 + 50 * math.sin(2 * math.pi * (ts % 86400) / 86400)

    source = FakeSource(
        [
            FakeSeries("mem", {"service": "periodic"}, value=daily),
            FakeSeries("mem", {"service": "young"}, start=now_ts - 3600, value=daily),
        ]
    )
    with sessions() as session:
        ingest_service.ingest_target(
            session,
            source=source,
            target=target,
            now=from_epoch(now_ts),
            lag=timedelta(0),
            max_catchup=timedelta(days=3),
        )
        session.commit()
        ids = dict(session.execute(sa.text("SELECT service, id FROM series ORDER BY id")).all())
        end = now_ts // step * step
        rising = [[v - 3, v, v + 6] for v in np.linspace(148, 151, 6)]  # p90 reaches 157
        rows = [
            {
                "series_id": ids[name],
                "made_at": end,
                "step": step,
                "model": "m",
                "quantiles": [0.1, 0.5, 0.9],
                "values": rising,
            }
            for name in ("periodic", "young")
        ]
        update_breaches(session, BreachSettings(threshold=152.0), rows, now=from_epoch(now_ts))
        probability = dict(
            session.execute(
                sa.text(
                    "SELECT s.service, b.probability FROM breaches b "
                    "JOIN series s ON s.id = b.series_id"
                )
            ).all()
        )
    assert probability["young"] > 0.5  # the forecast decides alone
    assert probability["periodic"] < probability["young"]
    assert probability["periodic"] < 0.5  # yesterday's path stayed below 152


def test_a_series_whose_forecast_is_not_finite_keeps_no_forecast(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows stored are each finite forecast, rounded to 9 places in the model's dtype."""
    from models import service

    source = FakeSource(
        [FakeSeries("cpu", {"service": s}, value=wave(p)) for s, p in (("a", 0.0), ("b", 1.0))]
    )
    models = ServingModels(
        cold_start="median_band", cold_config={"context_length": 60, "horizon": 10}
    )
    made: list[np.ndarray] = []
    predict = service.predict_windows

    def with_a_gap(*args, **kwargs):  # type: ignore[no-untyped-def]
        forecast, cold = predict(*args, **kwargs)
        forecast = forecast.astype(np.float32) + np.float32(1e-7)
        forecast[1, 3, 0] = np.nan  # the second series' (b's: ids in order) forecast
        made.append(forecast)
        return forecast, cold

    monkeypatch.setattr(service, "predict_windows", with_a_gap)
    now = from_epoch(START + 6 * 3600)
    ingest_until(sessions, source, now)
    assert run_cycle(sessions, models, now).status == "ok"
    with sessions() as session:
        stored = {f.series_id: f.values for f in session.scalars(sa.select(ForecastRow))}
    assert list(stored) == [1]
    assert stored[1] == made[0][0].round(9).tolist()
