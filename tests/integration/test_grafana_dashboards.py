"""Every query of the Grafana dashboards (deploy/grafana) returns data from a real Prometheus
that scraped a running Prognos.

The loop is the deployed one: Prometheus holds the actual series (three hours, backfilled with
promtool); Prognos reads them from it, trains a model version, runs the daemon's cycle (a breach
warning opens an incident), takes OTLP exports and serves /metrics on loopback; Prometheus
restarts with deploy/prometheus/prometheus.yml's scrape job pointed at it. A finished execution
and a Vault check are written as the executor and the daemon record them. Queries
with `offset` or `rate()` need Prognos' own history too: the first /metrics render is backfilled
over those three hours (counters rising to their value, timestamps moving with time). Then each
panel target and annotation, its variables resolved from the server as Grafana would, is asked
for the last two hours and must return a series with a number in it; a failure names the panel.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import sqlalchemy as sa
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import Role, create_token
from core.clock import FixedClock, from_epoch
from core.database import create_engine, migrate, session_factory, session_scope
from core.settings import BreachSettings, PrometheusSettings, Settings, TargetSettings
from ingest.prometheus import PrometheusSource
from prognos.context import ServiceContext
from prognos.jobs import cycle, retrain
from rca.tables import IncidentRow
from remediation.selfchecks import VaultStatus, record_vault
from remediation.tables import ExecutionRow
from sim.lifecycle import free_port
from tests.conftest import need_server
from tests.support.grafana import (
    Query,
    dashboard_files,
    label_values,
    load,
    queries,
    resolve,
    variables,
)
from tests.support.servers import (
    MetricSeries,
    PrometheusServer,
    ServerMissing,
    backfill,
    start_prometheus,
)
from tests.unit.rows import proposal_row

pytestmark = pytest.mark.timeout(120)

STEP = 60
HISTORY = 3 * 3600
WINDOW = 2 * 3600  #: what each query asks for: the last two hours
SCRAPE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
MEMORY = 'sum by (service, pod) (container_memory_working_set_bytes{container!=""})'
CPU = 'sum by (service, pod) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))'
PODS = (("cart", "cart-0"), ("checkout", "checkout-0"), ("checkout", "checkout-1"))
#: a counter rises to its scraped value over the history; a timestamp moves with time
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def actual_history(now: int) -> list[MetricSeries]:
    """The shop's container metrics: memory (cart's leaking) and CPU seconds, one per minute."""
    rng = np.random.default_rng(13)
    grid = np.arange(now - HISTORY, now, STEP, dtype=np.int64)
    phase = (grid - grid[0]) / HISTORY
    out = []
    for i, (service, pod) in enumerate(PODS):
        labels = {"container": "app", "service": service, "pod": pod}
        memory = 2.0e8 + 1.5e7 * i + rng.normal(0, 2e6, grid.size)
        if service == "cart":
            memory += 3.0e8 * phase  # the leak
        cpu = np.cumsum(0.2 + 0.05 * i + np.abs(rng.normal(0, 0.02, grid.size))) * STEP
        out.append(MetricSeries("container_memory_working_set_bytes", labels, grid, memory))
        out.append(MetricSeries("container_cpu_usage_seconds_total", labels, grid, cpu))
    return out


def own_history(text: str, now: int, labels: dict[str, str]) -> list[MetricSeries]:
    """Prognos' /metrics as if it had been scraped every minute of the history."""
    grid = np.arange(now - HISTORY, now - STEP, STEP, dtype=np.int64)
    rising = np.arange(1, grid.size + 1) / (grid.size + 1)
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values: np.ndarray
            if sample.name.endswith(COUNTER_SUFFIXES):
                values = sample.value * rising
            elif sample.name.endswith("_timestamp_seconds"):
                values = sample.value - (now - grid)
            else:
                values = np.full(grid.size, sample.value)
            out.append(MetricSeries(sample.name, {**sample.labels, **labels}, grid, values))
    return out


