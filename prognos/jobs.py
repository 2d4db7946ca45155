"""Scheduled jobs: each computes its window, opens a session, calls one service function or
flow (`rca/flows.py`, `remediation/flows.py`: what crosses domains), commits and logs a summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import requests
from sqlalchemy.orm import Session

from core.clock import to_epoch
from core.database import session_scope
from core.selfmetrics import service as selfmetrics
from core.settings import TargetSettings
from ingest import service as ingest_service
from ingest.errors import IngestError
from ingest.service import IngestSummary, Reference
from models import service as model_service
from models.detector import detector_config
from models.domain import History
from models.forecasters.base import EpochCallback
from models.registry import ArtifactStore
from models.service import CycleSummary, TrainingOutcome
from models.tables import AnomalyFeedbackRow, AnomalyScoreRow
from prognos.context import ServiceContext
from prognos.engine import build_engine, training_launcher
from prognos.export import export_predictions
from rca import flows as rca_flows
from rca.alertmanager import flows as alertmanager_flows
from rca.alertmanager.webhook import prune_received
from rca.incidents import GroupingResult, list_incidents, prune_incidents
from remediation import flows as remediation_flows
from remediation import selfchecks
from remediation import service as remediation_service
from remediation.audit import checkpoint_for
from remediation.tables import ProposalRow

log = logging.getLogger(__name__)


def refresh_rules(context: ServiceContext) -> None:
    """Re-read Prometheus' alerting rules when due (`rules.refresh`): each rule that compares
    a series with a constant is a target of this cycle (docs/rules.md)."""
    before = context.rules
    rules = context.refresh_rules()
    if rules is not None and rules is not before and rules.error is None:
        log.info("alerting rules: %d read, %d forecast", len(rules.rules), len(rules.targets))


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
    """Score every series' steps not scored yet with the target's detector, then forecast, on
    the configured engine (`engine: local` in this process, `ray` on its shard workers)."""
    engine = context.cycle_engine
    if engine is None:
        engine = context.cycle_engine = build_engine(context)
        context.on_stop.append(engine.close)
    summaries = []
    for target in context.targets:
        try:
            summary = engine.forecast(
                target,
                detector=context.detector_for(target),
                now=context.clock.now(),
                max_catchup=max(
                    1,
                    int(context.settings.ingest.max_catchup.total_seconds()) // target.step_seconds,
                ),
            )
        except Exception:
            log.exception("forecast of target %s failed", target.name)
            continue
        if summary.status == "ok":
            log.info(
                "forecast %s: %d series (%d cold start), %d steps scored, %d alarms, "
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
    group alarms and breach warnings into incidents (proposing for new ones), tell the
    configured Alertmanagers (breach warnings and open incidents, posted and resolved) and
    expire stale proposals. Each stage has its own session and error boundary: one that fails
    is logged and the later ones still run, so a database error in RCA or proposing never
    skips the expiry of stale approvals. Each stage's duration and outcome, and the whole
    cycle's (stage `cycle`), are recorded for /metrics (docs/metrics.md)."""
    stages = (
        refresh_rules,
        ingest_cycle,
        forecast_cycle,
        export_predictions,
        group_incidents,
        alertmanager_cycle,
        expire_proposals,
        self_checks,
    )
    started = time.perf_counter()
    runs = [_run_stage(context, stage) for stage in stages]
    runs.append(("cycle", time.perf_counter() - started, all(ok for _, _, ok in runs)))
    _record_stages(context, runs)


def _run_stage(
    context: ServiceContext, stage: Callable[[ServiceContext], object]
) -> tuple[str, float, bool]:
    """(its name, seconds, whether it finished without error)."""
    started = time.perf_counter()
    try:
        stage(context)
        ok = True
    except Exception:
        log.exception("cycle stage %s failed; the later stages still run", stage.__name__)
        ok = False
    return stage.__name__, time.perf_counter() - started, ok


