"""Remediation's domain types and errors: proposals, approvals, executions, audit entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.errors import ErrorKind, PrognosError
from remediation.tables import (
    ApprovalRow,
    AuditRow,
    ExecutionRow,
    ExecutionStepRow,
    ProposalRow,
)


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"


FINISHED_EXECUTION_STATES = (
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.ROLLED_BACK,
    ExecutionStatus.INTERRUPTED,
)


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


# -- errors ----------------------------------------------------------------------------------


class RemediationError(PrognosError):
    """Root of remediation errors.

    `persist` is True when the refusal itself changed state (a proposal marked expired, an
    escalation audited): the caller commits the session before reporting the error.
    """

    code = "remediation_error"
    kind = ErrorKind.INTERNAL
    persist = False


class ProposalNotFoundError(RemediationError):
    code = "proposal_not_found"
    kind = ErrorKind.NOT_FOUND


class ExecutionNotFoundError(RemediationError):
    code = "execution_not_found"
    kind = ErrorKind.NOT_FOUND


class PlaybookNotFoundError(RemediationError):
    code = "playbook_not_found"
    kind = ErrorKind.NOT_FOUND


class AlreadyDecidedError(RemediationError):
    code = "proposal_already_decided"
    kind = ErrorKind.CONFLICT


class ProposalExpiredError(RemediationError):
    code = "proposal_expired"
    kind = ErrorKind.CONFLICT
    persist = True


class FourEyesError(RemediationError):
    code = "four_eyes"
    kind = ErrorKind.CONFLICT


class DuplicateApprovalError(RemediationError):
    code = "already_approved_by_you"
    kind = ErrorKind.CONFLICT


class DigestMismatchError(RemediationError):
    code = "digest_mismatch"
    kind = ErrorKind.CONFLICT


class PlaybookChangedError(RemediationError):
    code = "playbook_changed"
    kind = ErrorKind.CONFLICT


class ApproverRoleError(RemediationError):
    code = "approver_role"
    kind = ErrorKind.FORBIDDEN


class EvidenceInvalidError(RemediationError):
    """Evidence that is not JSON (NaN, Infinity) or larger than a proposal keeps."""

    code = "evidence_invalid"
    kind = ErrorKind.INVALID


class ReasonRequiredError(RemediationError):
    code = "reason_required"
    kind = ErrorKind.INVALID


class GuardError(RemediationError):
    """A guard refused: cooldown, circuit breaker or target lock."""

    code = "guard_refused"
    kind = ErrorKind.CONFLICT


class CooldownError(GuardError):
    code = "cooldown"


class BreakerOpenError(GuardError):
    code = "circuit_breaker_open"
    persist = True  # the escalation is audited


class TargetLockedError(GuardError):
    code = "target_locked"


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    id: int
    proposal_id: int
    principal: str
    role: str
    decision: Decision
    reason: str | None
    created_at: datetime
    digest: str

    @classmethod
    def from_row(cls, row: ApprovalRow) -> Approval:
        return cls(
            id=row.id,
            proposal_id=row.proposal_id,
            principal=row.principal,
            role=row.role,
            decision=Decision(row.decision),
            reason=row.reason,
            created_at=row.created_at,
            digest=row.digest,
        )


@dataclass(frozen=True)
class Proposal:
    id: int
    playbook: str
    playbook_version: int
    params: dict[str, Any]
    params_digest: str
    target: str
    status: ProposalStatus
    proposed_by: str
    reason: str | None
    #: None where it was not read (lists leave it out: up to 64 KB each)
    evidence: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    quorum: int
    dry_run: bool = False
    approvals: list[Approval] = field(default_factory=list)

    @classmethod
    def from_row(
        cls,
        row: ProposalRow,
        approvals: list[ApprovalRow] | None = None,
        *,
        with_evidence: bool = True,
    ) -> Proposal:
        return cls(
            id=row.id,
            playbook=row.playbook,
            playbook_version=row.playbook_version,
            params=dict(row.params),
            params_digest=row.params_digest,
            target=row.target,
            status=ProposalStatus(row.status),
            proposed_by=row.proposed_by,
            reason=row.reason,
            evidence=dict(row.evidence) if with_evidence else None,
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
            quorum=row.quorum,
            dry_run=row.dry_run,
            approvals=[Approval.from_row(a) for a in approvals or []],
        )


@dataclass(frozen=True)
class ExecutionStep:
    idx: int
    phase: str
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str

    @classmethod
    def from_row(cls, row: ExecutionStepRow) -> ExecutionStep:
        return cls(
            idx=row.idx,
            phase=row.phase,
            name=row.name,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            exit_code=row.exit_code,
            output=row.output,
        )


@dataclass(frozen=True)
class Execution:
    id: int
    proposal_id: int
    playbook: str
    target: str
    status: ExecutionStatus
    dry_run: bool
    owner: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    vault_token_accessor: str | None
    error: str | None
    steps: list[ExecutionStep] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: ExecutionRow, steps: list[ExecutionStepRow] | None = None) -> Execution:
        return cls(
            id=row.id,
            proposal_id=row.proposal_id,
            playbook=row.playbook,
            target=row.target,
            status=ExecutionStatus(row.status),
            dry_run=row.dry_run,
            owner=row.owner,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            vault_token_accessor=row.vault_token_accessor,
            error=row.error,
            steps=[ExecutionStep.from_row(s) for s in steps or []],
        )


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: datetime
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditEntry:
        return cls(
            seq=row.seq,
            ts=row.ts,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            data=dict(row.data),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )
