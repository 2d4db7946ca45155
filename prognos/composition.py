"""The composition root: settings in, a ready ServiceContext out (engine, source, targets)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

from core.clock import Clock, SystemClock
from core.database import create_engine, integrity_problem, migrate, session_factory
from core.errors import ConfigError
from core.settings import Settings, TargetSettings
from ingest.domain import Source
from ingest.prometheus import PrometheusSource
from ingest.replay import ReplaySource
from models.errors import ModelInputError
from models.service import ServingModels
from prognos.context import ServiceContext
from prognos.sample import ensure_sample_data
from remediation import audit
from remediation.actions import ACTIONS
from remediation.executor import Executor
from remediation.playbooks import PlaybookError, load_playbooks
from remediation.steps import prometheus_condition
from remediation.vault import CredentialBroker

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
    settings: Settings,
    *,
    clock: Clock | None = None,
    run_migrations: bool = True,
    source: tuple[Source, list[TargetSettings]] | None = None,
) -> ServiceContext:
    """Everything the service runs on; `source` (a source and its targets) replaces the one the
    settings name — `prognos demo` passes its simulated shop."""
    engine = create_engine(settings.database_url, echo=settings.database.echo)
    integrity = integrity_problem(engine)  # before migrating: never write to a damaged file
    if run_migrations and integrity is None:
        migrate(engine)
    feed, targets = build_source(settings) if source is None else source
    log.info("source: %s; %d target(s)", feed.describe(), len(targets))
    shape = {k: v for k, v in settings.models.config.items() if k in ("context_length", "horizon")}
    sessions = session_factory(engine)
    checkpoint = audit.checkpoint_for(settings)
    audit.anchor_sessions(sessions, checkpoint)
    context = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        source=feed,
        targets=targets,
        clock=clock or SystemClock(),
        models=ServingModels(cold_start=settings.models.cold_start, cold_config=shape),
    )
    context.integrity = integrity
    if context.integrity:
        log.error("%s; restore it from a backup (`/readyz` reports not ready)", context.integrity)
    else:
        with sessions() as session:
            for family, problem in context.models.verify(session).items():
                log.error(
                    "model %s: %s (the previous model or the cold band serves)", family, problem
                )
    for target in targets:  # refuse bad detector settings at start, naming the target
        try:
            context.detector_for(target)
        except ModelInputError as exc:
            raise ConfigError(f"targets.{target.name}: {exc.message}") from exc
    try:
        context.playbooks = load_playbooks(settings.remediation.playbooks_dir, actions=ACTIONS)
    except PlaybookError as exc:
        # Forecasting and the API keep working; remediation waits until the files are fixed.
        log.error(
            "%s\nno playbooks are loaded; `prognos playbook validate` checks them", exc.message
        )
        context.playbooks = {}
    executor = build_executor(context, checkpoint)
    # The executor runs wherever the API runs (`run`, `serve`): an approval wakes it at once.
    context.wake_executor = executor.wake
    context.on_start.append(executor.start)
    context.on_stop.append(executor.stop)
    return context


def build_executor(context: ServiceContext, checkpoint: Path) -> Executor:
    settings = context.settings
    broker = CredentialBroker(settings.vault) if settings.vault.url else None
    prometheus = settings.prometheus.url if settings.effective_source == "prometheus" else None
    return Executor(
        context.sessions,
        broker,
        settings.remediation,
        owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
        playbooks=context.loaded_playbooks,
        actions=ACTIONS,
        prometheus_query=prometheus_condition(prometheus) if prometheus else None,
        clock=context.clock,
        audit_checkpoint=checkpoint,
    )
