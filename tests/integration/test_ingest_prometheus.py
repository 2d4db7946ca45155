"""Ingest against a real Prometheus: exact values, chunking, series churn, gaps, query errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.database import session_scope
from core.settings import IngestSettings, Settings, TargetSettings
from ingest.domain import SeriesKey, Source, Window
from ingest.errors import QueryError
from ingest.service import IngestSummary, ingest_target, latest_runs, pull
from ingest.tables import IngestRunRow, SeriesRow
from prognos.context import ServiceContext
from prognos.jobs import ingest_cycle
from tests.integration.conftest import (
    GAP_LONG,
    GAP_SHORT,
    LOOKBACK_DELTA,
    QUEUE_EARLY_END,
    QUEUE_LATE_START,
    STEP,
    History,
    assert_no_duplicates_or_holes,
    at,
    expected_by_labels,
    label_key,
    labelset,
    make_source,
    make_target,
    points,
    stored,
    when,
)
from tests.support.servers import PrometheusServer

pytestmark = pytest.mark.timeout(60)

INGEST = IngestSettings()  # defaults: lag 30 s, max_catchup 24 h


def run_cycle(
    sessions: sessionmaker[Session], source: Source, target: TargetSettings, now: int
) -> IngestSummary:
    with session_scope(sessions) as session:
        summary = ingest_target(
            session,
            source=source,
            target=target,
            now=when(now),
            lag=INGEST.lag,
            max_catchup=INGEST.max_catchup,
        )
        session.commit()
    return summary


# ------------------------------------------------------------------ 1. exact values, many chunks


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pull_returns_generated_values_exactly_across_chunk_boundaries(
    prometheus: PrometheusServer, history: History, method: str
) -> None:
    source = make_source(prometheus, max_points_per_chunk=50, method=method)
    target = make_target("app", "app_metric", lookback="6h")
    window = Window(at(1, 0), at(1, 5, 59), STEP)  # 360 steps -> 8 requests of <= 50 points
    chunks: list[tuple[Window, int]] = []
    try:
        result = pull(source, target, window, on_chunk=lambda w, n: chunks.append((w, n)))
    finally:
        source.close()

    # The chunks tile the window: first..last, each next one starts one step after the last.
    assert len(chunks) == 8
    assert chunks[0][0].start == window.start and chunks[-1][0].end == window.end
    for (before, _), (after, _) in itertools.pairwise(chunks):
        assert after.start == before.end + STEP
    assert all(w.points <= 50 for w, _ in chunks)
    # Each request answered every step for each of the 4 series.
    assert [n for _, n in chunks] == [4 * w.points for w, _ in chunks]

    generated = history.metric("app_metric")
    assert {s.key for s in result.series} == {SeriesKey.of("app", labelset(s)) for s in generated}
    for series in generated:
        got = next(s for s in result.series if s.key == SeriesKey.of("app", labelset(series)))
        want = points(series, window.start, window.end)
        assert_no_duplicates_or_holes(
            list(zip(got.timestamps.tolist(), got.values.tolist(), strict=True)),
            window.start,
            window.end,
        )
        # Exact: no rounding anywhere between the generator, Prometheus' JSON and our parse.
        assert np.array_equal(got.timestamps, np.array([t for t, _ in want]))
        assert got.values.tolist() == [v for _, v in want], series.labels
        assert got.dropped_non_finite == 0


def test_ingested_samples_equal_generated_data_exactly(
    prometheus: PrometheusServer, history: History, sessions: sessionmaker[Session]
) -> None:
    source = make_source(prometheus, max_points_per_chunk=50)
    target = make_target("app", "app_metric", lookback="6h")
    summary = run_cycle(sessions, source, target, now=at(1, 6, 0, 0))
    source.close()

    # now 06:00:00 - lag 30 s -> newest full step 05:59; 6 h back from there.
    assert summary.status == "ok"
    assert summary.window == Window(at(1, 0), at(1, 5, 59), STEP)
    assert summary.series == 4 and summary.new_series == 4 and summary.points == 4 * 360
    got = stored(sessions, "app")
    want = expected_by_labels(history.metric("app_metric"), at(1, 0), at(1, 5, 59))
    assert got.keys() == want.keys()
    for key, samples in got.items():
        assert_no_duplicates_or_holes(samples, at(1, 0), at(1, 5, 59))
        assert samples == want[key], dict(key)
    with sessions() as session:
        rows = session.scalars(sa.select(SeriesRow).where(SeriesRow.target == "app")).all()
        assert sorted(r.service or "" for r in rows) == ["api", "checkout", "checkout", "search"]


# ------------------------------------------------------------ 2. series appear and disappear


def test_series_that_appear_and_disappear_are_followed_without_padding(
    prometheus: PrometheusServer, history: History, sessions: sessionmaker[Session]
) -> None:
    source = make_source(prometheus)
    target = make_target("queues", "queue_depth", lookback="1h")
    orders = history.find("queue_depth", service="orders")
    billing = history.find("queue_depth", service="billing")  # appears at 11:17
    mailer = history.find("queue_depth", service="mailer")  # last sample at 12:43

    # Four hourly cycles: 10:00-10:59, 11:00-11:59, 12:00-12:59, 13:00-13:59 on day 1.
    summaries = [run_cycle(sessions, source, target, now=at(1, h)) for h in (11, 12, 13, 14)]
    source.close()
    first, last = at(1, 10), at(1, 13, 59)
    assert [s.window for s in summaries] == [
        Window(at(1, h - 1), at(1, h - 1, 59), STEP) for h in (11, 12, 13, 14)
    ]
    # Rediscovered every cycle: billing is new in the 2nd cycle, mailer is gone in the 4th.
    assert [s.series for s in summaries] == [2, 3, 3, 2]
    assert [s.new_series for s in summaries] == [2, 1, 0, 0]

    got = stored(sessions, "queues")
    assert set(got) == {label_key(labelset(s)) for s in (orders, billing, mailer)}

    assert got[label_key(labelset(orders))] == points(orders, first, last)

    # The late series starts at its first sample, not before, and is exact from there.
    late = got[label_key(labelset(billing))]
    assert late[0][0] == QUEUE_LATE_START
    assert late == points(billing, first, last)

    # The vanished series: its samples, then Prometheus' lookback repeats its last value for
    # up to 5 minutes, then nothing - no padding, no invented values.
    gone = got[label_key(labelset(mailer))]
    real = points(mailer, first, last)
    assert real[-1][0] == QUEUE_EARLY_END
    assert gone[: len(real)] == real
    tail = gone[len(real) :]
    last_value = real[-1][1]
    # Prometheus 2.x includes the sample exactly 5 min old; 3.x does not. Accept either.
    assert [ts - QUEUE_EARLY_END for ts, _ in tail] in (
        [60, 120, 180, 240],
        [60, 120, 180, 240, 300],
    )
    assert all(v == last_value for _, v in tail)
    assert gone[-1][0] <= QUEUE_EARLY_END + LOOKBACK_DELTA

    with sessions() as session:
        rows = {
            r.labels["service"]: r
            for r in session.scalars(sa.select(SeriesRow).where(SeriesRow.target == "queues"))
        }
    # Identity = target + sorted label set; the service label ties a series to its service.
    for name, series in (("orders", orders), ("billing", billing), ("mailer", mailer)):
        row = rows[name]
        assert row.labels == labelset(series)
        assert row.service == name
        assert row.key == SeriesKey.of("queues", labelset(series)).digest
    assert rows["billing"].first_seen == when(at(1, 12))
    assert rows["mailer"].last_seen == when(at(1, 13))  # not seen by the 14:00 cycle
    assert rows["orders"].last_seen == when(at(1, 14))


def test_same_labels_under_another_target_are_another_series(
    prometheus: PrometheusServer, sessions: sessionmaker[Session]
) -> None:
    source = make_source(prometheus)
    for name in ("queues_a", "queues_b"):
        run_cycle(sessions, source, make_target(name, "queue_depth"), now=at(1, 11))
    source.close()
    a, b = stored(sessions, "queues_a"), stored(sessions, "queues_b")
    assert a.keys() == b.keys() and len(a) == 2
    assert a == b  # same data ...
    with sessions() as session:
        count = session.scalar(sa.select(sa.func.count()).select_from(SeriesRow))
    assert count == 4  # ... but separate series, one set per target


# ------------------------------------------------------------------------------------- 3. gaps


def test_gap_longer_than_lookback_stays_missing(
    prometheus: PrometheusServer, history: History, sessions: sessionmaker[Session]
) -> None:
    source = make_source(prometheus, max_points_per_chunk=37)
    target = make_target("pay", "gappy", lookback="3h")
    summary = run_cycle(sessions, source, target, now=at(0, 6))  # window 03:00 - 05:59
    source.close()
    assert summary.window == Window(at(0, 3), at(0, 5, 59), STEP)
    gappy = history.find("gappy")
    (samples,) = stored(sessions, "pay").values()
    got = dict(samples)
    assert len(got) == len(samples)  # no duplicate timestamps
    generated = dict(points(gappy, at(0, 3), at(0, 5, 59)))

    # Every generated sample in the window is stored with its exact value.
    assert {ts: got.get(ts) for ts in generated} == generated

    # A 3-minute hole is within the lookback: Prometheus repeats the sample before it.
    before_short = generated[GAP_SHORT[0] - STEP]
    for ts in range(GAP_SHORT[0], GAP_SHORT[1] + STEP, STEP):
        assert got[ts] == before_short

    # A 24-minute hole: repeats for up to 5 min after the last sample, then missing points.
    last_ts = GAP_LONG[0] - STEP
    before_long = generated[last_ts]
    for ts in range(last_ts + STEP, last_ts + LOOKBACK_DELTA, STEP):
        assert got[ts] == before_long, f"+{ts - last_ts}s should repeat the last sample"
    edge = last_ts + LOOKBACK_DELTA  # exactly 5 min: included by Prometheus 2.x, not by 3.x
    assert got.get(edge, before_long) == before_long
    missing = range(last_ts + LOOKBACK_DELTA + STEP, GAP_LONG[1] + STEP, STEP)
    assert len(missing) == 19
    assert [ts for ts in missing if ts in got] == [], "Prognos must not invent values in a gap"

    # After the gap the values resume exactly, and nothing else was stored.
    resumed = GAP_LONG[1] + STEP
    assert got[resumed] == generated[resumed]
    invented = set(got) - set(generated)
    allowed = set(range(GAP_SHORT[0], GAP_SHORT[1] + STEP, STEP)) | set(
        range(last_ts + STEP, edge + STEP, STEP)
    )
    assert invented <= allowed
    assert summary.points == len(samples)


# ------------------------------------------------------------------------------ 5. query errors


@pytest.mark.parametrize("query", ["sum(", "rate(foo[5m]"])
def test_promql_error_names_the_target(prometheus: PrometheusServer, query: str) -> None:
    source = make_source(prometheus)
    target = make_target("broken_query", query)
    with pytest.raises(QueryError) as caught:
        source.query_range(target, at(1, 0), at(1, 1), STEP)
    source.close()
    assert "'broken_query'" in caught.value.message
    assert "parse error" in caught.value.message
    assert caught.value.target == "broken_query"
    assert caught.value.code == "query_invalid"


def test_failed_target_is_recorded_and_others_still_ingest(
    prometheus: PrometheusServer, history: History, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    targets = [
        make_target("apps", "app_metric"),
        make_target("bad_sum", "sum("),
        make_target("bad_rate", "rate(foo[5m]"),
        make_target("queues", "queue_depth"),
    ]
    source = make_source(prometheus)
    settings = Settings(source="prometheus", prometheus=source.settings, targets=targets)
    context = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        source=source,
        targets=targets,
        clock=FixedClock(when(at(1, 9, 0, 20))),  # - 30 s lag: the newest step is 08:59
    )
    summaries = ingest_cycle(context)
    source.close()

    assert [(s.target, s.status) for s in summaries] == [
        ("apps", "ok"),
        ("bad_sum", "failed"),
        ("bad_rate", "failed"),
        ("queues", "ok"),
    ]
    with sessions() as session:
        for name in ("bad_sum", "bad_rate"):
            (run,) = latest_runs(session, target=name)
            assert run.status == "failed"
            assert run.error_code == "query_invalid"
            assert run.error_message is not None
            assert f"'{name}'" in run.error_message and "parse error" in run.error_message
            assert run.window_start is None
        for name in ("apps", "queues"):
            (run,) = latest_runs(session, target=name)
            assert run.status == "ok" and run.error_code is None
            assert (run.window_start, run.window_end) == (at(1, 8), at(1, 8, 59))
        total = session.scalar(sa.select(sa.func.count()).select_from(IngestRunRow))
        assert total == 4

    window = (at(1, 8), at(1, 8, 59))
    assert stored(sessions, "apps") == expected_by_labels(history.metric("app_metric"), *window)
    assert stored(sessions, "queues") == expected_by_labels(history.metric("queue_depth"), *window)
    assert stored(sessions, "bad_sum") == {} and stored(sessions, "bad_rate") == {}
