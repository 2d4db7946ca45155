"""The composition root: settings in, a ready ServiceContext out (engine, source, targets)."""

from __future__ import annotations

import logging
from pathlib import Path

from api.context import ServiceContext
from core.clock import Clock, SystemClock
from core.database import create_engine, migrate, session_factory
from core.settings import Settings, TargetSettings
from ingest.domain import Source
from ingest.prometheus import PrometheusSource
from ingest.replay import ReplaySource
from models.scoring import ScoringConfig
from models.service import CalibratorBank, ServingModels
from prognos.sample import ensure_sample_data

log = logging.getLogger(__name__)


def build_source(settings: Settings) -> tuple[Source, list[TargetSettings]]:
    if settings.effective_source == "prometheus":
        return PrometheusSource(settings.prometheus), list(settings.targets)
    folder: Path
    if settings.replay.path is None:
        folder = ensure_sample_data(settings.data_dir / "sample")
    else:
        folder = settings.replay.path
    source = ReplaySource(
        folder, loop=settings.replay.loop, max_points=settings.prometheus.max_points_per_chunk
    )
    targets = list(settings.targets) or source.targets()
    return source, targets


def build_context(
    settings: Settings, *, clock: Clock | None = None, run_migrations: bool = True
) -> ServiceContext:
    engine = create_engine(settings.database_url, echo=settings.database.echo)
    if run_migrations:
        migrate(engine)
    source, targets = build_source(settings)
    log.info("source: %s; %d target(s)", source.describe(), len(targets))
    shape = {k: v for k, v in settings.models.config.items() if k in ("context_length", "horizon")}
    return ServiceContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        source=source,
        targets=targets,
        clock=clock or SystemClock(),
        models=ServingModels(cold_start=settings.models.cold_start, cold_config=shape),
        calibrators=CalibratorBank(ScoringConfig()),
    )
