"""Retention of ingest's tables: old run records go but each target's newest stays; a series
is forgotten only when idle, empty and named by nothing (its forecast and state go with it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ingest.service import Reference, prune_runs, prune_series
from ingest.tables import IngestRunRow, SampleRow, SeriesRow
from models.tables import AnomalyFeedbackRow, DetectorStateRow, ForecastRow
from remediation.tables import ProposalRow
from tests.unit.rows import proposal_row

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=10)


def add_run(session: Session, target: str, started: datetime) -> int:
    row = IngestRunRow(
        target=target, kind="cycle", status="ok", started_at=started, finished_at=started
    )
    session.add(row)
    session.flush()
    return row.id


def add_series(session: Session, key: str, last_seen: datetime) -> int:
    row = SeriesRow(
        target="cpu", key=key, labels={"k": key}, service="a", first_seen=OLD, last_seen=last_seen
    )
    session.add(row)
    session.flush()
    return row.id


def test_old_runs_go_in_batches_but_each_targets_newest_stays(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        old_a = [add_run(session, "a", OLD + timedelta(minutes=i)) for i in range(3)]
        recent_a = add_run(session, "a", NOW - timedelta(hours=1))
        old_b = [add_run(session, "b", OLD + timedelta(minutes=i)) for i in range(2)]
        session.commit()
    cutoff = NOW - timedelta(days=7)
    with sessions() as session:
        assert prune_runs(session, before=cutoff, limit=2) == 2
        assert prune_runs(session, before=cutoff, limit=2) == 2
        assert prune_runs(session, before=cutoff, limit=2) == 0  # idempotent: nothing left
        session.commit()
        kept = set(session.scalars(sa.select(IngestRunRow.id)))
    # b's last run is old, but it is still b's last cycle: it stays.
    assert kept == {recent_a, old_b[-1]}
    assert not kept & set(old_a)


def test_only_idle_empty_unreferenced_series_are_forgotten(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        gone = add_series(session, "gone", OLD)
        live = add_series(session, "live", NOW)
        with_samples = add_series(session, "samples", OLD)
        with_feedback = add_series(session, "feedback", OLD)
        in_proposal = add_series(session, "proposal", OLD)
        in_proposal_text = add_series(session, "proposal-text", OLD)
        session.add(SampleRow(series_id=with_samples, ts=int(NOW.timestamp()), value=1.0))
        session.add(
            AnomalyFeedbackRow(
                series_id=with_feedback,
                ts=int(OLD.timestamp()),
                verdict="false_alarm",
                note="",
                author="olga",
                created_at=OLD,
            )
        )
        session.add(proposal_row({"breach": {"series_id": in_proposal}}, at=OLD))
        session.add(proposal_row({"breach": {"series_id": str(in_proposal_text)}}, at=OLD))
        session.add(proposal_row({}, at=OLD))  # names nothing: must not keep (or drop) anything
        session.add(
            ForecastRow(
                series_id=gone,
                made_at=0,
                step=60,
                model="m",
                quantiles=[0.5],
                values=[[1.0]],
                created_at=OLD,
            )
        )
        for series_id in (gone, live):
            session.add(
                DetectorStateRow(
                    series_id=series_id,
                    state="{}",
                    config="c",
                    updated_at=OLD,
                    last_ts=0,
                    last_score=0.0,
                    last_alarm=False,
                )
            )
        session.commit()
    keep = [
        Reference(AnomalyFeedbackRow.series_id),
        Reference(ProposalRow.evidence, ("breach", "series_id")),
    ]
    with sessions() as session:
        assert prune_series(session, before=NOW - timedelta(days=7), keep=keep, limit=100) == 1
        assert prune_series(session, before=NOW - timedelta(days=7), keep=keep, limit=100) == 0
        session.commit()
        kept = set(session.scalars(sa.select(SeriesRow.id)))
        states = set(session.scalars(sa.select(DetectorStateRow.series_id)))
        forecasts = session.scalar(sa.select(sa.func.count()).select_from(ForecastRow))
    assert kept == {live, with_samples, with_feedback, in_proposal, in_proposal_text}
    assert gone not in kept
    assert states == {live}  # the forgotten series' state went with it; the live one stays
    assert forecasts == 0
