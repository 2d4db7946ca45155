"""Scheduled jobs: one cycle over every target, where one failing target does not stop the rest."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from ingest.domain import PullResult
from ingest.errors import QueryError
from ingest.tables import IngestRunRow, SampleRow, SeriesRow, WatermarkRow
from models.tables import AnomalyScoreRow
from prognos import jobs
from prognos.context import ServiceContext
from rca import flows as rca_flows
from remediation import service as remediation_service
from remediation.domain import ProposalStatus
from remediation.tables import ProposalRow
from tests.unit.fakes import FakeSeries, FakeSource, make_target
from tests.unit.remediation.helpers import make_playbook, proposed

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


def test_a_failing_stage_does_not_skip_the_later_ones(
    engine: Engine,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A proposal nobody approved, past its expiry (1 h) when the cycle runs.
    book = make_playbook("restart", expires_after="1h")
    stale = proposed(sessions, book, now=NOW - timedelta(hours=2))

    def database_down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))

    monkeypatch.setattr(rca_flows, "incidents_from_triggers", database_down)
    context = make_context(engine, sessions, FakeSource([FakeSeries("cpu", {"service": "a"})]))
    context.targets = [make_target("cpu", lookback=timedelta(minutes=10))]
    context.playbooks = {"restart": book}

    jobs.cycle(context)  # does not raise

    with sessions() as session:
        assert remediation_service.get_proposal(session, stale.id).status == ProposalStatus.EXPIRED
        assert session.scalar(sa.select(sa.func.count()).select_from(SampleRow)) == 10
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle stage")]
    assert failed == ["cycle stage group_incidents failed; the later stages still run"]


def test_the_daemon_does_not_import_the_web_package() -> None:
    # A fresh interpreter: this test process has imported `api` already.
    probe = (
        "import sys, prognos.daemon; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('api', 'fastapi')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def alarming(engine: Engine, sessions: sessionmaker[Session]) -> ServiceContext:
    """A context whose one series (service cart) has just alarmed, with a restart playbook."""
    context = make_context(engine, sessions, FakeSource([FakeSeries("cpu", {"service": "cart"})]))
    context.targets = [make_target("cpu", lookback=timedelta(minutes=10))]
    context.playbooks = {
        "restart": make_playbook(
            "restart",
            parameters={},
            steps=[{"kind": "command", "name": "restart", "argv": ["true", "{{ target }}"]}],
            match={"kinds": ["incident"]},
        )
    }
    jobs.ingest_cycle(context)
    newest = int(NOW.timestamp()) // 60 * 60
    with sessions() as session:
        series_id = session.scalars(sa.select(SeriesRow.id)).one()
        session.add_all(
            AnomalyScoreRow(
                series_id=series_id,
                ts=newest - 60 * k,
                z=9.0,
                magnitude=9.0,
                score=9.0,
                model="t",
                alarm=k == 2,  # the detector alarms once, at the rise
            )
            for k in range(3)
        )
        session.commit()
    return context


def proposals(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with sessions() as session:
        rows = session.scalars(sa.select(ProposalRow)).all()
    return [(p.playbook, p.target, p.proposed_by) for p in rows]


def test_an_alarm_opens_an_incident_and_its_proposal(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    context = alarming(engine, sessions)
    result = jobs.group_incidents(context)
    assert len(result.opened) == 1
    assert jobs.group_incidents(context).opened == []  # the same alarm joins its incident
    assert proposals(sessions) == [("restart", "cart", "daemon")]


def test_a_new_leader_proposes_for_an_incident_its_dead_predecessor_left_without(
    engine: Engine, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = alarming(engine, sessions)

    def killed(*_: object, **__: object) -> None:
        raise SystemExit("the leader died after committing the incident")

    with monkeypatch.context() as patch:
        patch.setattr(jobs.remediation_flows, "propose_for_incidents", killed)
        with pytest.raises(SystemExit):
            jobs.group_incidents(context)
    assert jobs.group_incidents(context).opened == []  # the incident stays; no proposal yet
    assert proposals(sessions) == []

    jobs.catch_up_proposals(context)  # what a process taking the lead runs first
    jobs.catch_up_proposals(context)  # and once made, never twice
    assert proposals(sessions) == [("restart", "cart", "daemon")]
