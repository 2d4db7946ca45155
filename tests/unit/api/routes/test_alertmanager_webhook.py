"""Alertmanager's webhook: a firing alert opens an incident on its service with its summary as
the symptom and proposes as an alarm does; a repeat (HA, repeat_interval, a restart) is
ignored; resolved closes it unless something else holds it; bad payloads and callers get
problem documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role
from prognos.context import ServiceContext
from rca.alertmanager.tables import ReceivedAlertRow
from rca.alertmanager.webhook import WebhookMessage, alert_service, alert_summary
from rca.tables import IncidentRow
from remediation.tables import ProposalRow
from tests.unit.api.helpers import assert_problem, bearer
from tests.unit.remediation.helpers import command_playbook

URL = "/v1/alerts/alertmanager"


def notification(status: str = "firing", **alert: Any) -> dict[str, Any]:
    """A version-4 notification of one alert, as Alertmanager 0.25 sends it."""
    one = {
        "status": status,
        "labels": {"alertname": "HighLatency", "service": "checkout", "severity": "page"},
        "annotations": {"summary": "checkout p99 latency above 2s"},
        "startsAt": "2026-01-05T11:58:00.000Z",
        "endsAt": "2026-01-05T12:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": "a1b2c3d4e5f60718",
        **alert,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "prognos",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": one["labels"],
        "commonAnnotations": one["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [one],
    }


@pytest.fixture
def alerts_token(issue: Callable[[Role], str]) -> dict[str, str]:
    return bearer(issue(Role.ALERTS))


@pytest.fixture
def with_playbooks(context: ServiceContext) -> ServiceContext:
    context.playbooks = {
        "restart": command_playbook("restart", kinds=["incident"], suspects=True),
        "page": command_playbook("page", kinds=["alarm"]),
    }
    return context


def _incidents(sessions: sessionmaker[Session]) -> list[IncidentRow]:
    with sessions() as session:
        return list(session.query(IncidentRow).order_by(IncidentRow.id))


def test_a_firing_alert_opens_an_incident_and_proposes_as_an_alarm_does(
    with_playbooks: ServiceContext,
    client: TestClient,
    sessions: sessionmaker[Session],
    alerts_token: dict[str, str],
) -> None:
    answer = client.post(URL, json=notification(), headers=alerts_token)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["fired"], body["repeats"], len(body["opened"])) == (1, 0, 1)
    (incident,) = _incidents(sessions)
    assert incident.status == "open" and incident.services == ["checkout"]
    assert incident.symptom == "checkout p99 latency above 2s"
    assert incident.top_suspect == "checkout"
    with sessions() as session:
        proposals = session.query(ProposalRow).all()
    assert sorted((p.playbook, p.target) for p in proposals) == [
        ("page", "checkout"),
        ("restart", "checkout"),
    ]
    assert body["proposals"] == 2
    assert all(p.evidence["incident_id"] == incident.id for p in proposals)


def test_repeats_are_ignored_even_after_a_restart_and_resolved_closes(
    context: ServiceContext,
    client: TestClient,
    sessions: sessionmaker[Session],
    alerts_token: dict[str, str],
) -> None:
    assert client.post(URL, json=notification(), headers=alerts_token).json()["fired"] == 1
    again = client.post(URL, json=notification(), headers=alerts_token).json()
    assert (again["fired"], again["repeats"], again["opened"]) == (0, 1, [])
    # A restarted service (a new app on the same database) still knows the alert.
    with TestClient(create_app(context)) as restarted:
        third = restarted.post(URL, json=notification(), headers=alerts_token).json()
    assert (third["fired"], third["repeats"]) == (0, 1)
    assert len(_incidents(sessions)) == 1

    resolved = client.post(URL, json=notification("resolved"), headers=alerts_token).json()
    (incident,) = _incidents(sessions)
    assert resolved["resolved"] == 1 and resolved["closed"] == [incident.id]
    assert incident.status == "closed"
    # The HA peer's copy of the resolution, and a late firing copy: nothing changes.
    late = client.post(URL, json=notification("resolved"), headers=alerts_token).json()
    assert (late["resolved"], late["repeats"], late["closed"]) == (0, 1, [])
    assert client.post(URL, json=notification(), headers=alerts_token).json()["opened"] == []

    # The same alert firing again later (a new startsAt) is a new trigger.
    anew = notification(startsAt="2026-01-05T12:30:00Z")
    assert len(client.post(URL, json=anew, headers=alerts_token).json()["opened"]) == 1


def test_an_incident_closes_when_its_last_alert_resolves(
    client: TestClient, sessions: sessionmaker[Session], alerts_token: dict[str, str]
) -> None:
    client.post(URL, json=notification(), headers=alerts_token)
    other = notification(
        fingerprint="ffff000011112222", labels={"alertname": "Errors", "service": "checkout"}
    )
    joined = client.post(URL, json=other, headers=alerts_token).json()
    assert joined["opened"] == [] and joined["fired"] == 1
    first = client.post(URL, json=notification("resolved"), headers=alerts_token).json()
    assert first["closed"] == []  # the other alert still fires
    second = client.post(
        URL,
        json=notification(
            "resolved",
            fingerprint="ffff000011112222",
            labels={"alertname": "Errors", "service": "checkout"},
        ),
        headers=alerts_token,
    ).json()
    assert second["closed"] == [_incidents(sessions)[0].id]


def test_prognos_own_alerts_sent_back_are_left_alone(
    client: TestClient, sessions: sessionmaker[Session], alerts_token: dict[str, str]
) -> None:
    echo = notification(labels={"alertname": "PrognosIncident", "service": "cart"})
    body = client.post(URL, json=echo, headers=alerts_token).json()
    assert (body["own"], body["fired"], body["opened"]) == (1, 0, [])
    assert _incidents(sessions) == []


def test_the_webhook_needs_an_alerts_or_admin_token(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    assert_problem(client.post(URL, json=notification()), 401)
    assert_problem(client.post(URL, json=notification(), headers=bearer("pgn_x_y")), 401)
    for role in (Role.VIEWER, Role.OPERATOR, Role.INGEST):
        assert_problem(client.post(URL, json=notification(), headers=bearer(issue(role))), 403)
    assert (
        client.post(URL, json=notification(), headers=bearer(issue(Role.ADMIN))).status_code == 200
    )


@pytest.mark.parametrize(
    "change",
    [
        {"version": "3"},
        {"status": "pending"},
        {"alerts": [{"status": "firing", "labels": {}}]},  # no startsAt, no fingerprint
        {"alerts": "none"},
    ],
)
def test_bad_payloads_are_problem_documents(
    client: TestClient, alerts_token: dict[str, str], change: dict[str, Any]
) -> None:
    assert_problem(client.post(URL, json={**notification(), **change}, headers=alerts_token), 422)


def test_bad_alert_fields_are_problem_documents(
    client: TestClient, alerts_token: dict[str, str]
) -> None:
    for alert in ({"fingerprint": ""}, {"startsAt": "yesterday"}, {"status": "gone"}):
        assert_problem(client.post(URL, json=notification(**alert), headers=alerts_token), 422)
    assert_problem(
        client.post(
            URL, content=b"{not json", headers={**alerts_token, "Content-Type": "application/json"}
        ),
        422,
    )


def test_a_body_over_the_limit_is_refused(
    make_context: Callable[..., ServiceContext], issue: Callable[[Role], str]
) -> None:
    context = make_context(api={"max_body_bytes": 4096})
    big = notification(annotations={"summary": "x" * 8000})
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        assert_problem(client.post(URL, json=big, headers=bearer(issue(Role.ALERTS))), 413)


def test_the_webhook_is_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][URL]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"200", "401", "403", "413", "422"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/WebhookMessage")


def test_payload_parsing_keeps_what_grouping_needs() -> None:
    message = WebhookMessage.model_validate(notification())
    (alert,) = message.alerts
    assert alert.starts_at.tzinfo is not None and alert.starts_at.hour == 11
    assert alert_service(alert.labels) == "checkout"
    assert alert_service({"job": "api"}) == "api"
    assert alert_service({"alertname": "Up"}) == "Up"
    assert alert_summary(alert) == "checkout p99 latency above 2s"
    bare = WebhookMessage.model_validate(notification(annotations={})).alerts[0]
    assert alert_summary(bare) == "HighLatency{service=checkout,severity=page}"


def test_a_stored_alert_is_one_row_per_fingerprint_and_start(
    client: TestClient, sessions: sessionmaker[Session], alerts_token: dict[str, str]
) -> None:
    for _ in range(3):
        client.post(URL, json=notification(), headers=alerts_token)
    with sessions() as session:
        (row,) = session.query(ReceivedAlertRow).all()
    assert (row.fingerprint, row.status, row.service) == ("a1b2c3d4e5f60718", "firing", "checkout")
