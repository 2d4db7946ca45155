"""Incremental ingest cycles against a real Prometheus, driven by a fixed clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import FixedClock, to_epoch
from core.database import session_factory, session_scope
from core.settings import IngestSettings
from ingest.chunking import align_down
from ingest.domain import Window
from ingest.service import IngestSummary, ingest_target, latest_runs
from ingest.tables import IngestRunRow, SampleRow, WatermarkRow
from tests.integration.conftest import (
    STEP,
    History,
    assert_no_duplicates_or_holes,
    at,
    expected_by_labels,
    make_source,
    make_target,
    stored,
    when,
)
from tests.support.servers import PrometheusServer

pytestmark = pytest.mark.timeout(60)

INGEST = IngestSettings()  # lag 30 s


def cycle(engine: Engine, server: PrometheusServer, clock: FixedClock) -> IngestSummary:
    """One cycle as a freshly started process would run it: new source, new session factory."""
    source = make_source(server, max_points_per_chunk=7)
    sessions = session_factory(engine)
    try:
        with session_scope(sessions) as session:
            summary = ingest_target(
                session,
                source=source,
                target=make_target("apps", "app_metric", lookback="30m"),
                now=clock.now(),
                lag=INGEST.lag,
                max_catchup=INGEST.max_catchup,
            )
            session.commit()
    finally:
        source.close()
    return summary


def count_samples(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(SampleRow)) or 0)


def test_cycles_continue_from_the_watermark_without_gaps_or_duplicates(
    prometheus: PrometheusServer, history: History, engine: Engine
) -> None:
    clock = FixedClock(when(at(1, 15, 0, 17)))  # not on the step grid
    # Irregular advances: under a step, exactly a step, a bit over, several steps, a long pause.
    advances = [45, 60, 61, 190, 29, 1, 1200, 59, 3 * 3600 + 7]
    first = cycle(engine, prometheus, clock)
    assert first.status == "ok"
    assert first.window == Window(at(1, 14, 30), at(1, 14, 59), STEP)  # the 30 min lookback
    start = first.window.start
    windows = [first.window]
    mark = first.window.end

    for seconds in advances:
        clock.advance(timedelta(seconds=seconds))
        newest = align_down(to_epoch(clock.now()) - 30, STEP)
        before = count_samples(engine)
        summary = cycle(engine, prometheus, clock)
        if newest == mark:
            # Nothing new has reached the lag line yet: nothing is pulled or stored.
            assert summary.status == "noop"
            assert count_samples(engine) == before
            continue
        assert summary.status == "ok"
        assert summary.window is not None
        # Continues one step after the stored watermark, up to the newest complete step.
        assert summary.window == Window(mark + STEP, newest, STEP)
        assert summary.points == 4 * summary.window.points
        assert count_samples(engine) == before + summary.points
        windows.append(summary.window)
        mark = newest
        with session_factory(engine)() as session:
            row = session.get(WatermarkRow, "apps")
            assert row is not None and row.watermark == mark

        # Running the very same cycle again (same clock) adds nothing.
        again = cycle(engine, prometheus, clock)
        assert again.status == "noop"
        assert count_samples(engine) == before + summary.points

    assert len(windows) >= 6
    # What is stored is exactly the generated data from the first step to the watermark.
    got = stored(session_factory(engine), "apps")
    want = expected_by_labels(history.metric("app_metric"), start, mark)
    assert got.keys() == want.keys() and len(got) == 4
    for key, samples in got.items():
        assert_no_duplicates_or_holes(samples, start, mark)
        assert samples == want[key], dict(key)

    with session_factory(engine)() as session:
        runs = latest_runs(session, target="apps", limit=100)
        ok = session.scalar(
            sa.select(sa.func.count()).select_from(IngestRunRow).where(IngestRunRow.status == "ok")
        )
    assert ok == len(windows) == len(runs)  # one run row per cycle that pulled something
    assert [(r.window_start, r.window_end) for r in reversed(runs)] == [
        (w.start, w.end) for w in windows
    ]


def test_lost_watermark_repull_stores_nothing_twice(
    prometheus: PrometheusServer, history: History, engine: Engine
) -> None:
    # If the watermark is lost (e.g. restored from an older backup), the lookback is pulled
    # again; the samples already stored must not be duplicated or changed.
    clock = FixedClock(when(at(1, 18, 0, 5)))
    first = cycle(engine, prometheus, clock)
    assert first.window is not None
    stored_before = stored(session_factory(engine), "apps")
    with session_factory(engine)() as session:
        session.execute(sa.delete(WatermarkRow))
        session.commit()
    clock.advance(timedelta(minutes=2))
    second = cycle(engine, prometheus, clock)
    assert second.status == "ok" and second.window is not None
    assert second.window.start == first.window.start + 2 * STEP
    got = stored(session_factory(engine), "apps")
    want = expected_by_labels(history.metric("app_metric"), first.window.start, second.window.end)
    assert got == want
    for key, samples in stored_before.items():
        assert got[key][: len(samples)] == samples
