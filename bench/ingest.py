#!/usr/bin/env python
"""Ingest throughput from a real Prometheus, against baselines measured in the same run.

Generates `--series` series x `--hours` of history at `--step` seconds with numpy (fixed seed),
backfills them with promtool into a fresh Prometheus on a loopback port (also a remote-write
receiver), then measures, each `--repeats` times (median, min, max):

  raw fetch            plain `requests.get(...).json()` of the same query_range (the naive floor)
  api client           prometheus-api-client `custom_query_range` + conversion to Python floats
  pull (query_range)   `ingest.service.pull` through `PrometheusSource` (JSON parse time summed
                       over every chunk request by wrapping `source._parse_matrix`)
  pull (remote read)   the same with `prometheus.read_api: remote_read` (protobuf + snappy)
  backfill (each)      `ingest.history.backfill` into a fresh Parquet cache, every block written
  store                `ingest.service.store` of the pulled series into a fresh db + commit
  ingest_target        the full cycle (pull + store + watermark + run row), both read paths
  export               the prediction samples of one cycle (12 per series) rendered as /metrics
                       text, encoded as remote-write requests, and pushed to Prometheus

The databases are SQLite files, and with `--postgres` also a PostgreSQL 15 started for the run.
Ratios are points/s divided by another measurement's points/s from the same run (machines are
noisy; compare ratios across machines, not seconds). Setup (generate, openmetrics + promtool +
start) is timed and printed but is not part of any throughput.

Exit status: 0 ok, 1 the pulled data does not match what was generated, 2 Prometheus missing.

    .venv/bin/python bench/ingest.py [--series 1000] [--hours 24] [--step 60] [--repeats 3]
                                     [--postgres] [--out bench/results/ingest.json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import requests

# Run as a script, sys.path[0] is bench/, where this very file would shadow the `ingest`
# package: drop bench/ and put the repository root first.
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

from prometheus_api_client import PrometheusConnect  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.core import Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from core.clock import FixedClock, from_epoch  # noqa: E402
from core.database import create_engine, migrate, session_factory, session_scope  # noqa: E402
from core.settings import (  # noqa: E402
    IngestSettings,
    PrometheusSettings,
    RemoteWriteSettings,
    TargetSettings,
)
from ingest import service  # noqa: E402
from ingest.chunking import aligned_window, plan_chunks  # noqa: E402
from ingest.domain import SeriesData, Window  # noqa: E402
from ingest.history import backfill  # noqa: E402
from ingest.prometheus import PrometheusSource  # noqa: E402
from ingest.tables import SampleRow  # noqa: E402
from models.remote_write import (  # noqa: E402
    ExportSample,
    RemoteWriter,
    batches,
    encode_write_request,
)
from tests.support.servers import (  # noqa: E402
    MetricSeries,
    PostgresServer,
    PrometheusServer,
    ServerMissing,
    start_postgres,
    start_prometheus,
)

METRIC = "bench_metric"
SERVICES = 50
SEED = 20240603
# A fixed data end (2024-06-03T00:00:00Z) keeps the data set identical from run to run.
DATA_END = 1_717_372_800
MAX_POINTS_PER_CHUNK = 10_000
DEFAULT_OUT = ROOT / "bench" / "results" / "ingest.json"

# Wide enough for the table when piped (rich falls back to 80 columns otherwise).
console = Console(width=None if sys.stdout.isatty() else 120)


# ----------------------------------------------------------------------------- data


@dataclass
class Dataset:
    series: list[MetricSeries]
    timestamps: np.ndarray
    values: dict[tuple[str, str], np.ndarray]  # (service, pod) -> values
    step: int

    @property
    def points(self) -> int:
        return len(self.series) * int(self.timestamps.shape[0])

    @property
    def window(self) -> Window:
        return aligned_window(int(self.timestamps[0]), int(self.timestamps[-1]), self.step)


def generate(n_series: int, hours: int, step: int, seed: int) -> Dataset:
    """Daily-seasonal, noisy, strictly positive, non-round floats; labels service + pod."""
    n = hours * 3600 // step
    end = DATA_END - DATA_END % step
    timestamps = end - step * np.arange(n - 1, -1, -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    level = rng.uniform(5.0, 5000.0, n_series)[:, None]
    amplitude = rng.uniform(0.05, 0.4, n_series)[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, n_series)[:, None]
    day = 2 * np.pi * (timestamps % 86_400)[None, :] / 86_400
    noise = rng.normal(0.0, 0.03, (n_series, n))
    values = np.abs(level * (1 + amplitude * np.sin(day + phase) + noise)) + 1e-3
    series: list[MetricSeries] = []
    by_labels: dict[tuple[str, str], np.ndarray] = {}
    for i in range(n_series):
        svc = f"svc-{i % SERVICES:02d}"
        pod = f"{svc}-{i // SERVICES:04d}-{rng.integers(16**5):05x}"
        series.append(MetricSeries(METRIC, {"service": svc, "pod": pod}, timestamps, values[i]))
        by_labels[(svc, pod)] = values[i]
    return Dataset(series, timestamps, by_labels, step)


def check_pulled(data: Dataset, pulled: Sequence[SeriesData]) -> list[str]:
    """Every generated series, every timestamp, every value (bit-exact) came back."""
    problems: list[str] = []
    if len(pulled) != len(data.series):
        problems.append(f"pulled {len(pulled)} series, generated {len(data.series)}")
    seen: set[tuple[str, str]] = set()
    for item in pulled:
        labels = item.key.label_dict
        key = (labels.get("service", ""), labels.get("pod", ""))
        expected = data.values.get(key)
        if expected is None:
            problems.append(f"unexpected series {item.key}")
            continue
        seen.add(key)
        if not np.array_equal(item.timestamps, data.timestamps):
            missing = np.setdiff1d(data.timestamps, item.timestamps).size
            problems.append(f"{item.key}: {len(item)} points, {missing} timestamps missing")
        elif not np.array_equal(item.values, expected):
            bad = int((item.values != expected).sum())
            problems.append(f"{item.key}: {bad} values differ from the generated ones")
    missing_series = len(data.values) - len(seen)
    if missing_series:
        problems.append(f"{missing_series} generated series never came back")
    total = sum(len(s) for s in pulled)
    if total != data.points:
        problems.append(f"pulled {total} points, generated {data.points}")
    return problems[:20]


# ----------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    label: str
    points: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def points_per_second(self) -> float:
        return self.points / self.median if self.median > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "points": self.points,
            "seconds_median": self.median,
            "seconds_min": min(self.seconds),
            "seconds_max": max(self.seconds),
            "seconds_all": self.seconds,
            "points_per_second": self.points_per_second,
        }


class ParseTimer:
    """Sums `PrometheusSource._parse_matrix` time over every chunk request (bench-only wrap).

    `PrometheusSource.last_parse_seconds` only holds the last request's parse time.
    """

    def __init__(self, source: PrometheusSource) -> None:
        self.seconds = 0.0
        self.calls = 0
        original = source._parse_matrix

        def timed(body: bytes, target: TargetSettings) -> Any:
            started = time.perf_counter()
            try:
                return original(body, target)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        source._parse_matrix = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0


def raw_fetch(url: str, query: str, chunks: Sequence[Window]) -> int:
    """What a naive client pays: requests.get + stdlib json, nothing else."""
    points = 0
    for chunk in chunks:
        response = requests.get(
            f"{url}/api/v1/query_range",
            params={"query": query, "start": chunk.start, "end": chunk.end, "step": chunk.step},
            timeout=300,
        )
        response.raise_for_status()
        document = response.json()
        points += sum(len(s["values"]) for s in document["data"]["result"])
    return points


def api_client_fetch(client: PrometheusConnect, query: str, chunks: Sequence[Window]) -> int:
    """prometheus-api-client as a user would call it, converting to Python floats."""
    points = 0
    for chunk in chunks:
        result = client.custom_query_range(
            query,
            start_time=from_epoch(chunk.start),
            end_time=from_epoch(chunk.end),
            step=str(chunk.step),
        )
        for item in result:
            pairs = [(float(t), float(v)) for t, v in item["values"]]
            points += len(pairs)
    return points


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


@dataclass
class Databases:
    """Fresh, migrated databases of one kind: SQLite files, or databases on a PostgreSQL server."""

    kind: str
    directory: Path
    postgres: PostgresServer | None = None

    @contextmanager
    def fresh(self, name: str) -> Iterator[Any]:
        if self.postgres is not None:
            url = self.postgres.create_database(f"bench_{name.replace('-', '_')}")
        else:
            path = self.directory / f"{name}.db"
            url = f"sqlite:///{path.as_posix()}"
        engine = create_engine(url)
        try:
            migrate(engine)
            yield session_factory(engine)
        finally:
            engine.dispose()
            if self.postgres is not None:
                self.postgres.drop_database(f"bench_{name.replace('-', '_')}")
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)


def count_samples(session: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(SampleRow)) or 0)


def prometheus_counter(url: str, name: str) -> float | None:
    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def wait_for_first_compaction(server: PrometheusServer, started: float, limit_s: float) -> float:
    """Prometheus compacts the backfilled 2h blocks ~1 min after it starts; let it happen
    before the Prometheus-bound timings rather than in the middle of one."""
    waited = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        done = prometheus_counter(server.url, "prometheus_tsdb_compactions_total")
        if done is not None and done > 0:
            time.sleep(1.0)  # let the reload that follows a compaction settle
            break
        time.sleep(0.5)
    return time.perf_counter() - waited


def prometheus_version() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()
    return first[0] if first else "unknown"


def profile(label: str, fn: Callable[[], Any], limit: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats("tottime")
    stats.print_stats(limit)
    return f"--- cProfile: {label} (sorted by tottime)\n{buffer.getvalue()}"


# ----------------------------------------------------------------------------- export


QUANTILES = ("0.1", "0.5", "0.9")
HORIZONS = ("5m", "15m", "30m")


def prediction_samples(data: Dataset) -> list[ExportSample]:
    """What /metrics shows after a cycle over these series: nine forecast samples (three
    quantiles x three horizons), the anomaly score and flag, the breach probability."""
    rng = np.random.default_rng(data.step)
    samples: list[ExportSample] = []
    for item in data.series:
        labels = {**item.labels, "target": "bench"}
        level = float(item.values[-1])
        for horizon in HORIZONS:
            for quantile in QUANTILES:
                value = level * (1 + 0.1 * (float(quantile) - 0.5)) + rng.normal()
                samples.append(
                    (
                        "prognos_forecast",
                        {**labels, "prognos_quantile": quantile, "horizon": horizon},
                        value,
                    )
                )
        samples.append(("prognos_anomaly_score", labels, float(rng.normal())))
        samples.append(("prognos_anomaly", labels, 0.0))
        samples.append(
            ("prognos_breach_probability", {**labels, "direction": "above"}, float(rng.random()))
        )
    return samples


class SampleCollector(Collector):
    """/metrics' families for the same samples (the exposition a scrape renders)."""

    def __init__(self, samples: Sequence[ExportSample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, labels, value in self.samples:
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(name, name, "gauge")
            family.add_sample(name, dict(labels), value)
        yield from families.values()


def render_metrics(samples: Sequence[ExportSample]) -> int:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(samples))
    return len(generate_latest(registry))


def query_count(url: str, query: str, at_ms: int) -> int:
    answer = requests.get(
        f"{url}/api/v1/query", params={"query": query, "time": at_ms / 1000}, timeout=60
    ).json()
    return len(answer["data"]["result"])


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ingest throughput from a real Prometheus (prognos pull/store/ingest_target) "
        "against a raw requests+json fetch and prometheus-api-client, measured in the same run.",
    )
    parser.add_argument("--series", type=int, default=1000, help="series to generate (1000)")
    parser.add_argument("--hours", type=int, default=24, help="hours of history (24)")
    parser.add_argument("--step", type=int, default=60, help="seconds between samples (60)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (3)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"numpy seed ({SEED})")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (bench/results/ingest.json)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile of one pull and one store"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also store and ingest into a PostgreSQL 15 started for the run (binary COPY)",
    )
    parser.add_argument(
        "--no-compaction-wait",
        action="store_true",
        help="do not wait for Prometheus' first block compaction before the fetch timings",
    )
    args = parser.parse_args(argv)
    if args.series < 1 or args.hours < 1 or args.step < 1 or args.repeats < 1:
        parser.error("--series, --hours, --step and --repeats must be positive")
    if args.hours * 3600 // args.step < 2:
        parser.error("--hours/--step give fewer than 2 points per series")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    step = args.step
    t_gen, data = timed(lambda: generate(args.series, args.hours, step, args.seed))
    window = data.window
    assert window.points == data.timestamps.shape[0]
    chunks = plan_chunks(window, MAX_POINTS_PER_CHUNK)
    console.print(
        f"[bold]ingest bench[/]: {args.series} series x {args.hours} h at {step}s = "
        f"{data.points:,} points, {len(chunks)} request(s) per fetch, {args.repeats} repeat(s)"
    )
    console.print(f"generate (numpy): {t_gen:.2f}s")

    workdir = Path(tempfile.mkdtemp(prefix="prognos-bench-ingest-"))
    server: PrometheusServer | None = None
    postgres: PostgresServer | None = None
    try:
        setup_started = time.perf_counter()
        try:
            server = start_prometheus(
                workdir / "prometheus", data.series, flags=["--web.enable-remote-write-receiver"]
            )
            if args.postgres:
                postgres = start_postgres()
        except ServerMissing as exc:
            console.print(f"[red]cannot run: {exc}[/]")
            return 2
        setup_seconds = time.perf_counter() - setup_started
        server_started = time.perf_counter()
        console.print(
            f"setup (openmetrics write + promtool backfill + start): {setup_seconds:.2f}s "
            f"-> {server.url}"
        )
        databases = [Databases("sqlite", workdir)]
        if postgres is not None:
            databases.append(Databases("postgresql", workdir, postgres))
        return run(
            args,
            data,
            window,
            chunks,
            server,
            workdir,
            t_gen,
            setup_seconds,
            server_started,
            databases,
        )
    finally:
        if server is not None:
            server.stop()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(postgres.root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def run(
    args: argparse.Namespace,
    data: Dataset,
    window: Window,
    chunks: list[Window],
    server: PrometheusServer,
    workdir: Path,
    generate_seconds: float,
    setup_seconds: float,
    server_started: float,
    databases: list[Databases],
) -> int:
    step = args.step
    url = server.url
    target = TargetSettings(name="bench", query=METRIC, step=f"{step}s", lookback=f"{args.hours}h")
    prom_settings = PrometheusSettings(
        url=url, max_points_per_chunk=MAX_POINTS_PER_CHUNK, timeout="300s"
    )
    source = PrometheusSource(prom_settings)
    parse_timer = ParseTimer(source)
    remote_settings = prom_settings.model_copy(update={"read_api": "remote_read"})
    remote_source = PrometheusSource(remote_settings)
    # What-if (bench only): the same source with gzip. requests asks for gzip unless told
    # otherwise and Prometheus then compresses the whole response on one core.
    gzip_source = PrometheusSource(prom_settings.model_copy(update={"compression": True}))
    client = PrometheusConnect(url=url, disable_ssl=True)
    ingest_settings = IngestSettings()
    now = from_epoch(window.end) + ingest_settings.lag + timedelta(seconds=5)
    clock = FixedClock(now)

    # Warm-up (page cache, connections) + the correctness gate: nothing is timed before this.
    raw_fetch(url, METRIC, chunks)
    pulled = service.pull(source, target, window)
    problems = check_pulled(data, pulled.series)
    remote_pulled = service.pull(remote_source, target, window)
    problems += [f"remote read: {p}" for p in check_pulled(data, remote_pulled.series)]
    if problems:
        console.print("[red bold]CORRECTNESS FAILURE[/]: a pull does not match the data")
        for problem in problems:
            console.print(f"  - {problem}")
        return 1
    console.print(
        f"correctness: {len(pulled.series)} series, {pulled.points:,} points, every timestamp "
        "and value bit-exact, by query_range and by remote read"
    )
    del remote_pulled

    results = {
        "raw_fetch": Measurement("baseline: requests + json"),
        "api_client": Measurement("baseline: prometheus-api-client"),
        "prognos_pull": Measurement("prognos pull (query_range)"),
        "remote_read_pull": Measurement("prognos pull (remote read)"),
        "query_range_backfill": Measurement("backfill into Parquet (query_range)"),
        "remote_read_backfill": Measurement("backfill into Parquet (remote read)"),
        "prognos_pull_gzip": Measurement("what-if: prognos pull, gzip"),
    }
    for db in databases:
        results[f"store_{db.kind}"] = Measurement(f"prognos store ({db.kind})")
        for read in ("query_range", "remote_read"):
            results[f"ingest_target_{read}_{db.kind}"] = Measurement(
                f"ingest_target end to end ({read}, {db.kind})"
            )
    failures: list[str] = []
    parse_seconds: list[float] = []
    parse_shares: list[float] = []

    def expect(name: str, points: int) -> None:
        if points != data.points:
            failures.append(f"{name}: {points} points, expected {data.points}")
        results[name].points = points

    # 1) store: no Prometheus involved, so it runs while Prometheus does its first compaction.
    for db in databases:
        for i in range(args.repeats):
            with db.fresh(f"store-{i}") as factory, session_scope(factory) as session:

                def do_store(session: Any = session) -> None:
                    service.store(session, target=target, series=pulled.series, seen_at=now)
                    session.commit()

                seconds, _ = timed(do_store)
                expect(f"store_{db.kind}", count_samples(session))
            results[f"store_{db.kind}"].seconds.append(seconds)
            console.print(f"  store ({db.kind}) #{i + 1}: {seconds:.2f}s")

    compaction_wait = 0.0
    if not args.no_compaction_wait:
        compaction_wait = wait_for_first_compaction(server, server_started, limit_s=90.0)
        if compaction_wait > 0.5:
            console.print(f"  waited {compaction_wait:.1f}s for Prometheus' first compaction")
    compactions_before = prometheus_counter(url, "prometheus_tsdb_compactions_total")

    def backfill_into(src: PrometheusSource, folder: Path) -> Any:
        summary = backfill(
            source=src,
            target=target,
            start=window.start,
            end=window.end,
            complete_before=window.end + step,  # every block is written to the cache
            cache_dir=folder,
            refresh=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
        return summary

    # 2) reads, interleaved per repeat so that drift hits them alike.
    for i in range(args.repeats):
        seconds, points = timed(lambda: raw_fetch(url, METRIC, chunks))
        results["raw_fetch"].seconds.append(seconds)
        expect("raw_fetch", points)

        seconds, points = timed(lambda: api_client_fetch(client, METRIC, chunks))
        results["api_client"].seconds.append(seconds)
        expect("api_client", points)

        parse_timer.reset()
        seconds, result = timed(lambda: service.pull(source, target, window))
        results["prognos_pull"].seconds.append(seconds)
        expect("prognos_pull", result.points)
        parse_seconds.append(parse_timer.seconds)
        parse_shares.append(parse_timer.seconds / seconds)
        del result

        seconds, result = timed(lambda: service.pull(remote_source, target, window))
        results["remote_read_pull"].seconds.append(seconds)
        expect("remote_read_pull", result.points)
        del result

        for read, src in (("query_range", source), ("remote_read", remote_source)):
            folder = workdir / f"cache-{read}-{i}"
            seconds, summary = timed(lambda src=src, folder=folder: backfill_into(src, folder))
            results[f"{read}_backfill"].seconds.append(seconds)
            expect(f"{read}_backfill", summary.points)
            if read == "remote_read" and i == 0:
                failures.extend(
                    f"remote-read backfill: {p}" for p in check_pulled(data, summary.series)
                )
            del summary

        seconds, result = timed(lambda: service.pull(gzip_source, target, window))
        results["prognos_pull_gzip"].seconds.append(seconds)
        expect("prognos_pull_gzip", result.points)
        del result
        console.print(
            f"  reads #{i + 1}: raw {results['raw_fetch'].seconds[-1]:.2f}s, "
            f"api client {results['api_client'].seconds[-1]:.2f}s, "
            f"pull {results['prognos_pull'].seconds[-1]:.2f}s "
            f"(parse {parse_seconds[-1]:.2f}s), "
            f"remote read {results['remote_read_pull'].seconds[-1]:.2f}s, backfill "
            f"{results['query_range_backfill'].seconds[-1]:.2f}s / "
            f"{results['remote_read_backfill'].seconds[-1]:.2f}s, gzip {seconds:.2f}s"
        )

    # 3) ingest_target end to end: fresh db, no watermark, lookback covers the data.
    for db in databases:
        for i in range(args.repeats):
            for read, settings in (
                ("query_range", prom_settings),
                ("remote_read", remote_settings),
            ):
                name = f"ingest_target_{read}_{db.kind}"
                e2e_source = PrometheusSource(settings)
                try:
                    with (
                        db.fresh(f"cycle-{read}-{i}") as factory,
                        session_scope(factory) as session,
                    ):

                        def do_cycle(
                            session: Any = session, src: PrometheusSource = e2e_source
                        ) -> Any:
                            summary = service.ingest_target(
                                session,
                                source=src,
                                target=target,
                                now=clock.now(),
                                lag=ingest_settings.lag,
                                max_catchup=ingest_settings.max_catchup,
                            )
                            session.commit()
                            return summary

                        seconds, summary = timed(do_cycle)
                        stored = count_samples(session)
                finally:
                    e2e_source.close()
                if summary.window != window:
                    failures.append(f"{name} pulled window {summary.window}, expected {window}")
                if stored != summary.points:
                    failures.append(f"{name} stored {stored} of {summary.points} points")
                expect(name, summary.points)
                results[name].seconds.append(seconds)
                console.print(f"  ingest_target ({read}, {db.kind}) #{i + 1}: {seconds:.2f}s")
    compactions_after = prometheus_counter(url, "prometheus_tsdb_compactions_total")

    # 4) export: the same prediction samples rendered as /metrics and pushed by remote write.
    samples = prediction_samples(data)
    export = {
        "render": Measurement("/metrics rendering (prometheus_client text)"),
        "encode": Measurement("remote write: encode (protobuf + snappy)"),
        "push": Measurement("remote write: push to Prometheus (encode + send + ingest)"),
    }
    writer = RemoteWriter(
        RemoteWriteSettings(
            url=f"{url}/api/v1/write", timeout="120s", max_samples_per_request=5_000
        )
    )
    stamp = int(time.time() * 1000)
    for i in range(args.repeats):
        seconds, _ = timed(lambda: render_metrics(samples))
        export["render"].seconds.append(seconds)
        seconds, _ = timed(
            lambda: [encode_write_request(b) for b in batches(samples, stamp, 5_000)]
        )
        export["encode"].seconds.append(seconds)
        seconds, pushed = timed(lambda i=i: writer.push(samples, timestamp_ms=stamp + i))
        export["push"].seconds.append(seconds)
        if pushed.sent != len(samples):
            failures.append(f"remote write: sent {pushed.sent} of {len(samples)} ({pushed.error})")
    writer.close()
    for m in export.values():
        m.points = len(samples)
    landed = query_count(url, '{__name__=~"prognos_.*"}', stamp + args.repeats - 1)
    if landed != len(samples):
        failures.append(f"remote write: {landed} of {len(samples)} series queried back")

    profiles: list[str] = []
    if args.profile:
        profiles.append(profile("prognos pull", lambda: service.pull(source, target, window)))
        profiles.append(
            profile(
                "prognos pull (remote read)", lambda: service.pull(remote_source, target, window)
            )
        )
        with databases[0].fresh("profile") as factory, session_scope(factory) as session:

            def store_and_commit() -> None:
                service.store(session, target=target, series=pulled.series, seen_at=now)
                session.commit()

            profiles.append(profile(f"prognos store ({databases[0].kind})", store_and_commit))
    source.close()
    remote_source.close()
    gzip_source.close()

    raw_pps = results["raw_fetch"].points_per_second
    pps = {name: m.points_per_second for name, m in results.items()}
    ratios = {f"{name}/raw_fetch": value / raw_pps for name, value in pps.items()}
    ratios["prognos_pull/api_client"] = pps["prognos_pull"] / pps["api_client"]
    ratios["prognos_pull_gzip/prognos_pull"] = pps["prognos_pull_gzip"] / pps["prognos_pull"]
    ratios["remote_read_pull/prognos_pull"] = pps["remote_read_pull"] / pps["prognos_pull"]
    ratios["remote_read_backfill/prognos_pull"] = pps["remote_read_backfill"] / pps["prognos_pull"]
    ratios["remote_read_backfill/query_range_backfill"] = (
        pps["remote_read_backfill"] / pps["query_range_backfill"]
    )
    for db in databases:
        ratios[f"ingest_target_remote_read_{db.kind}/ingest_target_query_range_{db.kind}"] = (
            pps[f"ingest_target_remote_read_{db.kind}"]
            / pps[f"ingest_target_query_range_{db.kind}"]
        )
    export_ratios = {
        "push/render": export["push"].points_per_second / export["render"].points_per_second,
        "encode/render": export["encode"].points_per_second / export["render"].points_per_second,
    }
    parse_share = statistics.median(parse_shares)

    table = Table(title=f"ingest throughput ({data.points:,} points, median of {args.repeats})")
    table.add_column("measurement")
    table.add_column("points", justify="right")
    table.add_column("seconds (median)", justify="right")
    table.add_column("min-max", justify="right")
    table.add_column("points/s", justify="right")
    table.add_column("ratio vs raw fetch", justify="right")
    for name, m in results.items():
        table.add_row(
            m.label,
            f"{m.points:,}",
            f"{m.median:.3f}",
            f"{min(m.seconds):.3f}-{max(m.seconds):.3f}",
            f"{m.points_per_second:,.0f}",
            f"{ratios[f'{name}/raw_fetch']:.2f}x",
        )
    console.print(table)
    export_table = Table(
        title=f"export of {len(samples):,} prediction samples ({args.series} series)"
    )
    export_table.add_column("measurement")
    export_table.add_column("seconds (median)", justify="right")
    export_table.add_column("min-max", justify="right")
    export_table.add_column("samples/s", justify="right")
    export_table.add_column("ratio vs /metrics", justify="right")
    for m in export.values():
        export_table.add_row(
            m.label,
            f"{m.median:.3f}",
            f"{min(m.seconds):.3f}-{max(m.seconds):.3f}",
            f"{m.points_per_second:,.0f}",
            f"{m.points_per_second / export['render'].points_per_second:.2f}x",
        )
    console.print(export_table)
    rr_backfill = ratios["remote_read_backfill/prognos_pull"]
    console.print(
        f"remote read into the Parquet cache vs query_range pull: {rr_backfill:.2f}x "
        f"(target >= 2x: {'met' if rr_backfill >= 2 else 'NOT met'}); remote-read pull vs "
        f"query_range pull: {ratios['remote_read_pull/prognos_pull']:.2f}x"
    )
    for db in databases:
        e2e = pps[f"ingest_target_remote_read_{db.kind}"]
        console.print(
            f"end to end into the samples table ({db.kind}, remote read): {e2e:,.0f} points/s "
            f"(target >= 1,000,000 on a quiet machine); query_range: "
            f"{pps[f'ingest_target_query_range_{db.kind}']:,.0f}"
        )
    console.print(
        f"prognos pull: JSON parse {statistics.median(parse_seconds):.3f}s = "
        f"{parse_share:.1%} of the pull; HTTP + server + merge = {1 - parse_share:.1%}; "
        f"vs prometheus-api-client {ratios['prognos_pull/api_client']:.2f}x; with gzip "
        f"{ratios['prognos_pull_gzip/prognos_pull']:.2f}x; setup {setup_seconds:.1f}s "
        "(not in any throughput)"
    )
    for text in profiles:
        console.print(text, markup=False, highlight=False)

    report = {
        "config": {
            "series": args.series,
            "hours": args.hours,
            "step": step,
            "repeats": args.repeats,
            "seed": args.seed,
            "points": data.points,
            "points_per_series": int(data.timestamps.shape[0]),
            "services": SERVICES,
            "metric": METRIC,
            "window": {"start": window.start, "end": window.end, "step": window.step},
            "requests_per_fetch": len(chunks),
            "max_points_per_chunk": MAX_POINTS_PER_CHUNK,
            "databases": [db.kind for db in databases],
            "compaction_wait_seconds": compaction_wait,
            "prometheus_compactions_during_timings": (
                None
                if compactions_before is None or compactions_after is None
                else compactions_after - compactions_before
            ),
            "export_samples": len(samples),
        },
        "generate_seconds": generate_seconds,
        "setup_seconds": setup_seconds,
        "results": {name: m.to_json() for name, m in results.items()},
        "export": {name: m.to_json() for name, m in export.items()},
        "ratios": ratios,
        "export_ratios": export_ratios,
        "parse_share": parse_share,
        "parse": {
            "seconds_median": statistics.median(parse_seconds),
            "seconds_all": parse_seconds,
            "shares_all": parse_shares,
            "http_server_merge_share": 1 - parse_share,
        },
        "correct": not failures,
        "failures": failures,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "sqlite": sqlite3.sqlite_version,
            "prometheus": prometheus_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    if failures:
        console.print("[red bold]CORRECTNESS FAILURE[/]:")
        for failure in failures:
            console.print(f"  - {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
