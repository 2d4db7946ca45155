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
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy.orm import Session

from api.context import AppContext
from core.leadership import current_leader
from core.selfmetrics import service as selfmetrics
from ingest.tables import IngestRunRow, IngestRunTotalRow, SeriesRow, WatermarkRow
from models.tables import BreachRow, DetectorStateRow, ForecastRow, ModelRow
from rca.tables import IncidentRow
from remediation.domain import ExecutionStatus, ProposalStatus
from remediation.selfchecks import AUDIT_CHECK, INCIDENTS_OPENED, VAULT_CHECK
from remediation.tables import ExecutionRow, ProposalRow

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
        with self.context.sessions() as session:
            yield from _cycle(session)
            yield from _models(session)
            yield from _remediation(session)
            yield from _intake_and_checks(session)

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
INCIDENT_STATES = ("open", "closed")


def _cycle(session: Session) -> Iterator[Metric]:
    """The daemon's cycle stages: duration histograms, last success, failures."""
    durations = HistogramMetricFamily(
        "prognos_cycle_duration_seconds",
        "Seconds each run of a daemon cycle stage took (stage=cycle: the whole cycle)",
        labels=["stage"],
    )
    last_ok = GaugeMetricFamily(
        "prognos_cycle_last_success_timestamp_seconds",
        "When the stage last finished without error (0: it ran but never succeeded)",
        labels=["stage"],
    )
    failures = CounterMetricFamily(
        "prognos_cycle_failures", "Runs of the stage that raised", labels=["stage"]
    )
    for stats in selfmetrics.stage_stats(session):
        buckets = [(floatToGoString(le), float(n)) for le, n in stats.buckets]
        durations.add_metric(
            [stats.stage], [*buckets, ("+Inf", float(stats.runs))], sum_value=stats.seconds
        )
        done = stats.last_success_at
        last_ok.add_metric([stats.stage], _epoch(done) if done is not None else 0.0)
        failures.add_metric([stats.stage], stats.failures)
    yield from (durations, last_ok, failures)
    leader = current_leader(session)
    if leader is not None:  # nobody has led yet, or the last leader let go cleanly
        who = GaugeMetricFamily(
            "prognos_daemon_leader",
            "1 for the daemon that holds (or last held) the lead to run the cycle",
            labels=["host", "pid"],
        )
        who.add_metric([leader.host, str(leader.pid)], 1.0)
        checked = GaugeMetricFamily(
            "prognos_daemon_leader_checked_timestamp_seconds",
            "When the leading daemon last confirmed its lock (old: nobody confirms the lead)",
        )
        checked.add_metric([], _epoch(leader.checked_at))
        yield from (who, checked)


def _models(session: Session) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "prognos_model_info",
        "1 for the active model version of each family",
        labels=["family", "version", "forecaster"],
    )
    trained = GaugeMetricFamily(
        "prognos_model_trained_timestamp_seconds",
        "When the active model of the family was trained",
        labels=["family"],
    )
    for row in session.scalars(
        sa.select(ModelRow).where(ModelRow.status == "active").order_by(ModelRow.family)
    ):
        info.add_metric([row.family, str(row.version), row.forecaster], 1)
        trained.add_metric([row.family], _epoch(row.created_at))
    yield from (info, trained)


def _remediation(session: Session) -> Iterator[Metric]:
    """Incidents, proposals and executions by state now, and the counters of new ones."""
    for name, help_text, column, states in (
        ("prognos_incidents", "Incidents stored now by state", IncidentRow.status, INCIDENT_STATES),
        ("prognos_proposals", "Remediation proposals by state", ProposalRow.status, ProposalStatus),
        ("prognos_executions", "Executions by state", ExecutionRow.status, ExecutionStatus),
    ):
        counts = dict.fromkeys(map(str, states), 0)
        counts.update(session.execute(sa.select(column, sa.func.count()).group_by(column)).all())
        family = GaugeMetricFamily(name, help_text, labels=["state"])
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family
    newest = session.scalar(sa.select(sa.func.max(IncidentRow.id))) or 0
    opened = CounterMetricFamily(
        "prognos_incidents_opened", "Incidents ever opened (the highest incident id)"
    )
    opened.add_metric([], max(int(newest), selfmetrics.high_water(session, INCIDENTS_OPENED)))
    started = CounterMetricFamily(
        "prognos_executions_started", "Executions that ever started running"
    )
    started.add_metric(
        [],
        session.scalar(sa.select(sa.func.count()).where(ExecutionRow.started_at.is_not(None))) or 0,
    )
    yield from (opened, started)


def _intake_and_checks(session: Session) -> Iterator[Metric]:
    """OTLP intake totals; the newest audit chain verification and Vault check."""
    requests = CounterMetricFamily(
        "prognos_otlp_requests", "POST /v1/traces requests by outcome", labels=["outcome"]
    )
    spans = CounterMetricFamily(
        "prognos_otlp_spans",
        "Spans stored (accepted) and spans an accepted export carried that were rejected",
        labels=["outcome"],
    )
    for outcome, (count, total) in selfmetrics.otlp_totals(session).items():
        requests.add_metric([outcome], count)
        spans.add_metric([outcome], total)
    yield from (requests, spans)
    found = selfmetrics.checks(session)
    audit = found.get(AUDIT_CHECK)
    if audit is not None:
        yield GaugeMetricFamily(
            "prognos_audit_chain_ok",
            "1 if the newest verification found the audit chain intact, 0 if broken",
            value=float(audit.ok),
        )
        yield GaugeMetricFamily(
            "prognos_audit_verified_timestamp_seconds",
            "When the audit chain was last verified",
            value=_epoch(audit.checked_at),
        )
    vault = found.get(VAULT_CHECK)
    if vault is not None:
        yield GaugeMetricFamily(
            "prognos_vault_up",
            "1 if Vault answered unsealed and the service token could be looked up",
            value=float(vault.ok),
        )
        if vault.value is not None:
            yield GaugeMetricFamily(
                "prognos_vault_token_ttl_seconds",
                "Seconds left on the service's own Vault token when last checked",
                value=vault.value,
            )


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
