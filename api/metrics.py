"""/metrics: the service's own state, read from the database at scrape time.

Reading the database (not in-process counters) keeps the numbers right when the API and the
scheduler run as separate processes, or as several replicas.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from api.context import ServiceContext
from ingest.tables import IngestRunRow, SeriesRow, WatermarkRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StateCollector(Collector):
    def __init__(self, context: ServiceContext, version: str) -> None:
        self.context = context
        self.version = version

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        info = InfoMetricFamily("prognos_build", "Prognos version and source kind")
        info.add_metric([], {"version": self.version, "source": self.context.source.kind})
        yield info
        series = GaugeMetricFamily("prognos_series", "Series known per target", labels=["target"])
        watermark = GaugeMetricFamily(
            "prognos_ingest_watermark_timestamp_seconds",
            "Newest step stored per target",
            labels=["target"],
        )
        points = CounterMetricFamily(
            "prognos_ingest_points", "Points stored by ingest cycles", labels=["target"]
        )
        runs = CounterMetricFamily(
            "prognos_ingest_runs", "Ingest cycles by outcome", labels=["target", "status"]
        )
        last_ok = GaugeMetricFamily(
            "prognos_ingest_last_success_timestamp_seconds",
            "When the last successful cycle ran",
            labels=["target"],
        )
        with self.context.sessions() as session:
            for target, count in session.execute(
                sa.select(SeriesRow.target, sa.func.count()).group_by(SeriesRow.target)
            ):
                series.add_metric([target], count)
            for row in session.scalars(sa.select(WatermarkRow)):
                watermark.add_metric([row.target], row.watermark)
            for target, status, count, total, newest in session.execute(
                sa.select(
                    IngestRunRow.target,
                    IngestRunRow.status,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(IngestRunRow.points), 0),
                    sa.func.max(IngestRunRow.finished_at),
                ).group_by(IngestRunRow.target, IngestRunRow.status)
            ):
                runs.add_metric([target, status], count)
                if status == "ok":
                    points.add_metric([target], total)
                    if newest is not None:
                        last_ok.add_metric([target], _epoch(newest))
        yield from (series, watermark, points, runs, last_ok)


def _epoch(value: object) -> float:
    from core.clock import ensure_utc

    if isinstance(value, str):  # SQLite aggregates come back as text
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return ensure_utc(value).timestamp()  # type: ignore[arg-type]


def build_registry(context: ServiceContext, version: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(context, version))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
