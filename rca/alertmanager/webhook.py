"""Alertmanager's webhook (payload version 4) as incident triggers: the payload's types, the
received alerts (`alertmanager_received`: a repeat by fingerprint and `startsAt` changes
nothing, so neither an HA pair's second delivery nor a restart re-opens anything), and the
firing ones as triggers on their `service` label, with their summary as the symptom."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from core.clock import ensure_utc
from rca.alertmanager.outbound import FIRING, OWN_ALERTS, RESOLVED
from rca.alertmanager.tables import ReceivedAlertRow

#: The anomaly score a firing alert brings to the root-cause ranking for its service: "rare",
#: as the detector's score of 3 (the alert's rule already judged it).
ALERT_SCORE = 3.0
#: Alertmanager's "no time" (a firing alert's endsAt in webhook payloads).
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    try:
        return ensure_utc(value)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once taken to UTC") from None


UtcTime = Annotated[datetime, AfterValidator(_utc)]
Text = Annotated[str, Field(max_length=16_384)]
LabelSet = Annotated[dict[Annotated[str, Field(max_length=1024)], Text], Field(max_length=256)]


class WebhookAlert(BaseModel):
    """One alert of a notification."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: LabelSet = Field(default_factory=dict)
    starts_at: UtcTime = Field(alias="startsAt")
    ends_at: UtcTime | None = Field(default=None, alias="endsAt")
    generator_url: Annotated[str, Field(max_length=4096)] = Field(default="", alias="generatorURL")
    fingerprint: Annotated[str, Field(min_length=1, max_length=64)]


class WebhookMessage(BaseModel):
    """Alertmanager's webhook notification, version 4 (its `webhook_config` receivers)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: Annotated[str, Field(max_length=16_384)] = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: Annotated[str, Field(max_length=1024)] = ""
    group_labels: LabelSet = Field(default_factory=dict, alias="groupLabels")
    common_labels: LabelSet = Field(default_factory=dict, alias="commonLabels")
    common_annotations: LabelSet = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Annotated[str, Field(max_length=4096)] = Field(default="", alias="externalURL")
    alerts: Annotated[list[WebhookAlert], Field(max_length=10_000)]


def alert_service(labels: dict[str, str]) -> str:
    """The service an alert is about: its `service` label, else `job`, else its alertname."""
    return labels.get("service") or labels.get("job") or labels.get("alertname") or "unknown"


def alert_summary(alert: WebhookAlert) -> str:
    """The alert's summary annotation, else its description, else its alertname and labels."""
    text = alert.annotations.get("summary") or alert.annotations.get("description")
    if text:
        return text
    name = alert.labels.get("alertname", "alert")
    rest = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return f"{name}{{{rest}}}" if rest else name


@dataclass
class Received:
    """What one notification changed: alerts that began firing, alerts that resolved, and
    what was left alone (repeats; Prognos' own alerts sent back)."""

    fired: list[ReceivedAlertRow] = field(default_factory=list)
    resolved: list[ReceivedAlertRow] = field(default_factory=list)
    repeats: int = 0
    own: int = 0


def receive(db_session: Session, message: WebhookMessage, *, now: datetime) -> Received:
    """Store the notification's alerts; a repeat (same fingerprint and start, same or older
    status) only updates when it was last seen. A resolved alert stays resolved."""
    out = Received()
    for alert in message.alerts:
        name = alert.labels.get("alertname", "")
        if name in OWN_ALERTS:
            out.own += 1
            continue
        ends_at = alert.ends_at if alert.ends_at and alert.ends_at > _EPOCH else None
        row = db_session.scalar(
            sa.select(ReceivedAlertRow).where(
                ReceivedAlertRow.fingerprint == alert.fingerprint,
                ReceivedAlertRow.starts_at == alert.starts_at,
            )
        )
        if row is None:
            row = ReceivedAlertRow(
                fingerprint=alert.fingerprint,
                starts_at=alert.starts_at,
                status=alert.status,
                alertname=name[:255],
                service=alert_service(alert.labels)[:255],
                summary=alert_summary(alert),
                labels=dict(alert.labels),
                received_at=now,
                seen_at=now,
                ends_at=ends_at if alert.status == RESOLVED else None,
            )
            db_session.add(row)
            if alert.status == FIRING:
                out.fired.append(row)
            continue
        row.seen_at = now
        if row.status == FIRING and alert.status == RESOLVED:
            row.status, row.ends_at = RESOLVED, ends_at or now
            out.resolved.append(row)
        else:
            out.repeats += 1
    db_session.flush()
    return out


@dataclass(frozen=True)
class AlertTrigger:
    """A firing alert as grouping sees an alarm (`rca.incidents.AlarmLike`): in an incident's
    `series` it counts as the negative of its received id, which no stored series has."""

    received_id: int
    service: str
    ts: int
    symptom: str
    score: float = ALERT_SCORE

    @property
    def series_id(self) -> int:
        return -self.received_id


def as_triggers(rows: list[ReceivedAlertRow], *, now: datetime) -> list[AlertTrigger]:
    """Firing alerts as triggers at `now`: Alertmanager says they still fire."""
    ts = int(now.timestamp())
    return [AlertTrigger(r.id, r.service, ts, r.summary) for r in rows]


def firing_alerts(
    db_session: Session, *, now: datetime, stale_after: timedelta
) -> list[ReceivedAlertRow]:
    """The received alerts still firing: not resolved, and delivered (or repeated) within
    `stale_after` (an alert whose resolution never came stops counting then)."""
    return list(
        db_session.scalars(
            sa.select(ReceivedAlertRow)
            .where(ReceivedAlertRow.status == FIRING, ReceivedAlertRow.seen_at >= now - stale_after)
            .order_by(ReceivedAlertRow.id)
        )
    )


def prune_received(db_session: Session, *, before: datetime) -> int:
    """Forget the received alerts last delivered before `before` (the caller passes
    `rca.incident_retention`: long past any repeat Alertmanager would send)."""
    result = db_session.execute(
        sa.delete(ReceivedAlertRow).where(ReceivedAlertRow.seen_at < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)
