"""Predicted breaches and open incidents as Alertmanager alerts: what each says (labels that
route like Prometheus alerts, annotations with the ETA and probability, links to the page),
what was posted (`alertmanager_sent`: re-sent on a cadence, resolved with `endsAt` once the
warning clears or the incident closes) and the posting itself (`POST /api/v2/alerts` on every
Alertmanager; one that is down is retried the next time)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from rca.alertmanager.tables import SentAlertRow
from rca.breaches import BreachWarning
from rca.tables import IncidentRow

log = logging.getLogger(__name__)

BREACH_ALERT = "PrognosBreachPredicted"
INCIDENT_ALERT = "PrognosIncident"
#: What Prognos posts itself: the webhook ignores these, so that a route sending them back to
#: Prognos never keeps an incident open by its own echo.
OWN_ALERTS = frozenset({BREACH_ALERT, INCIDENT_ALERT})
FIRING, RESOLVED = "firing", "resolved"

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Alert:
    """One alert as Prognos means it now; `key` names what it is about across cycles."""

    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    starts_at: datetime


def _label_name(name: str) -> str:
    cleaned = _LABEL_NAME.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def _labels(series_labels: dict[str, str], **own: str | None) -> dict[str, str]:
    """The series' labels (reserved `__*` ones left out, names made valid), then Prognos' own,
    which win; empty values are left out (Alertmanager treats them as absent)."""
    out = {
        _label_name(k): str(v)
        for k, v in series_labels.items()
        if k and not k.startswith("__") and v not in (None, "")
    }
    out.update({k: v for k, v in own.items() if v})
    return out


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def breach_alert(breach: BreachWarning, *, public_url: str, severity: str) -> Alert:
    """A predicted breach: alertname PrognosBreachPredicted, the series' labels, the service
    and target; the description says the limit, the ETA and the probability."""
    if breach.eta is not None:
        when = f"at {_iso(datetime.fromtimestamp(breach.eta, UTC))}"
    else:
        when = "within the forecast horizon"
    description = (
        f"{breach.series_name} is {breach.prediction()}: expected to cross "
        f"{breach.threshold:g} ({breach.direction}) {when}, probability "
        f"{breach.probability:.0%}. Forecast of {_iso(datetime.fromtimestamp(breach.ts, UTC))}."
    )
    return Alert(
        key=f"breach:{breach.series_id}",
        labels=_labels(
            breach.labels,
            alertname=BREACH_ALERT,
            severity=severity,
            service=breach.service,
            target=breach.target,
        ),
        annotations={
            "summary": breach.symptom(),
            "description": description,
            "runbook_url": f"{public_url}/ui#proposals",
            "eta": _iso(datetime.fromtimestamp(breach.eta, UTC)) if breach.eta else "",
            "probability": f"{breach.probability:.2f}",
        },
        generator_url=f"{public_url}/ui?series={breach.series_id}#series",
        starts_at=datetime.fromtimestamp(breach.since, UTC),
    )


def incident_alert(row: IncidentRow, *, public_url: str, severity: str) -> Alert:
    """An open incident: alertname PrognosIncident, its first service (services only grow, so
    the alert's labels stay the same while it is open) and its id."""
    suspect = row.top_suspect or "not known yet"
    description = (
        f"Incident {row.id} on {', '.join(row.services)}; top suspect {suspect}. "
        f"Report: {public_url}/v1/incidents/{row.id}/report.html"
    )
    return Alert(
        key=f"incident:{row.id}",
        labels=_labels(
            {},
            alertname=INCIDENT_ALERT,
            severity=severity,
            service=row.services[0] if row.services else None,
            incident=str(row.id),
        ),
        annotations={
            "summary": row.symptom,
            "description": description,
            "runbook_url": f"{public_url}/ui#proposals",
            "top_suspect": row.top_suspect or "",
        },
        generator_url=f"{public_url}/ui#incidents",
        starts_at=row.opened_at,
    )


def remember(db_session: Session, current: Sequence[Alert], *, now: datetime) -> None:
    """Bring `alertmanager_sent` to `current`: a new alert fires, a changed one is due again,
    one no longer current is resolved now (ending at once) and due."""
    rows = {r.key: r for r in db_session.scalars(sa.select(SentAlertRow))}
    wanted = {a.key: a for a in current}
    for key, alert in wanted.items():
        annotations = {k: v for k, v in alert.annotations.items() if v}
        row = rows.get(key)
        if row is None:
            db_session.add(
                SentAlertRow(
                    key=key,
                    status=FIRING,
                    labels=alert.labels,
                    annotations=annotations,
                    generator_url=alert.generator_url,
                    starts_at=alert.starts_at,
                )
            )
            continue
        if row.status == RESOLVED:  # the same thing warns again: a new alert
            row.starts_at, row.ends_at, row.status = alert.starts_at, None, FIRING
            row.sent_at = None
        if row.labels != alert.labels:  # another alert to Alertmanager: end the old one first
            db_session.add(
                SentAlertRow(
                    key=f"{key}@{int(now.timestamp())}",
                    status=RESOLVED,
                    labels=row.labels,
                    annotations=row.annotations,
                    generator_url=row.generator_url,
                    starts_at=row.starts_at,
                    ends_at=now,
                )
            )
            row.labels, row.sent_at = alert.labels, None
        if row.annotations != annotations or row.generator_url != alert.generator_url:
            row.annotations, row.generator_url, row.sent_at = annotations, alert.generator_url, None
    for key, row in rows.items():
        if key not in wanted and row.status == FIRING:
            row.status, row.ends_at, row.sent_at = RESOLVED, now, None
    db_session.flush()


def due(db_session: Session, *, now: datetime, resend_every: timedelta) -> list[SentAlertRow]:
    """The alerts to post now: changed or never accepted, resolved and not yet accepted, or
    firing and last accepted `resend_every` ago."""
    return list(
        db_session.scalars(
            sa.select(SentAlertRow)
            .where(
                sa.or_(SentAlertRow.sent_at.is_(None), SentAlertRow.sent_at <= now - resend_every)
            )
            .order_by(SentAlertRow.key)
        )
    )


def payload(rows: Sequence[SentAlertRow], *, now: datetime, valid_for: timedelta) -> list[Any]:
    """The body of `POST /api/v2/alerts`: a firing alert ends `valid_for` from now unless it is
    re-sent (so alerts of a Prognos that stopped resolve on their own), a resolved one when it
    cleared."""
    return [
        {
            "labels": r.labels,
            "annotations": r.annotations,
            "generatorURL": r.generator_url,
            "startsAt": _iso(r.starts_at),
            "endsAt": _iso(r.ends_at if r.ends_at is not None else now + valid_for),
        }
        for r in rows
    ]


def post_alerts(
    urls: Sequence[str], body: list[Any], *, timeout: timedelta, http: requests.Session
) -> list[str]:
    """Post the alerts to every Alertmanager; returns the URLs that did not accept them (each
    logged: what went wrong, never the body)."""
    failed = []
    for url in urls:
        try:
            response = http.post(f"{url}/api/v2/alerts", json=body, timeout=timeout.total_seconds())
        except requests.RequestException as exc:
            log.warning(
                "Alertmanager %s unreachable (%s); retried next cycle", url, type(exc).__name__
            )
            failed.append(url)
            continue
        if response.status_code >= 300:
            log.warning(
                "Alertmanager %s refused %d alert(s): HTTP %d %s",
                url,
                len(body),
                response.status_code,
                response.text[:200],
            )
            failed.append(url)
    return failed


def mark_sent(db_session: Session, rows: Sequence[SentAlertRow], *, now: datetime) -> None:
    """Every Alertmanager accepted `rows`: firing ones are next due after `resend_every`,
    resolved ones are done with."""
    for row in rows:
        if row.status == RESOLVED:
            db_session.delete(row)
        else:
            row.sent_at = now
    db_session.flush()
