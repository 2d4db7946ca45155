"""Flows that end in incidents: the alarms firing now open, join or close incidents.

The caller commits; what the new incidents lead to (proposals) is remediation's flow."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.clock import to_epoch
from core.settings import ModelSettings, RcaSettings
from models.service import firing_alarms
from rca.incidents import GroupingResult, group_alarms


def incidents_from_alarms(
    db_session: Session,
    *,
    models: ModelSettings,
    rca: RcaSettings,
    longest_step: int,
    now: datetime,
) -> GroupingResult:
    """Group the alarms firing now (raised by the detector within the last `alarm_recent`
    steps at the longest step) into incidents, diagnosing new ones from the spans."""
    firing = firing_alarms(db_session, since=to_epoch(now) - models.alarm_recent * longest_step)
    return group_alarms(db_session, firing, now=now, settings=rca)
