"""Flows that end in incidents: the alarms firing now and the breach warnings active now open,
join or close incidents.

The caller commits; what the new incidents lead to (proposals) is remediation's flow."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.clock import to_epoch
from core.settings import ModelSettings, RcaSettings
from models.service import firing_alarms
from rca.breaches import active_breaches
from rca.incidents import GroupingResult, group_triggers


def incidents_from_triggers(
    db_session: Session,
    *,
    models: ModelSettings,
    rca: RcaSettings,
    longest_step: int,
    now: datetime,
) -> GroupingResult:
    """Group the alarms firing now (raised by the detector within the last `alarm_recent`
    steps at the longest step) and the breach warnings on in a forecast of that same period
    into incidents, diagnosing new ones from the spans and the stored metrics."""
    since = to_epoch(now) - models.alarm_recent * longest_step
    firing = firing_alarms(db_session, since=since)
    breaches = active_breaches(db_session, since=since)
    return group_triggers(db_session, firing, breaches, now=now, settings=rca)
