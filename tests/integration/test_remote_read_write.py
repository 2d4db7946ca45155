"""Remote read and remote write against a real Prometheus: remote read returns exactly what
query_range returns for the same targets and ranges (gaps, series that start and stop, off-grid
scrapes, zeros, staleness markers), into the pull and the Parquet history cache; the exporter's
samples land in a Prometheus started as a remote-write receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from core.settings import RemoteWriteSettings, TargetSettings
from ingest.domain import SeriesData, SeriesKey, Window
from ingest.history import backfill
from ingest.prometheus import PrometheusSource
from ingest.remote_read import STALE_NAN
from ingest.service import pull
from models.remote_write import RemoteWriter
from tests.conftest import need_server
from tests.integration.conftest import (
    HIST_END,
    HIST_START,
    NOW,
    STEP,
    History,
    at,
    make_source,
    make_target,
)
from tests.support.servers import MetricSeries, PrometheusServer, ServerMissing, start_prometheus

pytestmark = pytest.mark.timeout(60)


def extra_series() -> list[MetricSeries]:
    """Scrapes off the step grid (with a gap longer than the lookback delta), all-zero and
    mixed zero / non-zero values: what the step evaluation and the decoder must get right."""
    rng = np.random.default_rng(11)
    grid = np.arange(at(0, 0), at(0, 8), 15, dtype=np.int64)
    jitter = grid + rng.integers(0, 15, grid.size)
    off_grid = (jitter < at(0, 3)) | (jitter > at(0, 3, 20))
    return [
        MetricSeries(
            "scraped", {"service": "web"}, jitter[off_grid], rng.normal(4, 1, grid.size)[off_grid]
        ),
        MetricSeries("zeros", {"service": "web"}, grid, np.zeros(grid.size)),
        MetricSeries(
            "mixed",
            {"service": "web"},
            grid,
            np.where(rng.random(grid.size) < 0.5, 0.0, rng.normal(2, 1, grid.size)),
        ),
    ]


@pytest.fixture(scope="module")
def receiver(
    history: History, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """The history plus the extra series, served by a Prometheus that also takes remote write."""
    workdir = tmp_path_factory.mktemp("prometheus-remote")
    try:
        server = start_prometheus(
            workdir,
            [*history.series, *extra_series()],
            flags=["--web.enable-remote-write-receiver"],
        )
    except ServerMissing as exc:
        need_server(exc)  # skips locally, fails in CI
        raise
    yield server
    server.stop()


def by_key(series: list[SeriesData]) -> dict[SeriesKey, tuple[list[int], list[int]]]:
    """Timestamps and the values' bits per series: equality here is bit-exact."""
    return {s.key: (s.timestamps.tolist(), s.values.view(np.uint64).tolist()) for s in series}


def both(
    server: PrometheusServer, **overrides: object
) -> tuple[PrometheusSource, PrometheusSource]:
    return (
        make_source(server, read_api="query_range", **overrides),
        make_source(server, read_api="remote_read", **overrides),
    )


@pytest.mark.parametrize(
    "query",
    [
        "app_metric",
        'queue_depth{service=~"billing|mailer"}',  # one starts late, one stops early
        "gappy",  # a gap shorter and one longer than the lookback delta
        '{__name__=~"scraped|zeros|mixed"}',
        'app_metric{service!="search",route!~"/q.*"}',
    ],
)
def test_remote_read_returns_what_query_range_returns(
    receiver: PrometheusServer, query: str
) -> None:
    plain, remote = both(receiver, max_points_per_chunk=500)
    target = make_target("t", query)
    # The whole history and beyond its end (the lookback tail), in several requests.
    window = Window(HIST_START, HIST_END + 30 * STEP, STEP)
    try:
        expected, got = pull(plain, target, window), pull(remote, target, window)
    finally:
        plain.close()
        remote.close()
    assert expected.points > 0
    assert by_key(got.series) == by_key(expected.series)
    assert got.dropped_non_finite == expected.dropped_non_finite


def test_another_query_is_read_with_query_range_and_gives_the_same(
    receiver: PrometheusServer,
) -> None:
    plain, remote = both(receiver)
    target = make_target("rate", "rate(app_metric[5m])")
    window = Window(at(0, 0), at(0, 6), STEP)
    try:
        assert by_key(pull(remote, target, window).series) == by_key(
            pull(plain, target, window).series
        )
    finally:
        plain.close()
        remote.close()


