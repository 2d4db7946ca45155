"""/metrics about Prognos itself: the daemon's cycle stages, models, incidents and
remediation, OTLP intake and the audit chain, all read back from the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import Role
from models.tables import ModelRow
from prognos import jobs
from prognos.context import ServiceContext
from rca.tables import IncidentRow
from remediation import audit
from remediation.tables import AuditRow
from tests.unit.api.helpers import NOW, MakeContext, bearer
from tests.unit.api.routes.test_traces import PB, request
from tests.unit.api.test_metrics import samples, value


def scrape(context: ServiceContext) -> dict:
    with TestClient(create_app(context)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def failing_expiry(context: ServiceContext) -> None:
    raise RuntimeError("database gone")


failing_expiry.__name__ = "expire_proposals"


def test_each_cycle_stage_is_timed_counted_and_stamped(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    context = make_context(data_dir=tmp_path)  # the audit checkpoint: <data_dir>/audit-head
    monkeypatch.setattr(jobs, "expire_proposals", failing_expiry)
    jobs.cycle(context)
    context.clock.advance(timedelta(minutes=1))
    jobs.cycle(context)
    found = scrape(context)

    histogram = "prognos_cycle_duration_seconds"
    for stage in ("ingest_cycle", "forecast_cycle", "group_incidents", "self_checks", "cycle"):
        assert value(found, f"{histogram}_count", stage=stage) == 2
        assert value(found, f"{histogram}_bucket", stage=stage, le="+Inf") == 2
        assert value(found, f"{histogram}_sum", stage=stage) > 0
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in found.items()
            if name == f"{histogram}_bucket" and dict(labels)["stage"] == stage
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)  # cumulative
    # The stage that raised: counted as a failure, never a success; so was the whole cycle.
    assert value(found, "prognos_cycle_failures_total", stage="expire_proposals") == 2
    assert value(found, "prognos_cycle_failures_total", stage="cycle") == 2
    assert value(found, "prognos_cycle_failures_total", stage="ingest_cycle") == 0
    last = "prognos_cycle_last_success_timestamp_seconds"
    assert value(found, last, stage="expire_proposals") == 0
    assert value(found, last, stage="ingest_cycle") == context.clock.now().timestamp()
    assert value(found, last, stage="cycle") == 0
    # Every state is there, zeros included; no incident, no model, no Vault configured.
    assert value(found, "prognos_incidents", state="open") == 0
    assert value(found, "prognos_proposals", state="rolled_back") == 0
    assert value(found, "prognos_executions", state="pending") == 0
    assert value(found, "prognos_incidents_opened_total") == 0
    assert value(found, "prognos_executions_started_total") == 0
    assert value(found, "prognos_audit_chain_ok") == 1
    assert value(found, "prognos_audit_verified_timestamp_seconds") == NOW.timestamp()
    assert not [name for name, _ in found if name.startswith("prognos_vault")]
    documented = (Path(__file__).parents[3] / "docs" / "metrics.md").read_text()
    stages = {dict(labels)["stage"] for name, labels in found if name == f"{histogram}_count"}
    assert {s for s in stages - {"cycle"} if f"`{s}`" not in documented} == set()


def test_audit_verification_runs_when_due_and_reports_a_broken_chain(
    make_context: MakeContext, tmp_path: Path
) -> None:
    context = make_context(data_dir=tmp_path, remediation={"audit_verify_every": "15m"})
    checkpoint = audit.checkpoint_for(context.settings)
    with context.sessions() as session:
        for n in range(3):
            audit.append(
                session, actor="alice", action="approve", subject=f"proposal:{n}",
                now=NOW, checkpoint=checkpoint,
            )  # fmt: skip
        session.commit()
    jobs.self_checks(context)
    assert value(scrape(context), "prognos_audit_chain_ok") == 1
    with context.sessions() as session:
        session.execute(sa.update(AuditRow).where(AuditRow.seq == 2).values(actor="mallory"))
        session.commit()
    context.clock.advance(timedelta(minutes=14))
    jobs.self_checks(context)  # not due yet: the last verdict stands
    found = scrape(context)
    assert value(found, "prognos_audit_chain_ok") == 1
    assert value(found, "prognos_audit_verified_timestamp_seconds") == NOW.timestamp()
    context.clock.advance(timedelta(minutes=1))
    jobs.self_checks(context)
    found = scrape(context)
    assert value(found, "prognos_audit_chain_ok") == 0
    assert value(found, "prognos_audit_verified_timestamp_seconds") == (
        context.clock.now().timestamp()
    )


def test_active_models_and_incident_counter_that_pruning_never_lowers(
    make_context: MakeContext, tmp_path: Path
) -> None:
    context = make_context(data_dir=tmp_path)
    with context.sessions() as session:
        for version, status in ((1, "retired"), (2, "active"), (3, "candidate")):
            trained = NOW - timedelta(days=4 - version)
            session.add(
                ModelRow(
                    family="step60s", version=version, forecaster="lstm", step=60,
                    path=f"/m/{version}", status=status, created_at=trained,
                    train_start=NOW, train_end=NOW, series_count=4, metrics={},
                )
            )  # fmt: skip
        for state in ("closed", "closed", "open"):
            session.add(
                IncidentRow(
                    status=state, opened_at=NOW, updated_at=NOW, last_alarm_at=NOW,
                    services=["cart"], series=[], symptom="cpu of cart",
                )
            )  # fmt: skip
        session.commit()
    jobs.self_checks(context)
    found = scrape(context)
    [info] = [dict(labels) for name, labels in found if name == "prognos_model_info"]
    assert info == {"family": "step60s", "version": "2", "forecaster": "lstm"}
    trained = value(found, "prognos_model_trained_timestamp_seconds", family="step60s")
    assert trained == (NOW - timedelta(days=2)).timestamp()
    assert value(found, "prognos_incidents", state="closed") == 2
    assert value(found, "prognos_incidents", state="open") == 1
    assert value(found, "prognos_incidents_opened_total") == 3
    with context.sessions() as session:  # the newest incident is pruned
        newest = session.scalar(sa.select(sa.func.max(IncidentRow.id)))
        session.execute(sa.delete(IncidentRow).where(IncidentRow.id == newest))
        session.commit()
    found = scrape(context)
    assert value(found, "prognos_incidents_opened_total") == 3
    assert value(found, "prognos_incidents", state="open") == 0


def test_otlp_exports_are_counted_by_outcome(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = make_context()
    token = issue(Role.INGEST)
    with TestClient(create_app(context)) as client:
        body = request(bad_id=True).SerializeToString()  # 2 spans stored, 1 rejected
        ok = client.post("/v1/traces", content=body, headers={**PB, **bearer(token)})
        assert ok.status_code == 200
        assert client.post("/v1/traces", content=body, headers=PB).status_code == 401
        garbage = client.post("/v1/traces", content=b"\xff\x00", headers={**PB, **bearer(token)})
        assert garbage.status_code == 400
        found = samples(client.get("/metrics").text)
    assert value(found, "prognos_otlp_requests_total", outcome="accepted") == 1
    assert value(found, "prognos_otlp_requests_total", outcome="rejected") == 2
    assert value(found, "prognos_otlp_spans_total", outcome="accepted") == 2
    assert value(found, "prognos_otlp_spans_total", outcome="rejected") == 1


def test_every_self_metric_family_has_its_type(make_context: MakeContext) -> None:
    with TestClient(create_app(make_context())) as client:
        text = client.get("/metrics").text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["prognos_cycle_duration_seconds"] == "histogram"
    assert families["prognos_cycle_failures"] == "counter"
    assert families["prognos_otlp_requests"] == "counter"
    assert families["prognos_incidents_opened"] == "counter"
    assert families["prognos_model_info"] == "gauge"
    assert families["prognos_proposals"] == "gauge"


def test_the_leading_daemon_is_named_with_its_last_confirmation(
    make_context: MakeContext,
) -> None:
    from core.leadership import LeaderRow

    context = make_context()
    assert not [name for name, _ in scrape(context) if name.startswith("prognos_daemon_leader")]
    checked = NOW + timedelta(seconds=30)
    with context.sessions() as session:
        session.add(
            LeaderRow(name="daemon", host="node-a", pid=4242, since=NOW, checked_at=checked)
        )
        session.commit()
    found = scrape(context)
    assert value(found, "prognos_daemon_leader", host="node-a", pid="4242") == 1
    assert value(found, "prognos_daemon_leader_checked_timestamp_seconds") == checked.timestamp()
