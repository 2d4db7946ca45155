"""/metrics: the service's own state, read from the database at scrape time.

Reading the database (not in-process counters) keeps the numbers right when the API and the
scheduler run as separate processes, or as several replicas.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from api.context import AppContext
from ingest.tables import IngestRunRow, IngestRunTotalRow, SeriesRow, WatermarkRow
from models.tables import BreachRow, DetectorStateRow, ForecastRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StateCollector(Collector):
    def __init__(self, context: AppContext, version: str) -> None:
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
        counts: dict[tuple[str, str], tuple[int, int]] = {}  #: (target, status) -> runs, points
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
                counts[target, status] = (count, total)
                if status == "ok" and newest is not None:
                    last_ok.add_metric([target], _epoch(newest))
            # Runs pruned so far still count: the counters never go down.
            for done in session.scalars(sa.select(IngestRunTotalRow)):
                count, total = counts.get((done.target, done.status), (0, 0))
                counts[done.target, done.status] = (count + done.runs, total + done.points)
        for (target, status), (count, total) in sorted(counts.items()):
            runs.add_metric([target, status], count)
            if status == "ok":
                points.add_metric([target], total)
        yield from (series, watermark, points, runs, last_ok)
        yield from self._predictions()

    def _predictions(self) -> Iterator[Metric]:
        """Forecasts at 5/15/30 minutes ahead and the newest anomaly score of every series."""
        forecast = Metric("prognos_forecast", "Forecast quantiles per series and horizon", "gauge")
        score = Metric("prognos_anomaly_score", "Newest anomaly score (z-like)", "gauge")
        flag = Metric("prognos_anomaly", "1 if the detector alarmed on the newest step", "gauge")
        chance = Metric(
            "prognos_breach_probability",
            "P(the series crosses its configured limit within the forecast horizon)",
            "gauge",
        )
        eta = Metric(
            "prognos_breach_eta_seconds",
            "Seconds from the newest forecast to the predicted crossing, while a warning is on",
            "gauge",
        )
        with self.context.sessions() as session:
            rows = session.execute(
                sa.select(ForecastRow, SeriesRow).join(
                    SeriesRow, SeriesRow.id == ForecastRow.series_id
                )
            ).all()
            for f, s in rows:
                base = _labels(s)
                for label, seconds in _HORIZONS:
                    h = seconds // f.step
                    if seconds % f.step or not 1 <= h <= len(f.values):
                        continue
                    for q, value in zip(f.quantiles, f.values[h - 1], strict=True):
                        forecast.add_sample(
                            "prognos_forecast",
                            {**base, "prognos_quantile": f"{q:g}", "horizon": label},
                            value,
                        )
            # Each series' newest verdict is kept with its detector state: no grouping over
            # every stored score on each scrape.
            scored = session.execute(
                sa.select(DetectorStateRow.last_score, DetectorStateRow.last_alarm, SeriesRow).join(
                    SeriesRow, SeriesRow.id == DetectorStateRow.series_id
                )
            ).all()
            for latest, alarm, s in scored:
                if latest is None:
                    continue
                score.add_sample("prognos_anomaly_score", _labels(s), latest)
                flag.add_sample("prognos_anomaly", _labels(s), float(bool(alarm)))
            breach_rows = session.execute(
                sa.select(BreachRow, SeriesRow).join(SeriesRow, SeriesRow.id == BreachRow.series_id)
            ).all()
            for b, s in breach_rows:
                labels = {**_labels(s), "direction": b.direction}
                chance.add_sample("prognos_breach_probability", labels, b.probability)
                if b.warning and b.eta is not None:
                    eta.add_sample("prognos_breach_eta_seconds", labels, float(b.eta - b.made_at))
        yield from (forecast, score, flag, chance, eta)


_HORIZONS = (("5m", 300), ("15m", 900), ("30m", 1800))


def _labels(series: SeriesRow) -> dict[str, str]:
    """The series' own labels plus its target; internal names (`__name__`) are left out."""
    labels = {k: v for k, v in series.labels.items() if not k.startswith("__")}
    labels["target"] = series.target
    return labels


def _epoch(value: object) -> float:
    from core.clock import ensure_utc

    if isinstance(value, str):  # SQLite aggregates come back as text
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return ensure_utc(value).timestamp()  # type: ignore[arg-type]


def build_registry(context: AppContext, version: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(context, version))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
