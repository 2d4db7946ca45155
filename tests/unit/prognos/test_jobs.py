"""Scheduled jobs: one cycle over every target, where one failing target does not stop the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.context import ServiceContext
from core.clock import FixedClock
from core.settings import Settings
from ingest.domain import PullResult
from ingest.errors import QueryError
from ingest.tables import IngestRunRow, SampleRow, WatermarkRow
from prognos import jobs
from tests.unit.fakes import FakeSeries, FakeSource, make_target

NOW = datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)


class PickySource(FakeSource):
    """Fails one target with a typed error and another with a crash; serves the rest."""

    def query_range(self, target, start, end, step) -> PullResult:  # type: ignore[no-untyped-def]
        if target.name == "bad_query":
            raise QueryError("target 'bad_query': parse error at 1:5", target=target.name)
        if target.name == "crashing":
            raise ZeroDivisionError("secret=xyz")
        return super().query_range(target, start, end, step)


def make_context(
    engine: Engine, sessions: sessionmaker[Session], source: FakeSource
) -> ServiceContext:
    return ServiceContext(
        settings=Settings(ingest={"retention": "1h"}),
        engine=engine,
        sessions=sessions,
        source=source,
        targets=[
            make_target("bad_query", lookback=timedelta(minutes=10)),
            make_target("crashing", lookback=timedelta(minutes=10)),
            make_target("cpu", lookback=timedelta(minutes=10)),
        ],
        clock=FixedClock(NOW),
    )


def test_one_failing_target_does_not_stop_the_others(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    source = PickySource([FakeSeries("cpu", {"service": "a"})])
    context = make_context(engine, sessions, source)
    summaries = jobs.ingest_cycle(context)
    assert [(s.target, s.status) for s in summaries] == [
        ("bad_query", "failed"),
        ("crashing", "failed"),
        ("cpu", "ok"),
    ]
    assert summaries[0].error == "target 'bad_query': parse error at 1:5"
    assert "secret=xyz" not in (summaries[1].error or "")
    with sessions() as session:
        runs = {r.target: r for r in session.scalars(sa.select(IngestRunRow))}
        assert runs["bad_query"].error_code == "query_invalid"
        assert runs["crashing"].error_code == "internal"
        assert runs["cpu"].status == "ok" and runs["cpu"].points == 10
        marks = {w.target for w in session.scalars(sa.select(WatermarkRow))}
        assert marks == {"cpu"}  # failed targets keep no watermark, so they retry fully


def test_prune_samples_uses_the_retention(engine: Engine, sessions: sessionmaker[Session]) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"})])
    context = make_context(engine, sessions, source)
    context.targets = [make_target("cpu", lookback=timedelta(hours=3))]
    jobs.ingest_cycle(context)
    removed = jobs.prune_samples(context)
    # Stored 09:00..11:59; the cutoff is now - 1h = 11:00:17, so 11:01..11:59 stay.
    assert removed == 121
    with sessions() as session:
        kept = session.scalars(sa.select(SampleRow.ts).order_by(SampleRow.ts)).all()
    assert len(kept) == 59
    assert kept[0] == int(datetime(2026, 1, 5, 11, 1, tzinfo=UTC).timestamp())
    assert jobs.prune_samples(context) == 0
