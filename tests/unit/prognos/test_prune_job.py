"""The prune job applies every retention in batches: what is past it goes (scores, closed
incidents, run records, idle series), what something still reads stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from ingest.tables import IngestRunRow, SeriesRow
from models.tables import AnomalyFeedbackRow, AnomalyScoreRow, ForecastHistoryRow
from prognos import jobs
from prognos.context import ServiceContext
from rca.incidents import CLOSED, OPEN
from rca.tables import IncidentRow
from tests.unit.fakes import FakeSource
from tests.unit.rows import proposal_row

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=60)


def incident(status: str) -> IncidentRow:
    return IncidentRow(
        status=status,
        opened_at=OLD,
        updated_at=OLD,
        last_alarm_at=OLD,
        closed_at=OLD if status == CLOSED else None,
        services=["a"],
        series=[],
        symptom="cpu of a",
    )


def test_the_prune_job_empties_what_is_past_retention_and_keeps_what_is_read(
    engine: Engine,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(jobs, "PRUNE_BATCH", 3)  # several batches per table
    old_ts = int(OLD.timestamp())
    with sessions() as session:
        idle = SeriesRow(
            target="cpu", key="idle", labels={}, service="a", first_seen=OLD, last_seen=OLD
        )
        judged = SeriesRow(
            target="cpu", key="judged", labels={}, service="a", first_seen=OLD, last_seen=OLD
        )
        session.add_all([idle, judged])
        session.flush()
        for series in (idle, judged):
            session.add_all(
                AnomalyScoreRow(
                    series_id=series.id, ts=old_ts + 60 * i, z=0.0, magnitude=0.0, score=0.0,
                    model="m", alarm=False, evidence=None,
                )
                for i in range(4)
            )  # fmt: skip
        now_ts = int(NOW.timestamp())
        session.add_all(
            ForecastHistoryRow(
                series_id=judged.id, made_at=ts - 900, target_ts=ts, p10=1.0, p50=2.0, p90=3.0
            )
            for ts in [old_ts + 60 * i for i in range(5)] + [now_ts]
        )  # fmt: skip
        session.add(
            AnomalyFeedbackRow(
                series_id=judged.id, ts=old_ts, verdict="missed", note="", author="olga",
                created_at=OLD,
            )
        )  # fmt: skip
        session.add_all(
            IngestRunRow(
                target="cpu", kind="cycle", status="ok", started_at=OLD + timedelta(minutes=i),
                finished_at=OLD,
            )
            for i in range(7)
        )  # fmt: skip
        closed = [incident(CLOSED) for _ in range(7)]
        still_open = incident(OPEN)
        session.add_all([*closed, still_open])
        session.flush()
        session.add(proposal_row({"incident_id": closed[0].id}, at=OLD))
        session.commit()
        ids = {"idle": idle.id, "judged": judged.id, "open": still_open.id}
        ids["proposed"] = closed[0].id
    context = ServiceContext(
        settings=Settings(),
        engine=engine,
        sessions=sessions,
        source=FakeSource([]),
        targets=[],
        clock=FixedClock(NOW),
    )
    caplog.set_level("INFO", logger="prognos.jobs")

    jobs.prune_samples(context)

    with sessions() as session:
        assert set(session.scalars(sa.select(SeriesRow.id))) == {ids["judged"]}
        assert list(session.scalars(sa.select(AnomalyScoreRow.ts))) == [old_ts]
        assert session.scalar(sa.select(sa.func.count()).select_from(IngestRunRow)) == 1
        assert list(session.scalars(sa.select(ForecastHistoryRow.target_ts))) == [now_ts]
        kept = set(session.scalars(sa.select(IncidentRow.id)))
        assert kept == {ids["open"], ids["proposed"]}
    logged = {r.getMessage() for r in caplog.records}
    assert {
        "pruned 7 anomaly scores past their retention",
        "pruned 5 forecast history rows past their retention",
        "pruned 6 closed incidents past their retention",
        "pruned 6 ingest runs past their retention",
        "pruned 1 idle series past their retention",
    } <= logged
    jobs.prune_samples(context)  # a second run finds nothing more
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(IncidentRow)) == 2
