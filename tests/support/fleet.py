"""Replaying a generated fleet through an engine's cycles, and reading back every row the
forecast/score stage writes, keyed by series identity: what the engine equivalence tests
compare (unit tests in-process, integration tests on Ray)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from core.settings import Settings, TargetSettings
from models import service as model_service
from models.detector import DetectorConfig
from models.service import CycleSummary, ServingModels
from models.tables import (
    AnomalyScoreRow,
    BreachRow,
    DetectorStateRow,
    ForecastHistoryRow,
    ForecastRow,
)
from sim.fleet import (
    START,
    activate_untrained,
    eventful_values_at,
    fleet_keys,
    fleet_target,
    store_steps,
)

STEP = 60
HISTORY = 150  #: steps stored before the first cycle
#: Steps stored before each later cycle: one at a time, then a missed cycle's three at once.
LATER = (1, 1, 1, 3, 1)
TINY_LSTM = {"context_length": 48, "horizon": 10, "hidden_size": 8, "max_epochs": 1}
DETECTOR = DetectorConfig(warmup_rows=20, spatial_warmup_rows=40)

RunCycle = Callable[[TargetSettings, int], Any]  #: (target, newest step) -> summary


def activate_untrained_lstm(sessions: sessionmaker[Session], folder: Path) -> None:
    """A small untrained LSTM as the step's active model, with the tests' detector settings."""
    activate_untrained(
        sessions,
        folder,
        forecaster="lstm",
        config=TINY_LSTM,
        step=STEP,
        detector=DETECTOR.model_dump(mode="json"),
    )


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


def ray_engine(url: str, sessions: sessionmaker[Session], workers: int, **ray: Any) -> Any:
    """A `RayEngine` of `workers` half-CPU actors on the database at `url` (Ray joined);
    `ray` adds settings of the `ray` section."""
    from prognos.engine.ray_engine import RayEngine

    settings = Settings(
        database={"url": url},
        engine="ray",
        ray={"workers": workers, "cpus_per_worker": 0.5, **ray},
        shards={"batch_series": 25},
    )
    return RayEngine.start(settings=settings, sessions=sessions, models=serving())


def on(engine: Any) -> RunCycle:
    """Cycles run by an engine (`engine.forecast`), as `replay` runs them."""

    def run(target: TargetSettings, end: int) -> CycleSummary:
        summary: CycleSummary = engine.forecast(
            target, detector=DETECTOR, now=from_epoch(end), max_catchup=1440
        )
        return summary

    return run


def replay(
    sessions: sessionmaker[Session], run_cycle: RunCycle, *, series: int = 35, late: int = 3
) -> list[Any]:
    """Store the fleet's history, run a cycle, then store `LATER` steps before each further
    cycle; `late` series appear only at the last steps (too young to forecast). Returns the
    cycles' summaries."""
    target = fleet_target("fleet", threshold=3000.0, consecutive=2)
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
    """A value as compared: JSON objects by their repr, lists (forecast values) as they are."""
    return repr(value) if isinstance(value, dict) else value


#: Forecasts made from a batch of one series differ from batched ones in the last bits of float32
#: (PyTorch's CPU kernels for one row are not those for many), so rows from workers whose shards
#: hold another split of the series agree to this relative tolerance, not bit for bit.
FLOAT32_TOLERANCE = 1e-5


def differences(
    got: dict[str, list[tuple[Any, ...]]],
    expected: dict[str, list[tuple[Any, ...]]],
    *,
    rel: float = 0.0,
) -> list[str]:
    """Where `got` differs from `expected` (numbers within `rel` of each other are equal)."""
    out = []
    for table, rows in expected.items():
        other = got.get(table, [])
        if len(other) != len(rows):
            out.append(f"{table}: {len(other)} rows, expected {len(rows)}")
            continue
        out.extend(
            f"{table}: {a!r} != {b!r}"
            for a, b in zip(sorted(other, key=_key), sorted(rows, key=_key), strict=True)
            if not _close(a, b, rel)
        )
    return out


def _key(row: tuple[Any, ...]) -> str:
    return repr(row[:2])  # series key and its step: unique in every table compared


def _close(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    return bool(a == b)
