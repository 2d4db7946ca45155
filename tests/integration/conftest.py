"""Generated metric history, served by a real Prometheus, for the ingest integration tests.

Everything here is generated from a fixed seed (numpy), never read from outside the repository.
One session-wide Prometheus serves the whole history, so it starts once; tests that stop
Prometheus start their own server from the same data.

Timeline (UTC epoch seconds, 60 s steps, every sample on the step grid):

    DAY0 = 2025-01-13T00:00Z ........ HIST_END = 2025-01-15T09:00Z ... NOW = 2025-01-15T12:00Z

Also the Ray clusters of the `engine: ray` tests (marker `ray`), one per test module: a process
joins one Ray cluster at a time, so each is shut down when its module is done, whichever runs
first, and the other module starts its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from core.database import create_engine, migrate, session_factory
from core.settings import PrometheusSettings, TargetSettings
from ingest.prometheus import PrometheusSource
from ingest.service import read_samples
from ingest.tables import SeriesRow
from tests.conftest import need_server
from tests.support.servers import (
    MetricSeries,
    PostgresServer,
    PrometheusServer,
    ServerMissing,
    start_prometheus,
)

STEP = 60
DAY = 86_400
DAY0 = 1_736_726_400  # 2025-01-13T00:00:00Z
HIST_START = DAY0
HIST_END = DAY0 + 2 * DAY + 9 * 3600  # the last generated sample
NOW = DAY0 + 2 * DAY + 12 * 3600  # "now" for backfills: the history ended three hours ago
LOOKBACK_DELTA = 300  # Prometheus' default query.lookback-delta (5 min)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds of `day` days after DAY0 at hh:mm:ss UTC."""
    return DAY0 + day * DAY + hour * 3600 + minute * 60 + second


def when(epoch: int) -> datetime:
    return from_epoch(epoch)


# queue_depth: one series throughout, one that appears late, one that disappears early.
QUEUE_LATE_START = at(1, 11, 17)
QUEUE_EARLY_END = at(1, 12, 43)
# gappy: samples missing in these inclusive ranges (one shorter, one longer than 5 minutes).
GAP_SHORT = (at(0, 4, 10), at(0, 4, 12))
GAP_LONG = (at(0, 5, 1), at(0, 5, 24))

Point = tuple[int, float]
LabelKey = frozenset[tuple[str, str]]


def labelset(series: MetricSeries) -> dict[str, str]:
    """The label set Prometheus returns for a plain selector: the metric name plus the labels."""
    return {"__name__": series.name, **series.labels}


def label_key(labels: dict[str, str]) -> LabelKey:
    return frozenset(labels.items())


