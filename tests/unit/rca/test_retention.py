"""Retention of incidents: closed ones go after the retention; open ones and those a proposal
names stay, whatever their age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ingest.service import Reference
from rca.incidents import CLOSED, OPEN, prune_incidents
from rca.tables import IncidentRow
from remediation.tables import ProposalRow
from tests.unit.rows import proposal_row

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)


def add_incident(session: Session, status: str, closed_at: datetime | None) -> int:
    row = IncidentRow(
        status=status,
        opened_at=OLD,
        updated_at=OLD,
        last_alarm_at=OLD,
        closed_at=closed_at,
        services=["a"],
        series=[1],
        symptom="cpu of a",
    )
    session.add(row)
    session.flush()
    return row.id


def test_closed_incidents_go_after_the_retention_unless_open_or_proposed_for(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        expired = [add_incident(session, CLOSED, OLD) for _ in range(3)]
        still_open = add_incident(session, OPEN, None)
        recent = add_incident(session, CLOSED, NOW - timedelta(days=1))
        proposed_for = add_incident(session, CLOSED, OLD)
        named_as_text = add_incident(session, CLOSED, OLD)
        session.add(proposal_row({"incident_id": proposed_for, "symptom": "cpu of a"}, at=OLD))
        session.add(
            proposal_row({"incident_id": str(named_as_text)}, at=OLD)
        )  # an operator's proposal
        session.add(
            proposal_row({"note": "names no incident"}, at=OLD)
        )  # must not keep every incident
        session.commit()
    keep = [Reference(ProposalRow.evidence, ("incident_id",))]
    cutoff = NOW - timedelta(days=30)
    with sessions() as session:
        assert prune_incidents(session, before=cutoff, keep=keep, limit=2) == 2
        assert prune_incidents(session, before=cutoff, keep=keep, limit=2) == 1
        assert prune_incidents(session, before=cutoff, keep=keep, limit=2) == 0
        session.commit()
        kept = set(session.scalars(sa.select(IncidentRow.id)))
    assert kept == {still_open, recent, proposed_for, named_as_text}
    assert not kept & set(expired)
