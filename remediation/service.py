"""The approval state machine: propose → approve (quorum) | reject | cancel | expire.

Every transition is a conditional UPDATE ... WHERE status = 'proposed' checked by its row count,
after the proposal row is locked (a no-op UPDATE: a row lock on PostgreSQL, the write lock on
SQLite), so two approvers clicking at once give exactly one execution; the unique
`executions.proposal_id` is the backstop. Functions work in the caller's transaction; the caller
commits (and also commits when a `RemediationError` has `persist` set).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from core.errors import ErrorKind
from ingest.tables import SeriesRow
from models.tables import BreachRow
from remediation import audit, guards
from remediation.domain import (
    AlreadyDecidedError,
    ApproverRoleError,
    Decision,
    DigestMismatchError,
    DuplicateApprovalError,
    EvidenceInvalidError,
    Execution,
    ExecutionNotFoundError,
    ExecutionStatus,
    FourEyesError,
    GuardError,
    PlaybookChangedError,
    PlaybookNotFoundError,
    Proposal,
    ProposalExpiredError,
    ProposalNotFoundError,
    ProposalStatus,
    ReasonRequiredError,
    RemediationError,
)
from remediation.playbooks import (
    APPROVER_ROLES,
    Playbook,
    canonical_json,
    match_playbooks,
    params_digest,
    validate_params,
)
from remediation.tables import ApprovalRow, ExecutionRow, ExecutionStepRow, ProposalRow

PROPOSED = ProposalStatus.PROPOSED.value


class InvalidTargetError(RemediationError):
    code = "target_invalid"
    kind = ErrorKind.INVALID


def proposal_subject(proposal_id: int) -> str:
    return f"proposal:{proposal_id}"


def execution_subject(execution_id: int) -> str:
    return f"execution:{execution_id}"


# Targets end up inside argv elements, URLs and PromQL label matchers: no quotes, no spaces.
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,254}$")


def _check_target(target: str) -> str:
    if not _TARGET.match(target):
        raise InvalidTargetError(
            "target must be 1-255 characters of letters, digits and _ . : / @ -, "
            "starting with a letter or digit"
        )
    return target


#: The most evidence a proposal keeps, as compact UTF-8 JSON. Evidence is what a reviewer reads
#: (an incident id, a breach snapshot, a short excerpt), not a log store: point to big data.
MAX_EVIDENCE_BYTES = 64 * 1024


def _encode_evidence(evidence: Mapping[str, Any]) -> bytes:
    try:
        encoded = canonical_json(dict(evidence))
    except ValueError:
        raise EvidenceInvalidError(
            "evidence must be JSON: NaN and Infinity are not numbers JSON can carry"
        ) from None
    except (TypeError, RecursionError):
        raise EvidenceInvalidError(
            "evidence must be JSON: objects, arrays, strings, finite numbers, booleans, null"
        ) from None
    if len(encoded) > MAX_EVIDENCE_BYTES:
        raise EvidenceInvalidError(
            f"evidence is {len(encoded):,} bytes as JSON; a proposal keeps at most "
            f"{MAX_EVIDENCE_BYTES:,}: attach a reference (an incident id, a URL) to larger data"
        )
    return encoded


def propose(
    session: Session,
    *,
    playbook: Playbook,
    params: Mapping[str, Any] | None,
    target: str,
    proposed_by: str,
    evidence: Mapping[str, Any] | None = None,
    now: datetime,
    dry_run: bool = False,
) -> Proposal:
    """Record a proposal with typed parameters (defaults applied) and its binding digest."""
    target = _check_target(target)
    typed = validate_params(playbook, params)
    evidence = dict(evidence or {})
    encoded = _encode_evidence(evidence)
    if not dry_run:
        guards.check_propose(session, playbook, target, now, actor=proposed_by)
    digest = params_digest(playbook.name, playbook.version, typed, target, dry_run=dry_run)
    row = ProposalRow(
        playbook=playbook.name,
        playbook_version=playbook.version,
        params=typed,
        params_digest=digest,
        target=target,
        status=PROPOSED,
        proposed_by=proposed_by,
        reason=None,
        evidence=evidence,
        created_at=now,
        expires_at=now + playbook.approval.expires_after,
        decided_at=None,
        quorum=playbook.approval.quorum,
        dry_run=dry_run,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=proposed_by,
        action="propose",
        subject=proposal_subject(row.id),
        data={
            "playbook": playbook.name,
            "version": playbook.version,
            "target": target,
            "params": typed,
            "digest": digest,
            "risk": playbook.risk,
            "quorum": row.quorum,
            "dry_run": dry_run,
            "expires_at": row.expires_at.isoformat(),
            # The proposal row keeps the evidence; the chain binds it without a second copy.
            "evidence_sha256": hashlib.sha256(encoded).hexdigest(),
            "evidence_bytes": len(encoded),
        },
        now=now,
    )
    return Proposal.from_row(row)


def _lock(session: Session, proposal_id: int) -> ProposalRow:
    """Serialise decisions on one proposal, then read it fresh."""
    touch = (
        sa.update(ProposalRow)
        .where(ProposalRow.id == proposal_id)
        .values(status=ProposalRow.status)
        .execution_options(synchronize_session=False)
    )
    if session.execute(touch).rowcount == 0:  # type: ignore[attr-defined]
        raise ProposalNotFoundError(f"no proposal {proposal_id}")
    row = session.execute(
        sa.select(ProposalRow)
        .where(ProposalRow.id == proposal_id)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return row


def _transition(session: Session, row: ProposalRow, status: ProposalStatus, **values: Any) -> None:
    """proposed → status, only if still proposed; anyone who lost the race gets a conflict."""
    result = session.execute(
        sa.update(ProposalRow)
        .where(ProposalRow.id == row.id)
        .where(ProposalRow.status == PROPOSED)
        .values(status=status.value, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyDecidedError(f"proposal {row.id} was already decided")
    session.expire(row)


def _require_open(session: Session, row: ProposalRow, now: datetime) -> None:
    if row.status == ProposalStatus.EXPIRED:
        raise ProposalExpiredError(f"proposal {row.id} expired at {row.expires_at.isoformat()}")
    if row.status != PROPOSED:
        raise AlreadyDecidedError(f"proposal {row.id} is already {row.status}")
    if now >= row.expires_at:
        _expire(session, row, now)
        raise ProposalExpiredError(
            f"proposal {row.id} expired at {row.expires_at.isoformat()}; propose it again"
        )


def _expire(session: Session, row: ProposalRow, now: datetime) -> None:
    _transition(session, row, ProposalStatus.EXPIRED, decided_at=now)
    audit.append(
        session,
        actor="system",
        action="expire",
        subject=proposal_subject(row.id),
        data={"expires_at": row.expires_at.isoformat(), "digest": row.params_digest},
        now=now,
    )


def _playbook_for(row: ProposalRow, playbooks: Mapping[str, Playbook]) -> Playbook:
    playbook = playbooks.get(row.playbook)
    if playbook is None:
        raise PlaybookNotFoundError(f"playbook {row.playbook!r} is no longer loaded")
    return playbook


@dataclass(frozen=True)
class ApproveResult:
    proposal: Proposal
    execution_id: int | None  # set when this approval reached the quorum


def approve(
    session: Session,
    *,
    proposal_id: int,
    principal: str,
    role: str,
    digest: str,
    playbooks: Mapping[str, Playbook],
    now: datetime,
    wake: Callable[[], None] | None = None,
) -> ApproveResult:
    """One approval of exactly `digest`; the one reaching the quorum creates the execution.

    `wake` runs after the caller commits, so the executor starts at once and finds the row.
    """
    row = _lock(session, proposal_id)
    _require_open(session, row, now)
    playbook = _playbook_for(row, playbooks)
    if role not in playbook.approval.roles:
        raise ApproverRoleError(
            f"playbook {playbook.name} may be approved by {', '.join(playbook.approval.roles)}; "
            f"not by role {role!r}"
        )
    if principal == row.proposed_by:
        raise FourEyesError(f"{principal!r} proposed this and cannot approve it (four eyes)")
    if digest != row.params_digest:
        raise DigestMismatchError(
            "the digest does not match the proposal (playbook, version, parameters, target); "
            "review the current proposal and approve its digest"
        )
    if playbook.version != row.playbook_version:
        raise PlaybookChangedError(
            f"playbook {playbook.name} is now version {playbook.version}, the proposal was for "
            f"version {row.playbook_version}; propose it again"
        )
    stored = params_digest(
        row.playbook, row.playbook_version, row.params, row.target, dry_run=row.dry_run
    )
    if stored != row.params_digest:
        raise DigestMismatchError(
            "the proposal's stored parameters no longer match its digest; propose it again"
        )
    decided = session.execute(
        sa.select(ApprovalRow).where(ApprovalRow.proposal_id == row.id)
    ).scalars()
    approvers = {a.principal for a in decided if a.decision == Decision.APPROVE}
    if principal in approvers:
        raise DuplicateApprovalError(f"{principal!r} already approved proposal {row.id}")
    reaches_quorum = len(approvers) + 1 >= row.quorum
    if reaches_quorum and row.dry_run:
        guards.check_lock(session, row.target)  # a dry run touches nothing: only the lock
    elif reaches_quorum:
        guards.check_execute(session, playbook, row.target, now, actor=principal)
    session.add(
        ApprovalRow(
            proposal_id=row.id,
            principal=principal,
            role=role,
            decision=Decision.APPROVE.value,
            reason=None,
            created_at=now,
            digest=digest,
        )
    )
    _flush(session)
    audit.append(
        session,
        actor=principal,
        action="approve",
        subject=proposal_subject(row.id),
        data={
            "role": role,
            "digest": digest,
            "playbook": row.playbook,
            "version": row.playbook_version,
            "target": row.target,
            "approvals": len(approvers) + 1,
            "quorum": row.quorum,
        },
        now=now,
    )
    execution_id = None
    if reaches_quorum:
        _transition(session, row, ProposalStatus.APPROVED, decided_at=now)
        execution = ExecutionRow(
            proposal_id=row.id,
            playbook=row.playbook,
            target=row.target,
            status=ExecutionStatus.PENDING.value,
            dry_run=row.dry_run,
            owner=None,
            lease_until=None,
            created_at=now,
            started_at=None,
            finished_at=None,
            vault_token_accessor=None,
            vault_lease_ids=[],
            error=None,
        )
        session.add(execution)
        _flush(session)
        execution_id = execution.id
        audit.append(
            session,
            actor=principal,
            action="approved",
            subject=proposal_subject(row.id),
            data={
                "digest": row.params_digest,
                "approvers": sorted(approvers | {principal}),
                "execution_id": execution.id,
                "dry_run": row.dry_run,
            },
            now=now,
        )
        if wake is not None:
            _after_commit(session, wake)
    return ApproveResult(get_proposal(session, row.id), execution_id)


#: The unique constraints a concurrent decision can hit: PostgreSQL names the constraint,
#: SQLite names the columns ("UNIQUE constraint failed: executions.target").
_CONSTRAINTS = {
    "uq_executions_active_target": ("executions.target",),
    "uq_approvals_proposal_principal": ("approvals.proposal_id", "approvals.principal"),
    "uq_executions_proposal_id": ("executions.proposal_id",),
}


def _violated(exc: IntegrityError) -> str | None:
    """Which known unique constraint an IntegrityError broke (None: another error)."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name in _CONSTRAINTS:
        return str(name)
    text = str(exc.orig)
    if "UNIQUE constraint failed:" in text:
        columns = set(text.split("UNIQUE constraint failed:", 1)[1].strip().split(", "))
        for constraint, known in _CONSTRAINTS.items():
            if columns == set(known):
                return constraint
    return None


