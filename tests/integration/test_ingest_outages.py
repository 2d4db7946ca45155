"""Prometheus going away: failed runs keep the watermark, catch-up is complete, history is cached.

These tests stop and restart Prometheus, so they use their own server (the shared one stays up).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from ingest.domain import SeriesData, SeriesKey, Window
from ingest.errors import SourceUnavailableError
from ingest.history import backfill, cache_folder
from ingest.service import latest_runs
from ingest.tables import WatermarkRow
from prognos.context import ServiceContext
from prognos.jobs import ingest_cycle
from tests.integration.conftest import (
    DAY,
    DAY0,
    NOW,
    STEP,
    History,
    assert_no_duplicates_or_holes,
    at,
    expected_by_labels,
    labelset,
    launch_prometheus,
    make_source,
    make_target,
    points,
    stored,
    when,
)
from tests.support.servers import PrometheusServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def own_prometheus(
    history: History, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("own-prometheus")
    server = launch_prometheus(workdir, history.metric("app_metric"))
    yield server
    server.stop()


@pytest.fixture
def server(own_prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """The module's own Prometheus, running at the start of each test whatever the last did."""
    if own_prometheus.proc is None:
        own_prometheus.start()
    yield own_prometheus


def watermark(sessions: sessionmaker[Session], target: str) -> int | None:
    with sessions() as session:
        row = session.get(WatermarkRow, target)
        return None if row is None else row.watermark


# ----------------------------------------------------------------- 6. Prometheus stops mid-run


def test_outage_records_failure_keeps_watermark_and_catches_up(
    server: PrometheusServer,
    history: History,
    engine: Engine,
    sessions: sessionmaker[Session],
) -> None:
    target = make_target("apps", "app_metric", lookback="30m")
    source = make_source(server, retries=1, backoff=0, timeout=timedelta(seconds=3))
    clock = FixedClock(when(at(1, 20, 0, 10)))
    settings = Settings(source="prometheus", prometheus=source.settings, targets=[target])
    context = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        source=source,
        targets=[target],
        clock=clock,
    )

    first_start = at(1, 19, 30)
    for _ in range(3):
        (summary,) = ingest_cycle(context)
        assert summary.status == "ok"
        clock.advance(timedelta(minutes=5))
    mark = watermark(sessions, "apps")
    assert mark == at(1, 20, 9)

    server.stop()
    try:
        for _ in range(2):  # two missed cycles, 12 minutes of data not pulled
            (summary,) = ingest_cycle(context)
            assert summary.status == "failed"
            assert watermark(sessions, "apps") == mark  # not advanced past what is stored
            clock.advance(timedelta(minutes=6))
        with sessions() as session:
            failed = latest_runs(session, target="apps", limit=2)
        for run in failed:
            assert (run.status, run.error_code) == ("failed", "source_unavailable")
            assert run.error_message is not None
            assert server.url in run.error_message and "'apps'" in run.error_message
        samples_during_outage = stored(sessions, "apps")
    finally:
        server.start()

    # Same source object (as in the running service) once Prometheus is back.
    (summary,) = ingest_cycle(context)
    source.close()
    assert summary.status == "ok"
    newest = at(1, 20, 26)  # clock 20:27:10 - 30 s lag
    assert summary.window == Window(mark + STEP, newest, STEP)  # the whole missed stretch
    assert watermark(sessions, "apps") == newest

    got = stored(sessions, "apps")
    want = expected_by_labels(history.metric("app_metric"), first_start, newest)
    assert got.keys() == want.keys() and len(got) == 4
    for key, samples in got.items():
        assert_no_duplicates_or_holes(samples, first_start, newest)
        assert samples == want[key], dict(key)
        assert samples[: len(samples_during_outage[key])] == samples_during_outage[key]

    with sessions() as session:
        runs = list(reversed(latest_runs(session, target="apps")))
    assert [r.status for r in runs] == ["ok", "ok", "ok", "failed", "failed", "ok"]
    assert [r.error_code for r in runs] == [None, None, None, *["source_unavailable"] * 2, None]


# ------------------------------------------------------------------- 7. backfill with a cache


def test_backfill_is_served_from_the_parquet_cache_when_prometheus_is_down(
    server: PrometheusServer, history: History, tmp_path: Path
) -> None:
    target = make_target("apps", "app_metric")
    start, end = DAY0 + 6 * 3600, DAY0 + DAY + 18 * 3600  # 36 h across two UTC days
    cache_dir = tmp_path / "cache"
    generated = history.metric("app_metric")

    def check(summary_series: list[SeriesData], label: str) -> None:
        assert {s.key for s in summary_series} == {
            SeriesKey.of("apps", labelset(s)) for s in generated
        }, label
        for series in generated:
            got = next(s for s in summary_series if s.key == SeriesKey.of("apps", labelset(series)))
            want = points(series, start, end)
            assert got.timestamps.tolist() == [t for t, _ in want], label
            assert got.values.tolist() == [v for _, v in want], label

    source = make_source(server, retries=0, backoff=0, timeout=timedelta(seconds=3))
    blocks_seen: list[bool] = []
    first = backfill(
        source=source,
        target=target,
        start=start,
        end=end,
        complete_before=NOW,
        cache_dir=cache_dir,
        on_block=lambda done: blocks_seen.append(done.cached),
    )
    assert first.window == Window(start, end, STEP)
    assert (first.blocks, first.blocks_from_cache) == (2, 0)
    assert blocks_seen == [False, False]
    assert first.points == 4 * ((end - start) // STEP + 1)
    check(first.series, "from Prometheus")
    folder = cache_folder(cache_dir, source, target)
    assert sorted(p.name for p in folder.glob("*.parquet")) == [
        f"block-{DAY0}-{DAY0 + DAY - STEP}.parquet",
        f"block-{DAY0 + DAY}-{DAY0 + 2 * DAY - STEP}.parquet",
    ]
    source.close()

    server.stop()
    # A new source (as a second training run would build), with Prometheus down.
    offline = make_source(server, retries=0, backoff=0, timeout=timedelta(seconds=3))
    with pytest.raises(SourceUnavailableError, match="unreachable"):
        offline.check()
    second = backfill(
        source=offline,
        target=target,
        start=start,
        end=end,
        complete_before=NOW,
        cache_dir=cache_dir,
    )
    offline.close()
    assert second.blocks == second.blocks_from_cache == 2
    check(second.series, "from the cache")
    for a, b in zip(
        sorted(first.series, key=lambda s: str(s.key)),
        sorted(second.series, key=lambda s: str(s.key)),
        strict=True,
    ):
        assert a.key == b.key
        assert np.array_equal(a.timestamps, b.timestamps)
        assert np.array_equal(a.values, b.values)
