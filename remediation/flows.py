"""Flows that end in proposals: an incident, whether an alarm or a predicted-breach warning
opened it, gets one proposal set for its top suspect. When the incident grows and its top
suspect changes (a breach warning joins an incident a caller's alarm opened), the open proposals
for the old suspect are cancelled as superseded and the new suspect gets the set. Each proposal
set is committed on its own, so a refused one (logged) leaves the others going; the target of a
proposal is the service."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.clock import Clock
from core.errors import PrognosError
from ingest.tables import SeriesRow
from rca.incidents import breach_records, get_incident, trigger_kinds
from rca.tables import IncidentRow
from remediation.domain import ProposalStatus
from remediation.playbooks import Playbook
from remediation.service import auto_propose, breach_evidence, cancel
from remediation.tables import ProposalRow

log = logging.getLogger(__name__)


def propose_for_incidents(
    db_session: Session,
    incident_ids: Iterable[int],
    *,
    playbooks: Mapping[str, Playbook],
    clock: Clock,
) -> int:
    """Propose the matching playbooks for each newly opened incident's top suspect, once per
    incident. A playbook matches under kind "incident", or the kind of one of the incident's
    triggers ("breach" when a breach warning opened or joined it, "alarm" when a series of it
    alarmed). The evidence names the incident and, when it holds breaches, the one predicted
    to cross soonest (a snapshot with its ETA and probability). Returns how many proposals
    were made."""
    made = 0
    for incident_id in incident_ids:
        row = get_incident(db_session, incident_id)
        if row is None or not row.top_suspect:
            continue
        if not _supersede(db_session, row, clock=clock):
            continue  # this suspect already has the incident's proposal set
        log.info(
            "incident %d: %s; top suspect %s", incident_id, ", ".join(row.services), row.top_suspect
        )
        evidence: dict[str, Any] = {"incident_id": incident_id, "symptom": row.symptom}
        breaches = breach_records(row)
        if breaches:
            soonest = min(breaches, key=lambda b: (b["eta"] is None, b["eta"] or 0))
            evidence["breach"] = breach_evidence(db_session, int(soonest["series_id"]))
        made += propose_and_commit(
            db_session,
            playbooks=playbooks,
            kind=("incident", *trigger_kinds(row)),
            service=row.top_suspect,
            suspect=True,
            evidence=evidence,
            about=f"incident {incident_id}",
            clock=clock,
            targets=_targets(db_session, row),
        )
    return made


def _targets(db_session: Session, incident: IncidentRow) -> list[str]:
    """The targets (metric names) of the incident's series: what `match.targets` looks at."""
    if not incident.series:
        return []
    return sorted(
        set(
            db_session.scalars(
                sa.select(SeriesRow.target).where(SeriesRow.id.in_(list(incident.series)))
            )
        )
    )


def _supersede(db_session: Session, incident: IncidentRow, *, clock: Clock) -> bool:
    """Whether the incident's top suspect still needs its proposal set: False when a proposal
    of the incident already targets it (whatever became of it); else the incident's open
    proposals for another target are cancelled (committed, audited) as superseded, and True."""
    incident_id, suspect = incident.id, incident.top_suspect
    rows = db_session.execute(
        sa.select(ProposalRow.id, ProposalRow.target, ProposalRow.status, ProposalRow.evidence)
        .where(ProposalRow.created_at >= incident.opened_at)
        .order_by(ProposalRow.id)
    ).all()
    mine = [
        r
        for r in rows
        if isinstance(r.evidence, dict) and r.evidence.get("incident_id") == incident_id
    ]
    if any(r.target == suspect for r in mine):
        return False
    for r in mine:
        if r.status == ProposalStatus.PROPOSED.value:
            cancel(
                db_session,
                proposal_id=r.id,
                principal="daemon",
                now=clock.now(),
                reason=f"superseded: incident {incident_id}'s top suspect is now {suspect}",
            )
            log.info(
                "proposal %d superseded: incident %d now points at %s", r.id, incident_id, suspect
            )
    db_session.commit()
    return True


def propose_and_commit(
    db_session: Session,
    *,
    playbooks: Mapping[str, Playbook],
    kind: str | Sequence[str],
    service: str,
    suspect: bool,
    evidence: dict[str, Any],
    about: str,
    clock: Clock,
    targets: Sequence[str] | None = None,
) -> int:
    """The daemon's proposals for one incident, committed on their own: a refusal is logged
    and rolled back. Returns how many were made."""
    if not playbooks:
        return 0
    try:
        proposals = auto_propose(
            db_session,
            playbooks=playbooks,
            kind=kind,
            service=service,
            suspect=suspect,
            target=service,
            evidence=evidence,
            now=clock.now(),
            targets=targets,
        )
        db_session.commit()
    except PrognosError as exc:
        db_session.rollback()
        log.warning("no proposal for %s: %s", about, exc.message)
        return 0
    for proposal in proposals:
        log.info(
            "proposed %s for %s (%s): proposal %d", proposal.playbook, service, about, proposal.id
        )
    return len(proposals)
