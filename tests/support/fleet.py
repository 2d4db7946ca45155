"""Replaying a generated fleet through an engine's cycles, and reading back every row the
forecast/score stage writes, keyed by series identity: what the engine equivalence tests
compare (unit tests in-process, integration tests on Ray)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from core.settings import BreachSettings, TargetSettings
from models import registry
from models import service as model_service
from models.artifacts import ArtifactMetadata, save_model
from models.detector import DetectorConfig
from models.forecasters.registry import build
from models.service import CycleSummary, ServingModels
from models.tables import (
    AnomalyScoreRow,
    BreachRow,
    DetectorStateRow,
    ForecastHistoryRow,
    ForecastRow,
)
from sim.fleet import START, eventful_values_at, fleet_keys, store_steps

STEP = 60
HISTORY = 150  #: steps stored before the first cycle
#: Steps stored before each later cycle: one at a time, then a missed cycle's three at once.
LATER = (1, 1, 1, 3, 1)
TINY_LSTM = {"context_length": 48, "horizon": 10, "hidden_size": 8, "max_epochs": 1}
DETECTOR = DetectorConfig(warmup_rows=20, spatial_warmup_rows=40)

RunCycle = Callable[[TargetSettings, int], Any]  #: (target, newest step) -> summary


def fleet_target() -> TargetSettings:
    return TargetSettings(
        name="fleet",
        query="fleet",
        step=timedelta(seconds=STEP),
        breach=BreachSettings(threshold=3000.0, consecutive=2),
    )


def activate_untrained_lstm(sessions: sessionmaker[Session], folder: Path) -> None:
    """A small untrained LSTM saved as an artifact and made the active model of the step (a
    forward pass is what serving costs and does, whatever the weights)."""
    forecaster = build("lstm", TINY_LSTM)
    forecaster.mark_fitted(STEP)
    metadata = ArtifactMetadata(
        name=registry.family_for(STEP),
        version="1",
        train_start=from_epoch(START),
        train_end=from_epoch(START),
        series_count=0,
        detector=DETECTOR.model_dump(mode="json"),
    )
    path = save_model(forecaster, folder / "v1", metadata=metadata)
    with sessions() as session:
        row = registry.register(
            session,
            family=registry.family_for(STEP),
            forecaster="lstm",
            step=STEP,
            path=path,
            metadata=metadata,
            version=1,
            now=from_epoch(START),
        )
        registry.promote(session, model_id=row.id, now=from_epoch(START))
        session.commit()


def serving() -> ServingModels:
    """Models as a worker serves them: the registry's active one, else the cold-start band."""
    return ServingModels(
        cold_start="median_band",
        cold_config={k: TINY_LSTM[k] for k in ("context_length", "horizon")},
    )


def today(sessions: sessionmaker[Session]) -> RunCycle:
    """The stage as it ran before engines: one `forecast_cycle` per target, one commit."""
    models = serving()

    def run(target: TargetSettings, end: int) -> CycleSummary:
        with sessions() as session:
            summary = model_service.forecast_cycle(
                session, target=target, models=models, detector=DETECTOR, now=from_epoch(end)
            )
            session.commit()
        return summary

    return run


def replay(
    sessions: sessionmaker[Session], run_cycle: RunCycle, *, series: int = 60, late: int = 3
) -> list[Any]:
    """Store the fleet's history, run a cycle, then store `LATER` steps before each further
    cycle; `late` series appear only at the last steps (too young to forecast). Returns the
    cycles' summaries."""
    target = fleet_target()
    keys = fleet_keys(target.name, series + late)
    rng = np.random.default_rng(7)
    ts = START + STEP * np.arange(HISTORY)
    store_steps(sessions, target, keys[:series], ts, eventful_values_at(series, ts, rng))
    summaries = [run_cycle(target, int(ts[-1]))]
    end = int(ts[-1])
    for i, count in enumerate(LATER):
        ts = end + STEP * np.arange(1, count + 1)
        n = series + late if i == len(LATER) - 1 else series
        store_steps(sessions, target, keys[:n], ts, eventful_values_at(n, ts, rng))
        end = int(ts[-1])
        summaries.append(run_cycle(target, end))
    return summaries


def stage_rows(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the forecast/score stage wrote, series ids replaced by series keys, sorted."""
    from ingest.tables import SeriesRow

    out: dict[str, list[tuple[Any, ...]]] = {}
    tables: list[Any] = [
        ForecastRow,
        AnomalyScoreRow,
        DetectorStateRow,
        BreachRow,
        ForecastHistoryRow,
    ]
    with sessions() as session:
        keys = {i: k for i, k in session.execute(sa.select(SeriesRow.id, SeriesRow.key))}
        for table in tables:
            columns = list(table.__table__.columns)
            rows = session.execute(sa.select(*columns)).all()
            named = [
                tuple(
                    keys[v] if c.name == "series_id" else _plain(v)
                    for c, v in zip(columns, r, strict=True)
                )
                for r in rows
            ]
            out[table.__tablename__] = sorted(named, key=repr)
    return out


def _plain(value: Any) -> Any:
    """A value as compared: JSON columns (dicts, lists) by their repr."""
    return repr(value) if isinstance(value, dict | list) else value
