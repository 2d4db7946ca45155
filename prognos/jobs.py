"""Scheduled jobs: each computes its window, opens a session, calls one service, commits."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from api.context import ServiceContext
from core.clock import to_epoch
from core.database import session_scope
from core.errors import PrognosError
from core.settings import TargetSettings
from ingest import service as ingest_service
from ingest.errors import IngestError
from ingest.service import IngestSummary
from models import service as model_service
from models.forecasters.base import EpochCallback
from models.service import CycleSummary, TrainingOutcome
from rca.incidents import GroupingResult

log = logging.getLogger(__name__)


def ingest_cycle(context: ServiceContext) -> list[IngestSummary]:
    """One ingest cycle over every target; a failing target does not stop the others."""
    settings = context.settings.ingest
    summaries = []
    for target in context.targets:
        now = context.clock.now()
        with session_scope(context.sessions) as session:
            try:
                summary = ingest_service.ingest_target(
                    session,
                    source=context.source,
                    target=target,
                    now=now,
                    lag=settings.lag,
                    max_catchup=settings.max_catchup,
                )
                session.commit()
            except Exception as exc:  # one target's failure is recorded; the others go on
                session.rollback()
                summary = ingest_service.record_failure(
                    session,
                    target=target.name,
                    kind="cycle",
                    window=None,
                    error=exc,
                    started_at=now,
                )
                session.commit()
                if isinstance(exc, IngestError):
                    log.warning("ingest of target %s failed: %s", target.name, exc.message)
                else:
                    log.exception("ingest of target %s failed unexpectedly", target.name)
        if summary.status == "ok":
            log.info(
                "ingest %s: %d series, %d points (%d new series) in %.2fs",
                target.name,
                summary.series,
                summary.points,
                summary.new_series,
                summary.seconds,
            )
        summaries.append(summary)
    return summaries


def forecast_cycle(context: ServiceContext) -> list[CycleSummary]:
    """Score every series' newest step against its earlier forecast, then forecast again."""
    summaries = []
    for target in context.targets:
        with session_scope(context.sessions) as session:
            try:
                summary = model_service.forecast_cycle(
                    session,
                    target=target,
                    models=context.models,
                    calibrators=context.calibrators,
                    anomaly_threshold=context.settings.models.anomaly_threshold,
                    now=context.clock.now(),
                )
                session.commit()
            except Exception:
                session.rollback()
                log.exception("forecast of target %s failed", target.name)
                continue
        if summary.status == "ok":
            log.info(
                "forecast %s: %d series (%d cold start), %d scored, %d anomalous, "
                "%d breach warnings, %s, %.2fs",
                target.name,
                summary.series,
                summary.cold_start,
                summary.scored,
                summary.anomalies,
                summary.warnings,
                summary.model,
                summary.seconds,
            )
        summaries.append(summary)
    return summaries


def cycle(context: ServiceContext) -> None:
    """The scheduler's main job: ingest, forecast and score what was ingested, then act on it:
    propose playbooks for new breach warnings and expire stale proposals."""
    ingest_cycle(context)
    forecast_cycle(context)
    propose_for_breaches(context)
    group_incidents(context)
    expire_proposals(context)


def group_incidents(context: ServiceContext) -> GroupingResult:
    """Group the alarms firing now into incidents (diagnosing new ones from the span store) and
    propose the matching playbooks for each new incident's top suspect."""
    from models.service import firing_alarms
    from rca.incidents import group_alarms
    from rca.tables import IncidentRow

    settings = context.settings
    now = context.clock.now()
    longest = max((t.step_seconds for t in context.targets), default=60)
    with session_scope(context.sessions) as session:
        alarms = firing_alarms(
            session,
            threshold=settings.models.anomaly_threshold,
            hits=settings.models.alarm_hits,
            window=settings.models.alarm_window,
            since=to_epoch(now) - (settings.models.alarm_window + 1) * longest,
        )
        result = group_alarms(session, alarms, now=now, settings=settings.rca)
        session.commit()
        for incident_id in result.opened:
            row = session.get(IncidentRow, incident_id)
            log.info(
                "incident %d opened: %s; top suspect %s",
                incident_id,
                ", ".join(row.services) if row else "?",
                row.top_suspect if row else "?",
            )
            if row is None or not row.top_suspect:
                continue
            _propose(
                context,
                session,
                kind="incident",
                service=row.top_suspect,
                suspect=True,
                evidence={"incident_id": incident_id, "symptom": row.symptom},
                about=f"incident {incident_id}",
            )
    for incident_id in result.closed:
        log.info("incident %d closed: its alarms have cleared", incident_id)
    return result