def _record_stages(context: ServiceContext, runs: list[tuple[str, float, bool]]) -> None:
    """Count the cycle's stage runs for /metrics in one transaction; a database that refuses
    them is logged, nothing more."""
    try:
        with session_scope(context.sessions) as session:
            now = context.clock.now()
            for stage, seconds, ok in runs:
                selfmetrics.record_stage(session, stage=stage, seconds=seconds, ok=ok, now=now)
            session.commit()
    except Exception:
        log.exception("could not record the cycle's stages for /metrics")


def self_checks(context: ServiceContext) -> None:
    """What /metrics says about the service itself, each when due: the audit chain verified
    against its checkpoint (every remediation.audit_verify_every), Vault's health and the
    service token's TTL (every vault.check_every, when vault.url is set); and the incident
    high-water mark, every cycle."""
    settings, now = context.settings, context.clock.now()
    with session_scope(context.sessions) as session:
        selfchecks.mark_incidents_opened(session)
        verified = selfchecks.verify_audit(
            session,
            checkpoint=checkpoint_for(settings),
            every=settings.remediation.audit_verify_every,
            now=now,
        )
        session.commit()
        vault_due = selfchecks.vault_due(session, settings=settings.vault, now=now)
    if verified is not None and not verified.ok:
        log.error("%s; `prognos audit verify` lists the problems", verified.summary())
    if vault_due:  # no session is held over Vault's HTTP calls
        status = selfchecks.vault_status(settings.vault)
        with session_scope(context.sessions) as session:
            selfchecks.record_vault(session, status, now=now)
            session.commit()


def group_incidents(context: ServiceContext) -> GroupingResult:
    """Group the alarms firing now and the breach warnings active now into incidents
    (diagnosing new ones from the span store and the stored metrics) and propose the matching
    playbooks for each incident's top suspect: one proposal set per incident, whatever opened
    it, renewed for the new suspect when a grown incident points elsewhere."""
    settings = context.settings
    now = context.clock.now()
    longest = max((t.step_seconds for t in context.targets), default=60)
    with session_scope(context.sessions) as session:
        result = rca_flows.incidents_from_triggers(
            session, models=settings.models, rca=settings.rca, longest_step=longest, now=now
        )
        session.commit()
        _propose(context, session, result)
    for incident_id in result.closed:
        log.info("incident %d closed: its alarms and breach warnings have cleared", incident_id)
    return result


def _propose(context: ServiceContext, session: Session, result: GroupingResult) -> None:
    """The proposal sets of the incidents a grouping opened or grew (each committed alone)."""
    if result.opened or result.updated:
        remediation_flows.propose_for_incidents(
            session,
            [*result.opened, *result.updated],
            playbooks=context.loaded_playbooks(),
            clock=context.clock,
        )


def catch_up_proposals(context: ServiceContext) -> None:
    """Propose for open incidents that lack their proposal set: a leader that died between
    grouping an incident and proposing for it (each committed apart) left it without one. Run
    once by each process that takes the lead, before its first cycle."""
    with session_scope(context.sessions) as session:
        open_ids = [row.id for row in list_incidents(session, status="open", limit=10_000)]
        _propose(context, session, GroupingResult(opened=open_ids, updated=[], closed=[]))


def alertmanager_cycle(context: ServiceContext) -> None:
    """Alertmanager both ways: the alerts its webhook reported firing keep their incidents open
    (proposing for any they open), then the breach warnings and open incidents are posted to
    every `alertmanager.urls` (one that is down is logged and gets them next cycle)."""
    settings, am = context.settings, context.settings.alertmanager
    now = context.clock.now()
    with session_scope(context.sessions) as session:
        held = alertmanager_flows.keep_firing(
            session, rca=settings.rca, stale_after=am.received_stale_after, now=now
        )
        prune_received(session, before=now - settings.rca.incident_retention)
        session.commit()
        _propose(context, session, held)
        if not am.urls:
            return
        longest = max((t.step_seconds for t in context.targets), default=60)
        with requests.Session() as http:
            sent = alertmanager_flows.notify(
                session,
                settings=am,
                public_url=am.public_url or f"http://{settings.api.host}:{settings.api.port}",
                since=to_epoch(now) - settings.models.alarm_recent * longest,
                now=now,
                valid_for=4 * max(am.resend_every, settings.ingest.interval),
                http=http,
            )
    if sent.posted:
        log.info("alertmanager: %d alert(s) firing, %d posted", sent.firing, sent.posted)


