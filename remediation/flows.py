"""Flows that end in proposals, one per trigger: a breach warning that turned on, an incident
that opened. Each proposal set is committed on its own, so a refused one (logged) leaves the
others going; the target of a proposal is the service."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from core.clock import Clock
from core.errors import PrognosError
from models.service import fresh_warnings
from rca.incidents import get_incident
from remediation.playbooks import Playbook
from remediation.service import auto_propose, breach_evidence

log = logging.getLogger(__name__)


def propose_for_breaches(
    db_session: Session, *, playbooks: Mapping[str, Playbook], clock: Clock
) -> int:
    """Propose the matching playbooks for every breach warning that turned on with the newest
    forecast. Returns how many proposals were made."""
    if not playbooks:
        return 0
    made = 0
    for series_id, service in fresh_warnings(db_session):
        if service:
            made += propose_and_commit(
                db_session,
                playbooks=playbooks,
                kind="breach",
                service=service,
                suspect=False,
                evidence={"breach": breach_evidence(db_session, series_id)},
                about=f"the predicted breach of series {series_id}",
                clock=clock,
            )
    return made


def propose_for_incidents(
    db_session: Session,
    incident_ids: Iterable[int],
    *,
    playbooks: Mapping[str, Playbook],
    clock: Clock,
) -> int:
    """Propose the matching playbooks for each newly opened incident's top suspect. Returns how
    many proposals were made."""
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
        made += propose_and_commit(
            db_session,
            playbooks=playbooks,
            kind="incident",
            service=row.top_suspect,
            suspect=True,
            evidence={"incident_id": incident_id, "symptom": row.symptom},
            about=f"incident {incident_id}",
            clock=clock,
        )
    return made


def propose_and_commit(
    db_session: Session,
    *,
    playbooks: Mapping[str, Playbook],
    kind: str,
    service: str,
    suspect: bool,
    evidence: dict[str, Any],
    about: str,
    clock: Clock,
) -> int:
    """The daemon's proposals for one breach or incident, committed on their own: a refusal
    is logged and rolled back. Returns how many were made."""
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
