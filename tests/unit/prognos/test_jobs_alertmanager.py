"""The daemon's Alertmanager stage, inbound side: an alert Alertmanager reported firing keeps
its incident open past `rca.clear_after` while it fires; one neither resolved nor repeated for
`alertmanager.received_stale_after` lets it close as usual; received alerts are forgotten
`rca.incident_retention` after their last delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from prognos import jobs
from prognos.context import ServiceContext
from rca.alertmanager.flows import incidents_from_notification
from rca.alertmanager.tables import ReceivedAlertRow
from rca.alertmanager.webhook import WebhookMessage
from rca.tables import IncidentRow
from tests.unit.fakes import FakeSource, make_target

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _message() -> WebhookMessage:
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "service": "ledger"},
        "annotations": {"summary": "ledger disk 97% full"},
        "startsAt": "2026-01-05T11:59:00Z",
        "fingerprint": "0123456789abcdef",
    }
    return WebhookMessage.model_validate({"version": "4", "status": "firing", "alerts": [alert]})


def test_a_firing_alert_holds_its_incident_until_it_goes_stale(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    clock = FixedClock(NOW)
    context = ServiceContext(
        settings=Settings(alertmanager={"received_stale_after": "30m"}),
        engine=engine,
        sessions=sessions,
        source=FakeSource([]),
        targets=[make_target("memory")],
        clock=clock,
        playbooks={},
    )
    with sessions() as session:
        result = incidents_from_notification(session, _message(), rca=context.settings.rca, now=NOW)
        session.commit()
    (incident_id,) = result.grouping.opened

    for _ in range(4):  # cycles within rca.join_within, 16 minutes in all: still open
        clock.advance(timedelta(minutes=4))
        jobs.group_incidents(context)
        jobs.alertmanager_cycle(context)
    with sessions() as session:
        assert session.get(IncidentRow, incident_id).status == "open"  # type: ignore[union-attr]
        assert session.query(IncidentRow).count() == 1

    clock.advance(timedelta(minutes=15))  # not repeated for over 30 minutes: stale
    jobs.alertmanager_cycle(context)
    clock.advance(timedelta(minutes=11))
    jobs.group_incidents(context)
    with sessions() as session:
        assert session.get(IncidentRow, incident_id).status == "closed"  # type: ignore[union-attr]
        assert session.query(ReceivedAlertRow).count() == 1  # kept: a repeat is still known

    clock.advance(context.settings.rca.incident_retention)
    jobs.alertmanager_cycle(context)
    with sessions() as session:
        assert session.query(ReceivedAlertRow).count() == 0  # forgotten after the retention
