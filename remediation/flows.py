"""Flows that end in proposals: an incident that opened, whether an alarm or a predicted-breach
warning opened it, gets one proposal set for its top suspect. Each proposal set is committed on
its own, so a refused one (logged) leaves the others going; the target of a proposal is the
service."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from core.clock import Clock
from core.errors import PrognosError
from rca.incidents import breach_records, get_incident, trigger_kinds
from remediation.playbooks import Playbook
from remediation.service import auto_propose, breach_evidence

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
        log.info(
            "incident %d opened: %s; top suspect %s",
            incident_id,
            ", ".join(row.services) if row else "?",
            row.top_suspect if row else "?",
        )
        if row is None or not row.top_suspect:
            continue
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
        )
    return made


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
