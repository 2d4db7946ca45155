"""Incremental ingest on SQLite and PostgreSQL with an in-memory source: windows, watermarks,
series that come and go, no duplicates, failures that leave the previous state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import to_epoch
from ingest import service
from ingest.domain import Window
from ingest.errors import QueryError, SourceUnavailableError
from ingest.tables import IngestRunRow, SampleRow, SeriesRow, WatermarkRow
from tests.unit.fakes import FakeSeries, FakeSource, make_target

NOW = datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)
LAG = timedelta(seconds=30)
CATCHUP = timedelta(hours=24)
STEP = 60
NEWEST = (to_epoch(NOW - LAG) // STEP) * STEP  # 11:59:00
TARGET = make_target("cpu", lookback=timedelta(hours=1))


def cycle(
    sessions: sessionmaker[Session],
    source: FakeSource,
    now: datetime,
    *,
    target=TARGET,
    max_catchup: timedelta = CATCHUP,
) -> service.IngestSummary:
    """One cycle as the job runs it: one session, one commit."""
    with sessions() as session:
        summary = service.ingest_target(
            session, source=source, target=target, now=now, lag=LAG, max_catchup=max_catchup
        )
        session.commit()
        return summary


def stored(sessions: sessionmaker[Session], target: str = "cpu") -> dict[str, list[int]]:
    """Timestamps per series (by its service label), as the database holds them."""
    with sessions() as session:
        rows = session.scalars(sa.select(SeriesRow).where(SeriesRow.target == target)).all()
        return {
            row.labels["service"]: [ts for ts, _ in service.read_samples(session, series_id=row.id)]
            for row in rows
        }


def sample_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(SampleRow)) or 0)


def grid(start: int, end: int) -> list[int]:
    return list(range(start, end + 1, STEP))


def watermark(sessions: sessionmaker[Session], target: str = "cpu") -> int | None:
    with sessions() as session:
        row = session.get(WatermarkRow, target)
        return None if row is None else row.watermark


def two_services() -> FakeSource:
    return FakeSource(
        [FakeSeries("cpu", {"service": "checkout"}), FakeSeries("cpu", {"service": "cart"})]
    )


def test_first_cycle_pulls_the_lookback_and_sets_the_watermark(
    sessions: sessionmaker[Session],
) -> None:
    source = two_services()
    summary = cycle(sessions, source, NOW)
    first = NEWEST - 3600 + STEP
    assert summary.status == "ok"
    assert (summary.window.start, summary.window.end) == (first, NEWEST)
    assert (summary.series, summary.new_series, summary.points) == (2, 2, 120)
    assert stored(sessions) == {"checkout": grid(first, NEWEST), "cart": grid(first, NEWEST)}
    assert watermark(sessions) == NEWEST
    with sessions() as session:
        assert service.watermark_time(session, "cpu") == datetime(2026, 1, 5, 11, 59, tzinfo=UTC)
        [run] = service.latest_runs(session)
        assert (run.target, run.kind, run.status, run.points, run.new_series) == (
            "cpu",
            "cycle",
            "ok",
            120,
            2,
        )
        assert (run.window_start, run.window_end) == (first, NEWEST)
        values = dict(service.read_samples(session, series_id=1, start=NEWEST, end=NEWEST))
        assert values == {NEWEST: NEWEST / 1000.0}
        series = session.scalars(sa.select(SeriesRow).order_by(SeriesRow.id)).all()
        assert {s.service for s in series} == {"checkout", "cart"}
        assert all(s.first_seen == NOW and s.last_seen == NOW for s in series)


def test_watermark_advances_and_a_rerun_adds_nothing(sessions: sessionmaker[Session]) -> None:
    source = two_services()
    cycle(sessions, source, NOW)
    calls = len(source.calls)

    again = cycle(sessions, source, NOW)  # the same "now": nothing new to read
    assert again.status == "noop"
    assert again.points == 0
    assert len(source.calls) == calls  # the source was not even asked
    assert sample_count(sessions) == 120

    later = cycle(sessions, source, NOW + timedelta(minutes=5))
    assert (later.window.start, later.window.end) == (NEWEST + STEP, NEWEST + 5 * STEP)
    assert later.points == 10 and later.new_series == 0
    assert watermark(sessions) == NEWEST + 5 * STEP
    first = NEWEST - 3600 + STEP
    assert stored(sessions) == {
        "checkout": grid(first, NEWEST + 5 * STEP),
        "cart": grid(first, NEWEST + 5 * STEP),
    }
    # A cycle half a step later still has nothing complete to read.
    assert cycle(sessions, source, NOW + timedelta(minutes=5, seconds=10)).status == "noop"
    with sessions() as session:
        assert [r.status for r in service.latest_runs(session)] == ["ok", "ok"]  # noops unrecorded


def test_series_appear_and_vanish(sessions: sessionmaker[Session]) -> None:
    appears = NEWEST + 3 * STEP
    vanishes = NEWEST + 2 * STEP
    source = FakeSource(
        [
            FakeSeries("cpu", {"service": "steady"}),
            FakeSeries("cpu", {"service": "late"}, start=appears),
            FakeSeries("cpu", {"service": "early"}, end=vanishes),
        ]
    )
    first = cycle(sessions, source, NOW)
    assert (first.series, first.new_series) == (2, 2)  # "late" does not exist yet
    second = cycle(sessions, source, NOW + timedelta(minutes=5))
    assert (second.series, second.new_series) == (3, 1)
    third = cycle(sessions, source, NOW + timedelta(minutes=10))
    assert (third.series, third.new_series) == (2, 0)  # "early" is gone

    start = NEWEST - 3600 + STEP
    held = stored(sessions)
    assert held["steady"] == grid(start, NEWEST + 10 * STEP)
    assert held["late"] == grid(appears, NEWEST + 10 * STEP)
    assert held["early"] == grid(start, vanishes)  # no invented points after it went away
    with sessions() as session:
        rows = {r.labels["service"]: r for r in session.scalars(sa.select(SeriesRow))}
        assert rows["late"].first_seen == NOW + timedelta(minutes=5)
        assert rows["early"].last_seen == NOW + timedelta(minutes=5)
        assert rows["steady"].last_seen == NOW + timedelta(minutes=10)


def test_samples_are_never_duplicated(sessions: sessionmaker[Session]) -> None:
    # Small chunks: the window is read in many requests and joined again.
    source = FakeSource([FakeSeries("cpu", {"service": "a"})], max_points=7)
    cycle(sessions, source, NOW)
    assert len(source.calls) == 9  # 60 points in chunks of at most 7
    assert stored(sessions)["a"] == grid(NEWEST - 3600 + STEP, NEWEST)

    # Storing the same pull again (e.g. a second process raced us) inserts nothing.
    window = Window(NEWEST - 600, NEWEST, STEP)
    pulled = service.pull(source, TARGET, window)
    for _ in range(2):
        with sessions() as session:
            created = service.store(session, target=TARGET, series=pulled.series, seen_at=NOW)
            session.commit()
        assert created == 0
    assert sample_count(sessions) == 60

    # Losing the watermark (e.g. a crash between writes) re-reads but stores nothing twice.
    with sessions() as session:
        session.execute(sa.delete(WatermarkRow))
        session.commit()
    assert cycle(sessions, source, NOW).points == 60
    assert sample_count(sessions) == 60


def test_a_failing_source_records_a_failed_run_and_keeps_the_watermark(
    sessions: sessionmaker[Session],
) -> None:
    source = two_services()
    cycle(sessions, source, NOW)
    before = sample_count(sessions)
    source.fail_with = SourceUnavailableError("Prometheus at http://prom:9090 is unreachable")
    later = NOW + timedelta(minutes=5)
    with sessions() as session:
        with pytest.raises(SourceUnavailableError):
            service.ingest_target(
                session, source=source, target=TARGET, now=later, lag=LAG, max_catchup=CATCHUP
            )
        session.rollback()
        summary = service.record_failure(
            session,
            target="cpu",
            kind="cycle",
            window=None,
            error=source.fail_with,
            started_at=later,
        )
        session.commit()
    assert summary.status == "failed"
    assert watermark(sessions) == NEWEST
    assert sample_count(sessions) == before
    with sessions() as session:
        failed = service.latest_runs(session, target="cpu")[0]
        assert failed.status == "failed"
        assert failed.error_code == "source_unavailable"
        assert failed.error_message == "Prometheus at http://prom:9090 is unreachable"
        assert failed.started_at == later

    # Once the source is back, the next cycle catches up from the watermark: no hole.
    source.fail_with = None
    recovered = cycle(sessions, source, NOW + timedelta(minutes=10))
    assert recovered.window.start == NEWEST + STEP
    first = NEWEST - 3600 + STEP
    assert stored(sessions)["cart"] == grid(first, NEWEST + 10 * STEP)


def test_an_unexpected_error_is_recorded_without_its_text(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        service.record_failure(
            session,
            target="cpu",
            kind="cycle",
            window=None,
            error=KeyError("password=hunter2"),
            started_at=NOW,
        )
        session.commit()
    with sessions() as session:
        run = service.latest_runs(session)[0]
        assert run.error_code == "internal"
        assert "KeyError" in (run.error_message or "")
        assert "hunter2" not in (run.error_message or "")


def test_changing_the_query_or_step_restarts_from_the_lookback(
    sessions: sessionmaker[Session],
) -> None:
    source = two_services()
    cycle(sessions, source, NOW)
    later = NOW + timedelta(minutes=2)
    changed = make_target("cpu", "avg by (service) (cpu_usage)", lookback=timedelta(hours=1))
    summary = cycle(sessions, source, later, target=changed)
    newest = NEWEST + 2 * STEP
    assert (summary.window.start, summary.window.end) == (newest - 3600 + STEP, newest)
    assert summary.window.points == 60
    with sessions() as session:
        row = session.get(WatermarkRow, "cpu")
        assert row is not None and row.watermark == newest
    # The same query again continues incrementally.
    assert cycle(sessions, source, later + timedelta(minutes=1), target=changed).points == 2

    coarser = make_target("cpu", changed.query, step=120, lookback=timedelta(hours=1))
    summary = cycle(sessions, source, later + timedelta(minutes=10), target=coarser)
    assert summary.window.step == 120
    assert summary.window.points == 30


def test_changing_the_query_replaces_the_old_meaning(sessions: sessionmaker[Session]) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"}, value=lambda ts: 1.0)])
    cycle(sessions, source, NOW)
    percent = make_target("cpu", "100 * rate(cpu_seconds_total[5m])", lookback=timedelta(hours=1))
    source.series = [FakeSeries("cpu", {"service": "a"}, value=lambda ts: 100.0)]
    cycle(sessions, source, NOW + timedelta(minutes=2), target=percent)
    with sessions() as session:
        series_id = session.scalars(sa.select(SeriesRow.id)).one()
        values = {v for _, v in service.read_samples(session, series_id=series_id)}
    assert values == {100.0}


def test_max_catchup_caps_a_long_outage(sessions: sessionmaker[Session]) -> None:
    source = two_services()
    cycle(sessions, source, NOW)
    source.calls.clear()
    much_later = NOW + timedelta(days=3)
    summary = cycle(sessions, source, much_later, max_catchup=timedelta(hours=2))
    newest = NEWEST + 3 * 86_400
    assert (summary.window.start, summary.window.end) == (newest - 7200 + STEP, newest)
    assert summary.points == 2 * 120
    assert source.points_served == 120  # only the capped window was requested
    assert min(start for _, start, _, _ in source.calls) == newest - 7200 + STEP
    held = stored(sessions)["checkout"]
    assert held[:60] == grid(NEWEST - 3600 + STEP, NEWEST)
    assert held[60:] == grid(newest - 7200 + STEP, newest)  # the older steps stay a gap


def test_prune_deletes_old_samples_only(sessions: sessionmaker[Session]) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"})])
    week = make_target("cpu", lookback=timedelta(days=10))
    cycle(sessions, source, NOW, target=week)
    total = sample_count(sessions)
    assert total == 10 * 1440
    with sessions() as session:
        removed = service.prune(session, now=NOW, retention=timedelta(days=7))
        session.commit()
    cutoff = to_epoch(NOW - timedelta(days=7))
    held = stored(sessions)["a"]
    assert removed == total - len(held)
    assert held[0] >= cutoff and held[0] - STEP < cutoff  # everything newer is still there
    assert held == grid(held[0], NEWEST)
    with sessions() as session:  # the series itself stays known
        assert session.scalar(sa.select(sa.func.count()).select_from(SeriesRow)) == 1
        assert service.prune(session, now=NOW, retention=timedelta(days=7)) == 0


def test_next_window_is_step_aligned_and_stays_behind_the_lag(
    sessions: sessionmaker[Session],
) -> None:
    five = make_target("cpu", step=300, lookback=timedelta(hours=1))
    with sessions() as session:
        window = service.next_window(
            session,
            target=five,
            now=datetime(2026, 1, 5, 12, 4, 59, tzinfo=UTC),
            lag=timedelta(seconds=30),
            max_catchup=CATCHUP,
        )
    newest = to_epoch(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    assert (window.start, window.end, window.step) == (newest - 3600 + 300, newest, 300)
    assert window.start % 300 == 0 and window.points == 12


def test_a_query_error_surfaces_as_a_typed_error(sessions: sessionmaker[Session]) -> None:
    source = two_services()
    source.fail_with = QueryError("target 'cpu': parse error", target="cpu")
    with sessions() as session, pytest.raises(QueryError):
        service.ingest_target(
            session, source=source, target=TARGET, now=NOW, lag=LAG, max_catchup=CATCHUP
        )
    assert watermark(sessions) is None
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(IngestRunRow)) == 0
