"""An OpenTelemetry SDK exports real spans over OTLP/HTTP to a running `prognos serve`; the
incident opened for the symptom names the injected culprit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from core.database import create_engine, session_factory
from core.settings import RcaSettings
from ingest.span_store import span_count
from rca.incidents import group_alarms
from tests.e2e.test_processes import _cli, _env, _start, _stop, _token, _wait, started  # noqa: F401
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(120)
MS = 1_000_000


class Alarm:
    def __init__(self, series_id: int, service: str, ts: int, score: float) -> None:
        self.series_id, self.service, self.ts, self.score = series_id, service, ts, score


def export(url: str, token: str, now: datetime) -> int:
    """frontend -> checkout -> payment, 40 minutes of requests; payment slows 5 minutes ago."""
    providers = {}
    for service in ("frontend", "checkout", "payment"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"}
        )
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256))
        providers[service] = provider
    tracers = {s: p.get_tracer("shop") for s, p in providers.items()}
    onset = now - timedelta(minutes=5)
    start = now - timedelta(minutes=40)
    count = 0
    t = int(start.timestamp() * 1e9)
    end = int(now.timestamp() * 1e9)
    step = (end - t) // 600
    for i in range(600):
        t0 = t + i * step
        slow = t0 >= int(onset.timestamp() * 1e9)
        pay_self = (40 if slow else 4) * MS + (i % 7) * MS // 10
        root = tracers["frontend"].start_span("GET /checkout", start_time=t0)
        ctx = trace.set_span_in_context(root)
        call = tracers["frontend"].start_span("call checkout", context=ctx, start_time=t0 + MS)
        server = tracers["checkout"].start_span(
            "PlaceOrder", context=trace.set_span_in_context(call), start_time=t0 + 2 * MS
        )
        charge = tracers["checkout"].start_span(
            "call payment", context=trace.set_span_in_context(server), start_time=t0 + 3 * MS
        )
        payment = tracers["payment"].start_span(
            "Charge", context=trace.set_span_in_context(charge), start_time=t0 + 4 * MS
        )
        payment.end(end_time=t0 + 4 * MS + pay_self)
        charge.end(end_time=t0 + 5 * MS + pay_self)
        server.end(end_time=t0 + 7 * MS + pay_self)
        call.end(end_time=t0 + 8 * MS + pay_self)
        root.end(end_time=t0 + 10 * MS + pay_self)
        count += 5
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()
    return count


def test_sdk_spans_reach_the_store_and_the_incident_names_the_culprit(
    tmp_path: Path,
    started: list,  # noqa: F811
) -> None:
    db = f"sqlite:///{tmp_path / 'var' / 'prognos.db'}"
    env = _env(db)
    port = free_port()
    proc = _start(_cli("serve", "--port", str(port)), tmp_path, env, started)
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/readyz")
    token = _token(tmp_path, env, role="ingest")
    now = datetime.now(UTC)
    sent = export(base, token, now)

    engine = create_engine(db)
    sessions = session_factory(engine)
    with sessions() as session:
        assert span_count(session) == sent
        symptom = Alarm(1, "frontend", int((now - timedelta(minutes=1)).timestamp()), 6.0)
        result = group_alarms(session, [symptom], now=now, settings=RcaSettings())
        session.commit()
    (incident_id,) = result.opened
    viewer = _token(tmp_path, env)
    shown = requests.get(
        f"{base}/v1/incidents/{incident_id}",
        headers={"Authorization": f"Bearer {viewer}"},
        timeout=10,
    ).json()
    assert shown["top_suspect"] == "payment", shown["report"]["suspects"][:3]
    top = shown["report"]["suspects"][0]
    assert top["operation"] == "Charge"
    assert top["path"] == ["frontend", "checkout", "payment"]
    engine.dispose()
    _stop(proc)