def test_the_history_cache_fills_the_same_by_remote_read(
    receiver: PrometheusServer, tmp_path: Path
) -> None:
    plain, remote = both(receiver)
    target = TargetSettings(name="hist", query="app_metric", step="60s", lookback="1h")
    end = at(2, 0) - STEP  # two whole days: both blocks are cached
    results = []
    try:
        for name, source in (("plain", plain), ("remote", remote)):
            summary = backfill(
                source=source,
                target=target,
                start=HIST_START,
                end=end,
                complete_before=NOW,
                cache_dir=tmp_path / name,
            )
            again = backfill(
                source=source,
                target=target,
                start=HIST_START,
                end=end,
                complete_before=NOW,
                cache_dir=tmp_path / name,
            )
            assert again.blocks_from_cache == again.blocks == 2
            assert by_key(again.series) == by_key(summary.series)
            results.append(summary)
    finally:
        plain.close()
        remote.close()
    assert results[0].points > 0
    assert by_key(results[1].series) == by_key(results[0].series)


def stale() -> float:
    return float(np.array([STALE_NAN], np.uint64).view(np.float64)[0])


def test_exported_samples_land_in_a_remote_write_receiver(receiver: PrometheusServer) -> None:
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    labels = {"target": "mem", "service": "cart", "pod": "cart-1"}
    samples = [
        ("prognos_forecast", {**labels, "prognos_quantile": q, "horizon": "15m"}, value)
        for q, value in (("0.1", 0.81), ("0.5", 0.87), ("0.9", 0.9312345678901234))
    ]
    samples += [
        ("prognos_anomaly_score", labels, 3.25),
        ("prognos_anomaly", labels, 1.0),
        ("prognos_breach_probability", {**labels, "direction": "above"}, 0.0),
    ]
    writer = RemoteWriter(
        RemoteWriteSettings(url=f"{receiver.url}/api/v1/write", max_samples_per_request=4)
    )
    try:
        result = writer.push(samples, timestamp_ms=now_ms)
    finally:
        writer.close()
    assert (result.sent, result.requests, result.pending, result.dropped) == (6, 2, 0, 0)
    answer = requests.get(
        f"{receiver.url}/api/v1/query",
        params={"query": '{__name__=~"prognos_.*", target="mem"}', "time": now_ms / 1000},
        timeout=10,
    ).json()["data"]["result"]
    got = {
        (item["metric"].pop("__name__"), frozenset(item["metric"].items())): (
            item["value"][0],
            float(item["value"][1]),
        )
        for item in answer
    }
    assert got == {
        (name, frozenset(sample_labels.items())): (now_ms / 1000, value)
        for name, sample_labels, value in samples
    }


def test_staleness_markers_end_a_series_in_both_read_paths(receiver: PrometheusServer) -> None:
    # Written by remote write (promtool cannot backfill a staleness marker): a series that goes
    # stale for ten minutes, in the receiver's head block (within its last hour: older
    # samples are out of its bounds once it holds newer ones).
    base = (int(time.time()) // 60 - 45) * 60
    points = [(base + 60 * i, float(i) + 0.5) for i in range(30)]
    points[10] = (base + 600, stale())
    points = [p for i, p in enumerate(points) if not 11 <= i <= 19]
    writer = RemoteWriter(RemoteWriteSettings(url=f"{receiver.url}/api/v1/write"))
    try:
        for ts, value in points:
            result = writer.push([("went_stale", {"service": "w"}, value)], timestamp_ms=ts * 1000)
            assert result.sent == 1, result.error
    finally:
        writer.close()
    plain, remote = both(receiver)
    target = make_target("stale", "went_stale")
    window = Window(base, base + 40 * 60, STEP)
    try:
        expected, got = pull(plain, target, window), pull(remote, target, window)
    finally:
        plain.close()
        remote.close()
    (series,) = expected.series
    assert base + 600 not in series.timestamps.tolist()  # the marker is a gap, not a value
    assert by_key(got.series) == by_key(expected.series)
