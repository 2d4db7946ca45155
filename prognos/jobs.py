"""Scheduled jobs: each computes its window, opens a session, calls one service, commits."""

from __future__ import annotations

import logging

from api.context import ServiceContext
from core.database import session_scope
from ingest import service as ingest_service
from ingest.errors import IngestError
from ingest.service import IngestSummary

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


def prune_samples(context: ServiceContext) -> int:
    with session_scope(context.sessions) as session:
        removed = ingest_service.prune(
            session, now=context.clock.now(), retention=context.settings.ingest.retention
        )
        session.commit()
    if removed:
        log.info("pruned %d samples older than %s", removed, context.settings.ingest.retention)
    return removed