def propose_for_breaches(context: ServiceContext) -> int:
    """Propose the matching playbooks for every breach warning that turned on this cycle (the
    proposal's target is the series' service). Returns how many proposals were made."""
    import sqlalchemy as sa

    from ingest.tables import SeriesRow
    from models.tables import BreachRow
    from remediation import service as remediation_service

    playbooks = context.loaded_playbooks()
    if not playbooks:
        return 0
    made = 0
    with session_scope(context.sessions) as session:
        fresh = session.execute(
            sa.select(BreachRow.series_id, SeriesRow.service)
            .join(SeriesRow, SeriesRow.id == BreachRow.series_id)
            .where(BreachRow.warning.is_(True), BreachRow.warning_since == BreachRow.made_at)
            .order_by(BreachRow.series_id)
        ).all()
        for series_id, service in fresh:
            if service:
                made += _propose(
                    context,
                    session,
                    kind="breach",
                    service=service,
                    suspect=False,
                    evidence={"breach": remediation_service.breach_evidence(session, series_id)},
                    about=f"the predicted breach of series {series_id}",
                )
    return made


def _propose(
    context: ServiceContext,
    session: Session,
    *,
    kind: str,
    service: str,
    suspect: bool,
    evidence: dict[str, Any],
    about: str,
) -> int:
    """The daemon's proposals for one breach or incident (target = the service), committed on
    their own: a refusal is logged and leaves the rest of the cycle going."""
    from remediation import service as remediation_service

    playbooks = context.loaded_playbooks()
    if not playbooks:
        return 0
    try:
        proposals = remediation_service.auto_propose(
            session,
            playbooks=playbooks,
            kind=kind,
            service=service,
            suspect=suspect,
            target=service,
            evidence=evidence,
            now=context.clock.now(),
        )
        session.commit()
    except PrognosError as exc:
        session.rollback()
        log.warning("no proposal for %s: %s", about, exc.message)
        return 0
    for proposal in proposals:
        log.info(
            "proposed %s for %s (%s): proposal %d", proposal.playbook, service, about, proposal.id
        )
    return len(proposals)


def expire_proposals(context: ServiceContext) -> list[int]:
    """Deny proposals nobody approved before their expiry."""
    from remediation import service as remediation_service

    with session_scope(context.sessions) as session:
        expired = remediation_service.expire_stale(session, now=context.clock.now())
        session.commit()
    if expired:
        log.info("expired %d unapproved proposal(s): %s", len(expired), expired)
    return expired


def retrain(
    context: ServiceContext, *, on_epoch: EpochCallback | None = None
) -> list[TrainingOutcome]:
    """Fit a new model version per step size on the history window; promote it if better."""
    from ingest.history import backfill
    from models.domain import History

    settings = context.settings
    now = context.clock.now()
    end = to_epoch(now - settings.ingest.lag)
    start = end - int(settings.models.history.total_seconds())
    outcomes = []
    by_step: dict[int, list[TargetSettings]] = {}
    for target in context.targets:
        by_step.setdefault(target.step_seconds, []).append(target)
    for step, targets in sorted(by_step.items()):
        histories: list[History] = []
        for target in targets:
            result = backfill(
                source=context.source,
                target=target,
                start=start,
                end=end,
                complete_before=end,
                cache_dir=settings.cache_dir,
            )
            histories.extend(
                History.from_points(s.key, s.timestamps, s.values, step)
                for s in result.series
                if len(s) > 1
            )
        with session_scope(context.sessions) as session:
            outcome = model_service.train_model(
                session,
                histories=histories,
                forecaster_name=settings.models.forecaster,
                forecaster_config=settings.models.config,
                holdout=settings.models.holdout,
                model_dir=settings.model_dir,
                targets=[t.name for t in targets],
                now=now,
                on_epoch=on_epoch,
            )
            session.commit()
        log.info(
            "trained %s v%d in %.0fs (%d epochs): held-out loss %.4g vs active %s → %s",
            f"step{step}s",
            outcome.version,
            outcome.seconds,
            outcome.epochs,
            outcome.candidate_loss,
            outcome.active_loss,
            "promoted" if outcome.promoted else "kept the active model",
        )
        outcomes.append(outcome)
    return outcomes


def prune_samples(context: ServiceContext) -> int:
    from ingest.span_store import prune_spans

    now = context.clock.now()
    with session_scope(context.sessions) as session:
        removed = ingest_service.prune(
            session, now=now, retention=context.settings.ingest.retention
        )
        spans = prune_spans(session, to_epoch(now - context.settings.spans.retention) * 10**9)
        session.commit()
    if spans:
        log.info("pruned %d spans older than %s", spans, context.settings.spans.retention)
    if removed:
        log.info("pruned %d samples older than %s", removed, context.settings.ingest.retention)
    return removed
