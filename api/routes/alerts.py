"""`POST /v1/alerts/alertmanager`: Alertmanager's webhook (payload version 4). Firing alerts open
or join incidents and resolved ones close them (`rca.alertmanager.flows`); the incidents they
open or grow get their proposals as Prognos' own alarms' do (`remediation.flows`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from api.auth import Principal, Role
from api.deps import ContextDep, SessionDep, require
from rca.alertmanager import flows as alertmanager_flows
from rca.alertmanager.webhook import WebhookMessage
from remediation.flows import propose_for_incidents

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

AlertsRole = Annotated[Principal, Depends(require(Role.ALERTS))]


class NotificationRead(BaseModel):
    """What one notification did."""

    fired: int = Field(description="alerts that began firing")
    resolved: int = Field(description="alerts that resolved")
    repeats: int = Field(description="alerts already received (same fingerprint and startsAt)")
    own: int = Field(description="Prognos' own alerts sent back, left alone")
    opened: list[int] = Field(description="incidents opened")
    updated: list[int] = Field(description="incidents that gained a service")
    closed: list[int] = Field(description="incidents closed: nothing else held them")
    proposals: int = Field(description="proposals made for the incidents opened or grown")


@router.post(
    "/alertmanager",
    response_model=NotificationRead,
    summary="Alertmanager's webhook (version 4): firing alerts open or join incidents, "
    "resolved ones close them; role alerts or admin",
)
def alertmanager_webhook(
    message: WebhookMessage, _: AlertsRole, context: ContextDep, session: SessionDep
) -> NotificationRead:
    now = context.clock.now()
    for attempt in (1, 2):
        try:
            result = alertmanager_flows.incidents_from_notification(
                session, message, rca=context.settings.rca, now=now
            )
            session.commit()
            break
        except IntegrityError:
            # An HA pair's two deliveries raced to store the same alert: the second pass
            # finds it stored and counts it as a repeat.
            session.rollback()
            if attempt == 2:
                raise
    touched = [*result.grouping.opened, *result.grouping.updated]
    made = 0
    if touched:
        made = propose_for_incidents(
            session, touched, playbooks=context.loaded_playbooks(), clock=context.clock
        )
    return NotificationRead(
        fired=len(result.received.fired),
        resolved=len(result.received.resolved),
        repeats=result.received.repeats,
        own=result.received.own,
        opened=result.grouping.opened,
        updated=result.grouping.updated,
        closed=result.closed,
        proposals=made,
    )
