"""Prometheus' own alerting rules, forecast: a real Prometheus loads a rule file; Prognos reads
`/api/v1/rules`, forecasts each supported rule's series from `query_range` of its series side
and lists on `GET /v1/rules/forecast` a warning before the rule fires, with the firing ETA that
its `for:` sets; when Prometheus goes away the last rules stay listed with the reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role, create_token
from core.clock import FixedClock, from_epoch, to_epoch
from core.settings import Settings
from ingest.prometheus import PrometheusSource
from prognos import jobs
from prognos.context import ServiceContext
from tests.conftest import need_server
from tests.support.servers import MetricSeries, PrometheusServer, ServerMissing, start_prometheus

pytestmark = pytest.mark.timeout(120)

STEP = 60
LIMIT = 9e8
RULES = """
groups:
  - name: shop
    interval: 1s
    rules:
      - alert: MemoryNearLimit
        expr: shop_memory_bytes > 9e8
        for: 2h
        labels: {severity: page}
      - alert: ErrorsHigh
        expr: 5 < rate(shop_errors_total[5m])
        for: 5m
      - alert: InstanceDown
        expr: up == 0
"""
NOW = int(time.time()) // STEP * STEP


def _series() -> list[MetricSeries]:
    ts = np.arange(NOW - 4 * 3600, NOW + 15 * 60, STEP)
    rng = np.random.default_rng(0)
    # cart-0 has been over the limit for three hours (the rule waits for its 2 h `for:`),
    # cart-1 stays far below it; errors grow by ~1 a second, a fifth of the rule's 5 a second.
    over = np.where(ts > NOW - 3 * 3600, 9.5e8, 4e8) + rng.normal(0, 2e6, len(ts))
    return [
        MetricSeries("shop_memory_bytes", {"service": "cart", "pod": "cart-0"}, ts, over),
        MetricSeries(
            "shop_memory_bytes",
            {"service": "cart", "pod": "cart-1"},
            ts,
            4e8 + rng.normal(0, 2e6, len(ts)),
        ),
        MetricSeries(
            "shop_errors_total", {"service": "cart"}, ts, np.cumsum(rng.uniform(50, 70, len(ts)))
        ),
    ]


def start_with_rules(workdir: Path) -> PrometheusServer:
    """Prometheus on the backfilled series with the rule file loaded, once its first
    evaluation has made the memory rule pending."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yml"
    rules.write_text(RULES, encoding="utf-8")
    config = f"global:\n  evaluation_interval: 1s\nrule_files: [{rules}]\nscrape_configs: []\n"
    server = start_prometheus(workdir, _series(), config=config)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        groups = requests.get(f"{server.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        if groups and groups[0]["rules"][0]["state"] == "pending":
            break
        time.sleep(0.5)
    return server


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    try:
        server = start_with_rules(tmp_path_factory.mktemp("prometheus"))
    except ServerMissing as exc:
        need_server(exc)
    yield server
    server.stop()


def test_prognos_warns_before_the_rule_fires(
    prometheus: PrometheusServer, engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(
        source="prometheus",
        data_dir=tmp_path,
        prometheus={"url": prometheus.url},
        rules={"enabled": True, "step": f"{STEP}s", "lookback": "3h"},
    )
    context = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        source=PrometheusSource(settings.prometheus),
        targets=[],
        clock=FixedClock(from_epoch(NOW - 5 * STEP)),
        playbooks={},
    )
    assert isinstance(context.clock, FixedClock)
    for _ in range(5):  # the warning needs four forecasts in a row
        jobs.refresh_rules(context)
        jobs.ingest_cycle(context)
        jobs.forecast_cycle(context)
        context.clock.advance(timedelta(seconds=STEP))
    assert {t.name for t in context.targets} == {
        "rule_shop_MemoryNearLimit",
        "rule_shop_ErrorsHigh",
    }
    with sessions() as session:
        _, token = create_token(session, role=Role.VIEWER, name="v", now=context.clock.now())
        session.commit()
    with TestClient(create_app(context)) as client:
        body = client.get("/v1/rules/forecast", headers={"Authorization": f"Bearer {token}"})
        assert body.status_code == 200, body.text
        memory, errors, down = body.json()["rules"]

        assert memory["supported"] and memory["warning"] and memory["for_seconds"] == 7200
        assert (memory["threshold"], memory["direction"]) == (LIMIT, "above")
        by_pod = {s["labels"]["pod"]: s for s in memory["series"]}
        hot, cold = by_pod["cart-0"], by_pod["cart-1"]
        assert hot["warning"] and hot["probability"] == 1.0 and hot["state"] == "pending"
        # Prometheus began evaluating at its start: the rule fires 2 h after that, not before.
        fires = datetime.fromisoformat(hot["firing_eta"])
        assert fires > datetime.now(UTC) + timedelta(minutes=110)
        assert memory["firing_eta"] == hot["firing_eta"]
        assert not cold["warning"] and cold["probability"] < 0.01 and cold["state"] == "inactive"

        assert errors["supported"] and errors["query"] == "rate(shop_errors_total{}[5m])"
        assert (errors["threshold"], errors["direction"]) == (5.0, "above")
        (rate,) = errors["series"]
        assert 0.8 < rate["value"] < 1.2 and not rate["warning"] and rate["firing_eta"] is None
        assert not down["supported"] and "equality" in down["reason"]

        # Prometheus goes away: the next read fails, the rules read before stay listed.
        prometheus.stop()
        context.clock.advance(settings.rules.refresh)
        again = client.get("/v1/rules/forecast", headers={"Authorization": f"Bearer {token}"})
        page = again.json()
        assert "unreachable" in page["error"]
        assert [r["name"] for r in page["rules"]] == [
            "MemoryNearLimit",
            "ErrorsHigh",
            "InstanceDown",
        ]
        assert to_epoch(datetime.fromisoformat(page["read_at"])) <= NOW
