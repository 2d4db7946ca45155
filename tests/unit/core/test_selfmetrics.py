"""Self-metrics storage: a histogram per stage that Prometheus can read (cumulative buckets,
+Inf = runs), running totals that only grow, check results replaced, high-water marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.selfmetrics import service

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_durations_fill_cumulative_buckets(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for seconds, ok in ((0.01, True), (0.5, True), (0.7, False), (400.0, True)):
            service.record_stage(session, stage="ingest_cycle", seconds=seconds, ok=ok, now=NOW)
        session.commit()
        [stats] = service.stage_stats(session)
    buckets = dict(stats.buckets)
    assert buckets[0.05] == 1
    assert buckets[0.5] == 2  # a duration on a bound counts in that bucket
    assert buckets[1.0] == 3
    assert buckets[300.0] == 3  # slower than every bound: only the run count has it
    assert (stats.runs, stats.failures) == (4, 1)
    assert abs(stats.seconds - 401.21) < 1e-9
    assert stats.last_success_at == NOW


def test_a_failure_keeps_the_last_success(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        service.record_stage(session, stage="cycle", seconds=1, ok=True, now=NOW)
        later = NOW + timedelta(minutes=1)
        service.record_stage(session, stage="cycle", seconds=1, ok=False, now=later)
        session.commit()
        [stats] = service.stage_stats(session)
    assert stats.last_success_at == NOW and stats.failures == 1


def test_otlp_totals_add_up_per_outcome(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert service.otlp_totals(session) == {"accepted": (0, 0), "rejected": (0, 0)}
        service.count_otlp(session, accepted=True, spans=10, rejected_spans=2)
        service.count_otlp(session, accepted=True, spans=5, rejected_spans=0)
        service.count_otlp(session, accepted=False, spans=0, rejected_spans=0)
        session.commit()
        assert service.otlp_totals(session) == {"accepted": (2, 15), "rejected": (1, 2)}


def test_checks_are_due_after_their_interval_and_replaced(
    sessions: sessionmaker[Session],
) -> None:
    every = timedelta(minutes=15)
    with sessions() as session:
        assert service.check_due(session, name="audit", every=every, now=NOW)
        service.record_check(session, name="audit", ok=True, now=NOW, value=3)
        session.commit()
        assert not service.check_due(session, name="audit", every=every, now=NOW + every / 2)
        assert service.check_due(session, name="audit", every=every, now=NOW + every)
        service.record_check(session, name="audit", ok=False, now=NOW + every, detail="broken")
        session.commit()
        row = service.checks(session)["audit"]
        assert (row.ok, row.value, row.detail) == (False, None, "broken")


def test_high_water_marks_never_go_down(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert service.high_water(session, "incidents_opened") == 0
        for value in (3, 7, 5):
            service.raise_high_water(session, name="incidents_opened", value=value)
        session.commit()
        assert service.high_water(session, "incidents_opened") == 7
