"""Data-parallel LSTM training (`models.train_workers`): 2 processes on loopback, gloo, CPU."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.database import create_engine, migrate, session_factory
from core.settings import ModelSettings
from models import registry
from models.domain import ContextBatch, History
from models.errors import ModelError
from models.forecasters import parallel
from models.forecasters.base import EpochReport
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig
from models.service import TrainingOutcome, train_model
from models.tables import ModelRow
from tests.unit.models.test_service import STEP, TINY_LSTM, histories

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """SQLite only: what is tested here is the training, the stores are tested elsewhere."""
    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def train(
    session: Session, data: list[History], workers: int, epochs: list[EpochReport] | None = None
) -> TrainingOutcome:
    outcome = train_model(
        session,
        histories=data,
        forecaster_name="lstm",
        forecaster_config=TINY_LSTM,
        holdout=0.2,
        store=registry.ArtifactStore("database", Path("unused")),
        targets=["cpu"],
        now=NOW,
        on_epoch=None if epochs is None else epochs.append,
        workers=workers,
    )
    session.commit()
    return outcome


def test_two_processes_train_a_model_that_loads_and_forecasts(
    sessions: sessionmaker[Session],
) -> None:
    epochs: list[EpochReport] = []
    with sessions() as session:
        one = train(session, histories(), workers=1)
        two = train(session, histories(), workers=2, epochs=epochs)
        row = session.get(ModelRow, two.model_id)
        assert row is not None
        loaded, metadata = registry.load_artifact(session, row.path)
    # Progress came from rank 0, once per epoch; the held-out loss is the 1-process run's kind.
    assert [e.epoch for e in epochs] == [1, 2] and all(np.isfinite(e.val_loss) for e in epochs)
    assert 0.5 < two.candidate_loss / one.candidate_loss < 2.0
    assert metadata.metrics["epochs"] == 2 and isinstance(loaded, GlobalLSTMForecaster)
    values = np.stack([h.values[-30:] for h in histories()]).astype(np.float32)
    end = np.array([h.start + (len(h) - 1) * STEP for h in histories()])
    forecast = loaded.predict(ContextBatch(values, end, STEP))
    assert forecast.values.shape == (4, 10, len(loaded.quantiles))
    assert np.isfinite(forecast.values).all()


def test_a_failing_rank_is_a_clear_error_and_nothing_is_saved(
    sessions: sessionmaker[Session],
) -> None:
    # Rank 1's shard of the training windows (the newer half of each series' starts) is all
    # gaps: it fails on its own, and the caller (rank 0) must say so and save nothing.
    gappy = [History(h.key, h.step, h.start, h.values.copy()) for h in histories(n=2)]
    for h in gappy:
        h.values[228:500] = np.nan
    with sessions() as session, pytest.raises(ModelError, match=r"rank 1: .*mostly gaps"):
        train(session, gappy, workers=2)
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ModelRow)) == 0


def test_one_worker_is_the_in_process_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSettings().train_workers == 1

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no process may be started for one worker")

    monkeypatch.setattr(parallel.multiprocessing, "start_processes", refuse)
    config = LSTMConfig(**{**TINY_LSTM, "max_epochs": 1})
    alone = GlobalLSTMForecaster(config)
    report = parallel.fit_parallel(alone, histories(n=2), 1)
    direct = GlobalLSTMForecaster(config)
    assert direct.fit(histories(n=2)).best_val_loss == report.best_val_loss


def test_rank_0s_own_error_is_reported_and_the_workers_are_stopped() -> None:
    import multiprocessing as mp

    def broken(report: EpochReport) -> None:
        raise ValueError("progress could not be written")

    forecaster = GlobalLSTMForecaster(LSTMConfig(**TINY_LSTM))
    before = set(mp.active_children())  # other tests' workers (e.g. span intake) may live on
    with pytest.raises(ModelError, match=r"failed: progress could not be written$"):
        parallel.fit_parallel(forecaster, histories(n=2), 2, on_epoch=broken)
    assert set(mp.active_children()) <= before