@dataclass(frozen=True)
class History:
    series: list[MetricSeries]

    def metric(self, name: str) -> list[MetricSeries]:
        found = [s for s in self.series if s.name == name]
        assert found, name
        return found

    def find(self, name: str, **labels: str) -> MetricSeries:
        matches = [
            s
            for s in self.series
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(matches) == 1, (name, labels)
        return matches[0]


def points(series: MetricSeries, start: int, end: int) -> list[Point]:
    """The generated samples of `series` with start <= ts <= end."""
    keep = (series.timestamps >= start) & (series.timestamps <= end)
    return list(
        zip(
            series.timestamps[keep].astype(int).tolist(),
            series.values[keep].astype(float).tolist(),
            strict=True,
        )
    )


def expected_by_labels(
    series: Iterable[MetricSeries], start: int, end: int
) -> dict[LabelKey, list[Point]]:
    """Generated samples per label set; series without a sample in [start, end] are left out."""
    out = {label_key(labelset(s)): points(s, start, end) for s in series}
    return {k: v for k, v in out.items() if v}


def generate_history() -> History:
    rng = np.random.default_rng(20250113)
    grid = np.arange(HIST_START, HIST_END + STEP, STEP, dtype=np.int64)
    phase = (grid - DAY0) / DAY * 2 * np.pi

    def wave(base: float, amplitude: float, noise: float) -> np.ndarray:
        shift = rng.uniform(0, 2 * np.pi)
        return base + amplitude * np.sin(phase + shift) + rng.normal(0.0, noise, grid.size)

    def make(
        name: str, labels: dict[str, str], values: np.ndarray, keep: Any = None
    ) -> MetricSeries:
        mask = np.ones(grid.size, dtype=bool) if keep is None else keep
        return MetricSeries(name, labels, grid[mask], values[mask])

    def outside(*ranges: tuple[int, int]) -> np.ndarray:
        mask = np.ones(grid.size, dtype=bool)
        for first, last in ranges:
            mask &= (grid < first) | (grid > last)
        return mask

    series = [
        # Values of very different magnitudes and signs, none of them round.
        make(
            "app_metric",
            {"service": "checkout", "instance": "a", "route": "/pay"},
            wave(0.2134, 0.05, 0.01),
        ),
        make(
            "app_metric",
            {"service": "checkout", "instance": "b", "route": "/cart"},
            wave(17.3, 4.1, 0.9),
        ),
        make(
            "app_metric",
            {"service": "search", "instance": "a", "route": "/q"},
            wave(3.2e9, 2.5e8, 1.1e6),
        ),
        make(
            "app_metric",
            {"service": "api", "instance": "c", "route": "/"},
            wave(-1.7e-5, 3e-6, 4e-7),
        ),
        make("queue_depth", {"service": "orders", "queue": "q1"}, wave(42.5, 7.5, 1.3)),
        make(
            "queue_depth",
            {"service": "billing", "queue": "q2"},
            wave(8.25, 2.0, 0.7),
            grid >= QUEUE_LATE_START,
        ),
        make(
            "queue_depth",
            {"service": "mailer", "queue": "q3"},
            wave(113.0, 20.0, 3.3),
            grid <= QUEUE_EARLY_END,
        ),
        make(
            "gappy",
            {"service": "payments", "shard": "7"},
            wave(0.731, 0.12, 0.02),
            outside(GAP_SHORT, GAP_LONG),
        ),
    ]
    return History(series)


def launch_prometheus(workdir: Path, series: list[MetricSeries]) -> PrometheusServer:
    """Backfill and start a Prometheus; skip locally (fail in CI) when it is not installed."""
    try:
        return start_prometheus(workdir, series)
    except ServerMissing as exc:
        need_server(exc)
        raise


@pytest.fixture(scope="session")
def history() -> History:
    return generate_history()


@pytest.fixture(scope="session")
def prometheus(
    history: History, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """The shared Prometheus with the whole history. Never stop it in a test."""
    server = launch_prometheus(tmp_path_factory.mktemp("prometheus"), history.series)
    yield server
    server.stop()


def make_source(server: PrometheusServer, **overrides: Any) -> PrometheusSource:
    """A source with quick failure settings: one retry, no backoff, short timeout."""
    options: dict[str, Any] = {
        "url": server.url,
        "timeout": timedelta(seconds=10),
        "retries": 1,
        "backoff": 0,
    }
    options.update(overrides)
    return PrometheusSource(PrometheusSettings(**options))


def make_target(name: str, query: str, lookback: str = "1h") -> TargetSettings:
    return TargetSettings(name=name, query=query, step="60s", lookback=lookback)


def stored(sessions: sessionmaker[Session], target: str) -> dict[LabelKey, list[Point]]:
    """Everything the database holds for a target, per label set."""
    with sessions() as session:
        rows = session.scalars(sa.select(SeriesRow).where(SeriesRow.target == target)).all()
        return {label_key(row.labels): read_samples(session, series_id=row.id) for row in rows}


def assert_no_duplicates_or_holes(samples: list[Point], start: int, end: int) -> None:
    """Every step in [start, end] exactly once (for series that have a sample at every step)."""
    timestamps = [ts for ts, _ in samples]
    assert timestamps == list(range(start, end + STEP, STEP)), (
        f"expected every step from {start} to {end} once; got {len(timestamps)} points, "
        f"duplicates={len(timestamps) - len(set(timestamps))}, "
        f"missing={sorted(set(range(start, end + STEP, STEP)) - set(timestamps))[:10]}"
    )


def import_ray() -> Any:
    """Ray, imported with the loopback environment (no usage statistics, loopback only), and
    no cluster joined yet: one a module before this one left is shut down."""
    from prognos.engine import LOOPBACK_RAY_ENV

    for name, value in LOOPBACK_RAY_ENV.items():
        os.environ[name] = value
    try:
        import ray
    except ImportError:
        need_server(ServerMissing("ray is not installed (the `ray` extra)"))
    if ray.is_initialized():
        ray.shutdown()
    return ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A local single-node Ray cluster of 2 CPUs on loopback, for the test module."""
    ray = import_ray()
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_nodes() -> Iterator[Any]:
    """A multi-node Ray cluster on this machine, for the test module: a head node of 2 CPUs
    (this process joins it; a test adds and removes other nodes, each its own raylet)."""
    ray = import_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    try:
        head = cluster.head_node
        assert head is not None and head.node_ip_address == "127.0.0.1"  # Ray after its env
        ray.init(address=cluster.address, logging_level="ERROR")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # removes its nodes only


@pytest.fixture
def databases(
    postgres_server: PostgresServer, tmp_path: Path
) -> Iterator[Callable[[str], tuple[str, sessionmaker[Session]]]]:
    """Fresh migrated PostgreSQL databases, each with the same active (untrained) LSTM."""
    from tests.support.fleet import activate_untrained_lstm

    made: list[tuple[str, Any]] = []

    def make(name: str) -> tuple[str, sessionmaker[Session]]:
        db = f"ray_{name}_{os.getpid()}_{len(made)}"
        url = postgres_server.create_database(db)
        engine = create_engine(url)
        migrate(engine)
        made.append((db, engine))
        sessions = session_factory(engine)
        activate_untrained_lstm(sessions, tmp_path / f"model-{db}")
        return url, sessions

    yield make
    for db, engine in made:
        engine.dispose()
        postgres_server.drop_database(db)