def expire_proposals(context: ServiceContext) -> list[int]:
    """Deny proposals nobody approved before their expiry."""
    with session_scope(context.sessions) as session:
        expired = remediation_service.expire_stale(session, now=context.clock.now())
        session.commit()
    if expired:
        log.info("expired %d unapproved proposal(s): %s", len(expired), expired)
    return expired


def retrain(
    context: ServiceContext,
    *,
    on_epoch: EpochCallback | None = None,
    extra: Sequence[History] = (),
) -> list[TrainingOutcome]:
    """Fit a new model version per step size on the history window; promote it if better.
    `extra` histories (e.g. generated scenarios whose trends run into their limits, which a
    healthy history lacks) are learned from too, each by its own step's model."""
    from ingest.history import backfill

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
        histories.extend(h for h in extra if h.step == step)
        with session_scope(context.sessions) as session:
            outcome = model_service.train_model(
                session,
                histories=histories,
                forecaster_name=settings.models.forecaster,
                forecaster_config=settings.models.config,
                holdout=settings.models.holdout,
                store=ArtifactStore(settings.effective_artifact_store, settings.model_dir),
                targets=[t.name for t in targets],
                now=now,
                on_epoch=on_epoch,
                detector=detector_config(settings.models.detector),
                workers=settings.models.train_workers,
                launcher=training_launcher(settings),
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


# Rows deleted per transaction by the prune job: a long backlog never holds the write lock long.
PRUNE_BATCH = 5_000


def prune_samples(context: ServiceContext) -> int:
    """Apply every retention: samples and spans, then anomaly scores, closed incidents, ingest
    runs and idle series, each in batches of its own transaction. What a proposal (and so its
    execution) names stays, and so do scores with feedback and series something still reads."""
    from ingest.span_store import prune_spans

    settings = context.settings
    now = context.clock.now()
    with session_scope(context.sessions) as session:
        removed = ingest_service.prune(session, now=now, retention=settings.ingest.retention)
        spans = prune_spans(session, to_epoch(now - settings.spans.retention) * 10**9)
        session.commit()
    if spans:
        log.info("pruned %d spans older than %s", spans, settings.spans.retention)
    if removed:
        log.info("pruned %d samples older than %s", removed, settings.ingest.retention)
    series_refs = [
        Reference(AnomalyScoreRow.series_id),
        Reference(AnomalyFeedbackRow.series_id),
        Reference(ProposalRow.evidence, ("breach", "series_id")),
    ]
    steps: dict[str, Callable[[Session], int]] = {
        "anomaly scores": lambda s: model_service.prune_scores(
            s, before=to_epoch(now - settings.models.score_retention), limit=PRUNE_BATCH
        ),
        "forecast history rows": lambda s: model_service.prune_forecast_history(
            s,
            before=to_epoch(now - settings.models.forecast_history_retention),
            limit=PRUNE_BATCH,
        ),
        "closed incidents": lambda s: prune_incidents(
            s,
            before=now - settings.rca.incident_retention,
            keep=[Reference(ProposalRow.evidence, ("incident_id",))],
            limit=PRUNE_BATCH,
        ),
        "ingest runs": lambda s: ingest_service.prune_runs(
            s, before=now - settings.ingest.run_retention, limit=PRUNE_BATCH
        ),
        "idle series": lambda s: ingest_service.prune_series(
            s, before=now - settings.ingest.retention, keep=series_refs, limit=PRUNE_BATCH
        ),
    }
    for what, step in steps.items():
        count = _in_batches(context, step)
        if count:
            log.info("pruned %d %s past their retention", count, what)
    return removed


def _in_batches(context: ServiceContext, step: Callable[[Session], int]) -> int:
    """Run a prune step, one commit per batch, until a batch comes back short."""
    total = 0
    while True:
        with session_scope(context.sessions) as session:
            count = step(session)
            session.commit()
        total += count
        if count < PRUNE_BATCH:
            return total
