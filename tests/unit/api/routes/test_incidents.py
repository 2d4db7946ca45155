"""Incidents over HTTP: list, filter, one with its report, Markdown and HTML, 404."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from rca.incidents import group_alarms
from rca.tables import IncidentRow
from tests.unit.api.helpers import assert_problem, bearer
from tests.unit.rca.test_incidents import ONSET, SETTINGS, Alarm, at, store_traffic


def test_incidents_over_http(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    store_traffic(sessions, "svc02")
    with sessions() as session:
        group_alarms(
            session,
            [Alarm(1, "frontend", at(1), 6.0), Alarm(2, "svc02", at(1), 6.0)],
            now=ONSET + timedelta(minutes=3),
            settings=SETTINGS,
        )
        session.commit()
        (row,) = session.query(IncidentRow).all()
    token = bearer(issue(Role.VIEWER))
    listed = client.get("/v1/incidents", params={"status": "open"}, headers=token).json()
    assert [i["id"] for i in listed] == [row.id] and listed[0]["report"] is None
    one = client.get(f"/v1/incidents/{row.id}", headers=token).json()
    assert one["top_suspect"] == "svc02" and one["report"]["suspects"][0]["service"] == "svc02"
    markdown = client.get(f"/v1/incidents/{row.id}/report.md", headers=token)
    assert markdown.headers["content-type"].startswith("text/markdown") and "svc02" in markdown.text
    page = client.get(f"/v1/incidents/{row.id}/report.html", headers=token)
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert_problem(client.get("/v1/incidents/999", headers=token), 404)
    assert client.get("/v1/incidents", params={"status": "closed"}, headers=token).json() == []


def test_incident_listing_filters_pages_and_needs_a_viewer(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    with sessions() as session:
        group_alarms(
            session,
            [Alarm(1, "cart", at(0), 6.0), Alarm(2, "ledger", at(20), 6.0)],
            now=ONSET + timedelta(minutes=21),
            settings=SETTINGS,
        )
        session.commit()
    token = bearer(issue(Role.VIEWER))
    listed = client.get("/v1/incidents", headers=token).json()
    assert [i["services"] for i in listed] == [["ledger"], ["cart"]]  # newest first
    by_service = client.get("/v1/incidents", params={"service": "cart"}, headers=token).json()
    assert [i["services"] for i in by_service] == [["cart"]]
    since = (ONSET + timedelta(minutes=10)).isoformat()
    recent = client.get("/v1/incidents", params={"since": since}, headers=token).json()
    assert [i["services"] for i in recent] == [["ledger"]]
    until = client.get("/v1/incidents", params={"until": since}, headers=token).json()
    assert [i["services"] for i in until] == [["cart"]]
    page = client.get("/v1/incidents", params={"limit": 1, "offset": 1}, headers=token).json()
    assert [i["services"] for i in page] == [["cart"]]
    assert_problem(client.get("/v1/incidents", params={"limit": 0}, headers=token), 422)
    assert_problem(client.get("/v1/incidents"), 401)
    ingest = bearer(issue(Role.INGEST))
    assert_problem(client.get("/v1/incidents", headers=ingest), 403)
