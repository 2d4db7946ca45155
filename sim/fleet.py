"""A fleet of many generated series (the cycle and scale benches, the engine tests): a daily
cycle plus noise at levels from 5 to 5,000, optionally with spikes and a few series trending up,
stored through `ingest.service.store` as an ingest cycle would, one step grid per call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.clock import from_epoch
from core.settings import BreachSettings, TargetSettings
from ingest import service as ingest_service
from ingest.domain import SeriesData, SeriesKey
from ingest.tables import WatermarkRow
from models import registry
from models.artifacts import ArtifactMetadata, save_model
from models.forecasters.registry import build

START = 1_767_225_600  # 2026-01-01T00:00Z


def fleet_keys(target: str, n: int) -> list[SeriesKey]:
    """`n` series identities of `target`, spread over 50 services."""
    return [SeriesKey.of(target, {"service": f"svc{i % 50}", "pod": f"p{i}"}) for i in range(n)]


def fleet_target(name: str, *, threshold: float = 1e9, consecutive: int = 4) -> TargetSettings:
    """The fleet's target (60 s step) with a breach limit (by default one never reached)."""
    return TargetSettings(
        name=name,
        query=name,
        step=timedelta(seconds=60),
        breach=BreachSettings(threshold=threshold, consecutive=consecutive),
    )


def values_at(n: int, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[n, len(ts)] values: level x (1 + 0.2 daily sine, each series in its own phase + 3 %
    noise)."""
    level = np.geomspace(5, 5000, n)[:, None]
    daily = np.sin(2 * np.pi * (ts[None, :] % 86_400) / 86_400 + np.arange(n)[:, None])
    return level * (1 + 0.2 * daily + 0.03 * rng.standard_normal((n, len(ts))))


def eventful_values_at(n: int, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`values_at` plus what the detector and the breach check act on, each a pure function of
    the series' index and the time: every 7th series spikes (x3) on one step in 97, and every
    5th climbs 2 % of its level per step (so it runs into a limit)."""
    out = values_at(n, ts, rng)
    index = np.arange(n)[:, None]
    step = (ts[None, :] // 60).astype(np.int64)
    spikes = (index % 7 == 0) & ((step + index) % 97 == 0)
    out = np.where(spikes, out * 3.0, out)
    level = np.geomspace(5, 5000, n)[:, None]
    climb = (index % 5 == 0) * 0.02 * level * ((step - START // 60) % 600)
    return np.asarray(out + climb)


def store_steps(
    sessions: Callable[[], Session],
    target: TargetSettings,
    keys: list[SeriesKey],
    ts: np.ndarray,
    values: np.ndarray,
) -> None:
    """Store `values` [len(keys), len(ts)] at `ts` and move the target's watermark to the last
    step, as an ingest cycle would."""
    series = [SeriesData(k, ts, values[i]) for i, k in enumerate(keys)]
    with sessions() as session:
        ingest_service.store(session, target=target, series=series, seen_at=from_epoch(int(ts[-1])))
        mark = session.get(WatermarkRow, target.name)
        if mark is None:
            session.add(
                WatermarkRow(
                    target=target.name,
                    query_digest="fleet",
                    step=target.step_seconds,
                    watermark=int(ts[-1]),
                    updated_at=from_epoch(int(ts[-1])),
                )
            )
        else:
            mark.watermark = int(ts[-1])
        session.commit()


def activate_untrained(
    sessions: Callable[[], Session],
    folder: Path,
    *,
    forecaster: str,
    config: dict[str, Any],
    step: int,
    detector: dict[str, Any] | None = None,
) -> None:
    """An untrained forecaster saved as an artifact and made the active model of `step`, as
    training would leave it (serving costs and does the same whatever the weights)."""
    model = build(forecaster, config)
    model.mark_fitted(step)
    metadata = ArtifactMetadata(
        name=registry.family_for(step),
        version="1",
        train_start=from_epoch(START),
        train_end=from_epoch(START),
        series_count=0,
        detector=detector,
    )
    path = save_model(model, folder / "v1", metadata=metadata)
    with sessions() as session:
        row = registry.register(
            session,
            family=registry.family_for(step),
            forecaster=forecaster,
            step=step,
            path=path,
            metadata=metadata,
            version=1,
            now=from_epoch(START),
        )
        registry.promote(session, model_id=row.id, now=from_epoch(START))
        session.commit()
