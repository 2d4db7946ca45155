"""Flows of Alertmanager both ways. Inbound: a webhook notification's firing alerts open or
join incidents (the grouping of alarms: `rca.incidents.group_triggers`) and its resolved ones
close the incidents nothing else keeps open; the daemon keeps feeding the alerts still firing,
so their incidents stay open while they fire. Outbound: what should fire now (active breach
warnings, open incidents) is remembered and posted to every Alertmanager.

What the incidents lead to (proposals) is remediation's flow, called by the entry point."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.settings import AlertmanagerSettings, RcaSettings
from rca.alertmanager import outbound
from rca.alertmanager.tables import ReceivedAlertRow
from rca.alertmanager.webhook import (
    Received,
    WebhookMessage,
    as_triggers,
    firing_alerts,
    receive,
)
from rca.breaches import active_breaches
from rca.incidents import CLOSED, OPEN, GroupingResult, group_triggers
from rca.tables import IncidentRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotificationResult:
    """What a webhook notification did: its alerts' counts and the incidents it touched."""

    received: Received
    grouping: GroupingResult
    closed: list[int] = field(default_factory=list)


def incidents_from_notification(
    db_session: Session, message: WebhookMessage, *, rca: RcaSettings, now: datetime
) -> NotificationResult:
    """Store the notification's alerts; the new firing ones open or join incidents, the newly
    resolved ones close their incident when no other trigger holds it: no other alert of it
    still fires and it holds no alarm or breach of Prognos' own (an incident that does closes
    as usual, once those are quiet for `rca.clear_after`). The caller commits."""
    received = receive(db_session, message, now=now)
    grouping = GroupingResult([], [], [])
    if received.fired:
        grouping = _group(db_session, received.fired, rca=rca, now=now)
    closed = [i for i in (_close(db_session, r, now=now) for r in received.resolved) if i]
    db_session.flush()
    return NotificationResult(received, grouping, closed)


def keep_firing(
    db_session: Session, *, rca: RcaSettings, stale_after: timedelta, now: datetime
) -> GroupingResult:
    """The alerts still firing as triggers now (the daemon's cycle): their incidents stay open,
    and one whose incident closed opens a new one. The caller commits."""
    rows = firing_alerts(db_session, now=now, stale_after=stale_after)
    if not rows:
        return GroupingResult([], [], [])
    return _group(db_session, rows, rca=rca, now=now)


def _group(
    db_session: Session, rows: list[ReceivedAlertRow], *, rca: RcaSettings, now: datetime
) -> GroupingResult:
    result = group_triggers(db_session, as_triggers(rows, now=now), (), now=now, settings=rca)
    holding = list(db_session.scalars(sa.select(IncidentRow).where(IncidentRow.status == OPEN)))
    for row in rows:
        home = next((i for i in holding if -row.id in i.series), None)
        row.incident_id = home.id if home is not None else row.incident_id
    db_session.flush()
    return result


def _close(db_session: Session, alert: ReceivedAlertRow, *, now: datetime) -> int | None:
    """Close the resolved alert's incident if nothing else holds it; its id if closed."""
    if alert.incident_id is None:
        return None
    incident = db_session.get(IncidentRow, alert.incident_id)
    if incident is None or incident.status != OPEN:
        return None
    if any(s >= 0 for s in incident.series):
        return None  # an alarm or a breach of Prognos' own: closes when they are quiet
    others = db_session.scalar(
        sa.select(sa.func.count())
        .select_from(ReceivedAlertRow)
        .where(
            ReceivedAlertRow.incident_id == incident.id,
            ReceivedAlertRow.status == outbound.FIRING,
            ReceivedAlertRow.id != alert.id,
        )
    )
    if others:
        return None
    incident.status, incident.closed_at, incident.updated_at = CLOSED, now, now
    return incident.id


@dataclass(frozen=True)
class NotifyResult:
    """One round of posting: how many alerts fire and resolve, how many were posted, and the
    Alertmanagers that did not take them (they get them again next time)."""

    firing: int
    posted: int
    failed: list[str]


def notify(
    db_session: Session,
    *,
    settings: AlertmanagerSettings,
    public_url: str,
    since: int,
    now: datetime,
    valid_for: timedelta,
    http: requests.Session,
) -> NotifyResult:
    """Post the breach warnings active since `since` (epoch seconds) and the open incidents
    to every Alertmanager, re-sent every `resend_every`, resolved once gone. Commits twice:
    what should fire before posting (so no transaction waits on the network), then what
    every Alertmanager accepted."""
    current = [
        outbound.breach_alert(b, public_url=public_url, severity=settings.breach_severity)
        for b in active_breaches(db_session, since=since)
    ]
    incidents = db_session.scalars(
        sa.select(IncidentRow).where(IncidentRow.status == OPEN).order_by(IncidentRow.id)
    )
    current += [
        outbound.incident_alert(i, public_url=public_url, severity=settings.incident_severity)
        for i in incidents
    ]
    outbound.remember(db_session, current, now=now)
    db_session.commit()
    rows = outbound.due(db_session, now=now, resend_every=settings.resend_every)
    if not rows:
        return NotifyResult(len(current), 0, [])
    body = outbound.payload(rows, now=now, valid_for=valid_for)
    failed = outbound.post_alerts(settings.urls, body, timeout=settings.timeout, http=http)
    if not failed:
        outbound.mark_sent(db_session, rows, now=now)
        db_session.commit()
    return NotifyResult(len(current), len(rows), failed)