def scrape_config(port: int) -> str:
    """deploy/prometheus/prometheus.yml's prognos job, on the test's port, every second."""
    shipped = yaml.safe_load(SCRAPE.read_text())
    (job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "prognos"]
    job = {**job, "scrape_interval": "1s", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    return yaml.safe_dump({"global": {"scrape_interval": "1h"}, "scrape_configs": [job]})


@dataclass
class Loop:
    prometheus: PrometheusServer
    now: int

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.prometheus.url}{path}", params=params, timeout=30)
        body = response.json()
        assert body["status"] == "success", f"{params}: {body.get('error')}"
        return body["data"]

    def range(self, expr: str) -> list[dict[str, Any]]:
        end = time.time()
        data = self.get("/api/v1/query_range", query=expr, start=end - WINDOW, end=end, step=STEP)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextmanager
def serve(context: ServiceContext, port: int) -> Iterator[str]:
    """The API on loopback in a thread, as `prognos serve` runs it."""
    config = uvicorn.Config(
        create_app(context), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    now = int(time.time()) // STEP * STEP
    workdir = tmp_path_factory.mktemp("grafana")
    try:
        prometheus = start_prometheus(workdir / "prometheus", actual_history(now))
    except ServerMissing as exc:
        need_server(exc)
        raise
    engine = create_engine(f"sqlite:///{workdir / 'prognos.db'}")
    try:
        migrate(engine)
        leak = BreachSettings(threshold=3.5e8, direction="above", consecutive=1)
        window = {"step": timedelta(seconds=STEP), "lookback": timedelta(seconds=HISTORY)}
        source = PrometheusSource(PrometheusSettings(url=prometheus.url))
        context = ServiceContext(
            settings=Settings(
                data_dir=workdir / "var",
                # a quick forecaster to train, so that a model version serves
                models={
                    "forecaster": "median_band",
                    "config": {"context_length": 120, "horizon": 30},
                    "history": timedelta(seconds=HISTORY),
                },
            ),
            engine=engine,
            sessions=session_factory(engine),
            source=source,
            targets=[
                TargetSettings(name="memory", query=MEMORY, breach=leak, **window),
                TargetSettings(name="cpu", query=CPU, **window),
            ],
            clock=FixedClock(from_epoch(now)),
            playbooks={},
        )
        assert [o.promoted for o in retrain(context)] == [True]
        cycle(context)  # the daemon's: ingest, forecast, incidents, ..., self checks
        with session_scope(context.sessions) as session:  # cart's breach warning opened one
            assert session.scalar(sa.select(sa.func.count()).select_from(IncidentRow)) == 1
        source.close()
        _remediated(context)
        port = free_port()
        with serve(context, port) as base:
            _export_spans(context, base)
            text = requests.get(f"{base}/metrics", timeout=10).text
            prometheus.stop()
            backfill(prometheus.data_dir, own_history(text, now, {"job": "prognos"}))
            prometheus.config = scrape_config(port)
            prometheus.start()
            loop = Loop(prometheus, now)
            _wait_for_scrapes(loop)
            yield loop
    finally:
        prometheus.stop()
        engine.dispose()


def _remediated(context: ServiceContext) -> None:
    """What an approved playbook run leaves (a proposal and its finished execution), and a
    Vault check as the daemon records it: no executor or Vault runs here."""
    at = context.clock.now()
    with session_scope(context.sessions) as session:
        proposal = proposal_row({}, at=at - timedelta(minutes=20))
        session.add(proposal)
        session.flush()
        session.add(
            ExecutionRow(
                proposal_id=proposal.id,
                playbook=proposal.playbook,
                target=proposal.target,
                status="succeeded",
                dry_run=False,
                created_at=at - timedelta(minutes=10),
                started_at=at - timedelta(minutes=10),
                finished_at=at - timedelta(minutes=9),
                vault_lease_ids=[],
            )
        )
        record_vault(session, VaultStatus(ok=True, ttl=3600.0), now=at)
        session.commit()


def _export_spans(context: ServiceContext, base: str) -> None:
    """Two OTLP exports: one with a span stored and one refused in it, one with a bad token."""
    with session_scope(context.sessions) as session:
        _, token = create_token(session, role=Role.INGEST, name="otlp", now=context.clock.now())
        session.commit()
    start = (context.clock.now() - timedelta(minutes=1)).timestamp()
    spans = [
        {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "GET /cart",
            "startTimeUnixNano": str(int(start) * 10**9),
            "endTimeUnixNano": str(int(start) * 10**9 + 5_000_000),
        },
        {"traceId": "zz", "spanId": "00", "name": "no ids"},
    ]
    service = {"key": "service.name", "value": {"stringValue": "cart"}}
    body = {
        "resourceSpans": [{"resource": {"attributes": [service]}, "scopeSpans": [{"spans": spans}]}]
    }
    for bearer, status in ((token, 200), ("pgn_not_a_token", 401)):
        response = requests.post(
            f"{base}/v1/traces",
            json=body,
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert response.status_code == status, response.text


def _wait_for_scrapes(loop: Loop, scrapes: int = 3) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = loop.get("/api/v1/query", query='count_over_time(up{job="prognos"}[1m])')
        if found["result"] and float(found["result"][0]["value"][1]) >= scrapes:
            return
        time.sleep(0.5)
    pytest.fail("Prometheus did not scrape Prognos")


def _variable_values(loop: Loop, board: dict[str, Any]) -> dict[str, list[str]]:
    """Each query variable's values as Grafana gets them (label values over the time range),
    in order, so that chained variables see the ones before them."""
    values: dict[str, list[str]] = {}
    for name, variable in variables(board).items():
        if variable["type"] in ("custom", "textbox"):
            values[name] = [str(variable["current"]["value"])]
        if variable["type"] != "query":
            continue
        selector, label = label_values(variable["definition"])
        expr = resolve(board, Query(board["title"], name, selector, None, None), values)
        end = time.time()
        found = loop.get(
            f"/api/v1/label/{label}/values", **{"match[]": expr}, start=end - WINDOW, end=end
        )
        assert found, f"{board['title']}: variable {name} has no values ({expr})"
        values[name] = sorted(found)
    return values


def _boards() -> list[dict[str, Any]]:
    return [load(path) for path in dashboard_files()]


@pytest.mark.parametrize("board", _boards(), ids=lambda b: b["uid"])
def test_every_panel_and_annotation_returns_data(loop: Loop, board: dict[str, Any]) -> None:
    values = _variable_values(loop, board)
    failures = []
    for query in queries(board):
        expr = resolve(board, query, values)
        # A stat's `... or vector(0)` always answers: its own part must answer too.
        parts = [expr, expr.removesuffix(" or vector(0)")]
        for part in dict.fromkeys(parts):
            result = loop.range(part)
            numbers = [
                float(v)
                for series in result
                for _, v in series["values"]
                if math.isfinite(float(v))
            ]
            if not numbers:
                failures.append(f"{query}: no data for {part}")
    assert not failures, "\n".join(failures)


def test_the_band_overlays_the_actual_series(loop: Loop) -> None:
    """The forecast made 15 minutes earlier (backfilled history) is there for the same series
    as the actual one: the band panel joins them on their labels."""
    (board,) = [b for b in _boards() if b["uid"] == "prognos-forecasts"]
    values = _variable_values(loop, board)
    assert values["target"] == ["cpu", "memory"]
    assert values["service"] == ["cart", "checkout"]
    band = [q for q in queries(board) if q.repeat == "service"]
    labels = []
    for query in band:
        result = loop.range(resolve(board, query, values))
        labels.append(
            {
                frozenset((k, v) for k, v in s["metric"].items() if k in ("service", "pod"))
                for s in result
            }
        )
    assert labels[0] == {frozenset({("service", "cart"), ("pod", "cart-0")})}
    assert all(found == labels[0] for found in labels), labels