def _flush(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        violated = _violated(exc)
        if violated == "uq_executions_active_target":
            raise guards.TargetLockedError(
                "the target already has an active execution; one target never runs two at once"
            ) from None
        if violated == "uq_approvals_proposal_principal":
            raise DuplicateApprovalError("you already decided on this proposal") from None
        if violated is not None:  # one proposal, one execution
            raise AlreadyDecidedError("the proposal was decided concurrently") from None
        raise  # not a race we know: a bug or a broken row, logged as a 500 by the API


def _after_commit(session: Session, callback: Callable[[], None]) -> None:
    def fire(_: Session) -> None:
        callback()

    event.listen(session, "after_commit", fire, once=True)


def reject(
    session: Session,
    *,
    proposal_id: int,
    principal: str,
    role: str,
    reason: str,
    playbooks: Mapping[str, Playbook],
    now: datetime,
) -> Proposal:
    """Reject with a reason; one rejection by an allowed approver ends the proposal."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequiredError("a rejection needs a reason")
    row = _lock(session, proposal_id)
    _require_open(session, row, now)
    # A proposal whose playbook was removed can still be rejected by the default roles.
    playbook = playbooks.get(row.playbook)
    roles = list(playbook.approval.roles) if playbook is not None else list(APPROVER_ROLES)
    if role not in roles:
        raise ApproverRoleError(
            f"playbook {row.playbook} may be decided by {', '.join(roles)}; not by role {role!r}"
        )
    existing = session.execute(
        sa.select(ApprovalRow)
        .where(ApprovalRow.proposal_id == row.id)
        .where(ApprovalRow.principal == principal)
    ).scalar_one_or_none()
    if existing is not None:  # an earlier approval by the same person becomes a rejection
        existing.decision = Decision.REJECT.value
        existing.reason = reason
        existing.created_at = now
        existing.role = role
    else:
        session.add(
            ApprovalRow(
                proposal_id=row.id,
                principal=principal,
                role=role,
                decision=Decision.REJECT.value,
                reason=reason,
                created_at=now,
                digest=row.params_digest,
            )
        )
    _flush(session)
    _transition(session, row, ProposalStatus.REJECTED, decided_at=now, reason=reason)
    audit.append(
        session,
        actor=principal,
        action="reject",
        subject=proposal_subject(row.id),
        data={"role": role, "reason": reason, "digest": row.params_digest},
        now=now,
    )
    return get_proposal(session, row.id)


def cancel(
    session: Session,
    *,
    proposal_id: int,
    principal: str,
    now: datetime,
    reason: str | None = None,
) -> Proposal:
    row = _lock(session, proposal_id)
    _require_open(session, row, now)
    text = (reason or "").strip() or None
    _transition(session, row, ProposalStatus.CANCELLED, decided_at=now, reason=text)
    audit.append(
        session,
        actor=principal,
        action="cancel",
        subject=proposal_subject(row.id),
        data={"reason": text, "digest": row.params_digest},
        now=now,
    )
    return get_proposal(session, row.id)


def expire_stale(session: Session, *, now: datetime) -> list[int]:
    """Mark every proposal past its expiry as expired; returns their ids. Idempotent."""
    ids = list(
        session.execute(
            sa.select(ProposalRow.id)
            .where(ProposalRow.status == PROPOSED)
            .where(ProposalRow.expires_at <= now)
            .order_by(ProposalRow.id)
        ).scalars()
    )
    expired = []
    for proposal_id in ids:
        row = _lock(session, proposal_id)
        if row.status != PROPOSED:
            continue
        _expire(session, row, now)
        expired.append(proposal_id)
    return expired


def auto_propose(
    session: Session,
    *,
    playbooks: Mapping[str, Playbook],
    kind: str | Sequence[str],
    service: str | None,
    suspect: bool,
    target: str,
    evidence: Mapping[str, Any],
    now: datetime,
    proposed_by: str = "daemon",
    targets: Collection[str] | None = None,
) -> list[Proposal]:
    """The daemon's path: propose each playbook that matches one of the event's kinds (an
    incident is "incident" plus the kinds of its triggers, "alarm" and "breach") and, when
    given, the targets of its series, once, unless an identical one is open.

    Guard refusals are skipped (a breaker escalation is audited once by the guard); playbooks
    whose required parameters have no default cannot be proposed automatically.
    """
    made = []
    matched: dict[str, Playbook] = {}
    for one in [kind] if isinstance(kind, str) else kind:
        for playbook in match_playbooks(playbooks.values(), one, service, suspect, targets):
            matched.setdefault(playbook.name, playbook)
    for playbook in matched.values():
        if any(p.required for p in playbook.parameters.values()):
            continue
        typed = validate_params(playbook, {})
        digest = params_digest(playbook.name, playbook.version, typed, target, dry_run=False)
        open_one = session.execute(
            sa.select(ProposalRow.id)
            .where(ProposalRow.params_digest == digest)
            .where(ProposalRow.status == PROPOSED)
            .limit(1)
        ).first()
        if open_one is not None:
            continue
        try:
            # Checked first and outside any savepoint: a breaker's escalation entry must stay.
            guards.check_propose(session, playbook, target, now, actor=proposed_by)
        except GuardError:
            continue
        made.append(
            propose(
                session,
                playbook=playbook,
                params=typed,
                target=target,
                proposed_by=proposed_by,
                evidence=evidence,
                now=now,
            )
        )
    return made


def breach_evidence(session: Session, series_id: int) -> dict[str, Any] | None:
    """A snapshot of a series' predicted breach (its row changes every forecast), or None."""
    found = session.execute(
        sa.select(BreachRow, SeriesRow)
        .join(SeriesRow, SeriesRow.id == BreachRow.series_id)
        .where(BreachRow.series_id == series_id)
    ).first()
    if found is None:
        return None
    breach, series = found
    return {
        "series_id": series.id,
        "target": series.target,
        "service": series.service,
        "labels": dict(series.labels),
        "threshold": breach.threshold,
        "direction": breach.direction,
        "probability": breach.probability,
        "eta": breach.eta,
        "warning": breach.warning,
        "warning_since": breach.warning_since,
        "model": breach.model,
        "forecast_made_at": breach.made_at,
    }


# -- reading ---------------------------------------------------------------------------------


def get_proposal(session: Session, proposal_id: int) -> Proposal:
    row = session.execute(
        sa.select(ProposalRow)
        .where(ProposalRow.id == proposal_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise ProposalNotFoundError(f"no proposal {proposal_id}")
    approvals = list(
        session.execute(
            sa.select(ApprovalRow)
            .where(ApprovalRow.proposal_id == proposal_id)
            .order_by(ApprovalRow.id)
        ).scalars()
    )
    return Proposal.from_row(row, approvals)


def list_proposals(
    session: Session,
    *,
    status: str | None = None,
    playbook: str | None = None,
    target: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[Proposal]:
    """Newest first; page with `before` = the smallest id of the previous page.

    Without their evidence (not even read): `get_proposal` has it, one proposal at a time.
    """
    query = (
        sa.select(ProposalRow)
        .options(defer(ProposalRow.evidence, raiseload=True))
        .order_by(ProposalRow.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(ProposalRow.status == status)
    if playbook is not None:
        query = query.where(ProposalRow.playbook == playbook)
    if target is not None:
        query = query.where(ProposalRow.target == target)
    if before is not None:
        query = query.where(ProposalRow.id < before)
    rows = session.execute(query).scalars()
    return [Proposal.from_row(r, with_evidence=False) for r in rows]


def execution_for(session: Session, proposal_id: int) -> Execution | None:
    row = session.execute(
        sa.select(ExecutionRow).where(ExecutionRow.proposal_id == proposal_id)
    ).scalar_one_or_none()
    return None if row is None else get_execution(session, row.id)


def get_execution(session: Session, execution_id: int) -> Execution:
    row = session.get(ExecutionRow, execution_id, populate_existing=True)
    if row is None:
        raise ExecutionNotFoundError(f"no execution {execution_id}")
    steps = list(
        session.execute(
            sa.select(ExecutionStepRow)
            .where(ExecutionStepRow.execution_id == execution_id)
            .order_by(ExecutionStepRow.id)
        ).scalars()
    )
    return Execution.from_row(row, steps)
