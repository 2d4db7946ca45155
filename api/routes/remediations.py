"""The approval workflow over HTTP: proposals, decisions, executions, playbooks, audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.context import AppContext
from api.deps import ROW_ID_MAX, Approver, ContextDep, Operator, RowId, SessionDep, Viewer
from api.problems import declare
from core.errors import ErrorKind
from remediation import audit, service
from remediation.domain import (
    Execution,
    PlaybookNotFoundError,
    Proposal,
    ProposalStatus,
    RemediationError,
)
from remediation.playbooks import Playbook

router = APIRouter(prefix="/v1", tags=["remediation"])


class EvidenceNotFoundError(RemediationError):
    code = "evidence_not_found"
    kind = ErrorKind.NOT_FOUND


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RemediationCreate(_Body):
    playbook: str = Field(min_length=1, max_length=128)
    target: str = Field(min_length=1, max_length=255, description="e.g. the service")
    params: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="what caused it, e.g. {incident_id: 12}; {breach_series_id: N} attaches a "
        f"snapshot of that series' predicted breach; at most {service.MAX_EVIDENCE_BYTES:,} "
        "bytes as JSON",
    )
    dry_run: bool = Field(default=False, description="record what would run, run nothing")


class ApproveBody(_Body):
    digest: str = Field(
        min_length=64, max_length=64, description="the proposal's digest, as reviewed"
    )


class RejectBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


class CancelBody(_Body):
    reason: str | None = Field(default=None, max_length=2000)


class ApprovalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    principal: str
    role: str
    decision: str
    reason: str | None
    created_at: datetime
    digest: str


class StepRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    idx: int
    phase: str
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str


class ExecutionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    proposal_id: int
    playbook: str
    target: str
    status: str
    dry_run: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    steps: list[StepRead]


class RemediationSummary(BaseModel):
    """A proposal as lists show it: its evidence and decisions are on its own page."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    playbook: str
    playbook_version: int
    target: str
    params: dict[str, Any]
    digest: str = Field(validation_alias=AliasChoices("digest", "params_digest"))
    status: str
    proposed_by: str
    reason: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    quorum: int
    dry_run: bool


class RemediationRead(RemediationSummary):
    evidence: dict[str, Any] = Field(
        description=f"at most {service.MAX_EVIDENCE_BYTES:,} bytes as JSON"
    )
    approvals: list[ApprovalRead]
    execution: ExecutionRead | None = None


class RemediationPage(BaseModel):
    items: list[RemediationSummary] = Field(
        description="newest first; GET /v1/remediations/{id} adds evidence and decisions"
    )
    next_cursor: int | None = Field(description="pass as `before` for the next (older) page")


class PlaybookRead(BaseModel):
    name: str
    version: int
    description: str
    risk: str
    match: dict[str, Any]
    parameters: dict[str, Any]
    steps: list[dict[str, Any]]
    rollback: list[dict[str, Any]]
    verify: dict[str, Any] | None
    vault_policies: list[str]
    guards: dict[str, Any]
    approval: dict[str, Any]
    total_timeout_seconds: int


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    ts: datetime
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditRead]
    next_cursor: int | None = Field(description="pass as `after` for the next page")


# -- helpers ---------------------------------------------------------------------------------


def playbooks_of(context: AppContext) -> dict[str, Playbook]:
    """The context's playbooks, read once from settings.remediation.playbooks_dir if unset."""
    return context.loaded_playbooks()


def _prepare(session: Session, context: AppContext) -> None:
    session.info[audit.CHECKPOINT_INFO_KEY] = audit.checkpoint_for(context.settings)


def _read(proposal: Proposal, execution: Execution | None = None) -> RemediationRead:
    read = RemediationRead.model_validate(proposal)
    if execution is not None:
        read.execution = ExecutionRead.model_validate(execution)
    return read


def _full(session: Session, proposal_id: int) -> RemediationRead:
    return _read(
        service.get_proposal(session, proposal_id), service.execution_for(session, proposal_id)
    )


def _playbook_read(playbook: Playbook) -> PlaybookRead:
    dumped = playbook.model_dump(mode="json")
    return PlaybookRead(
        name=playbook.name,
        version=playbook.version,
        description=playbook.description,
        risk=playbook.risk,
        match=dumped["match"],
        parameters=dumped["parameters"],
        steps=dumped["steps"],
        rollback=dumped["rollback"],
        verify=dumped["verify"],
        vault_policies=[] if playbook.vault is None else list(playbook.vault.policies),
        guards=dumped["guards"],
        approval=dumped["approval"],
        total_timeout_seconds=int(playbook.total_timeout().total_seconds()),
    )


def _commit_refusal(session: Session, exc: RemediationError) -> None:
    # A refusal that changed state (expired, escalated) is recorded before it is reported.
    if exc.persist:
        session.commit()


# -- routes ----------------------------------------------------------------------------------


@router.post("/remediations", status_code=201, responses=declare(404, 409))
def propose(
    body: RemediationCreate, who: Operator, context: ContextDep, session: SessionDep
) -> RemediationRead:
    playbook = playbooks_of(context).get(body.playbook)
    if playbook is None:
        raise PlaybookNotFoundError(f"no playbook named {body.playbook!r}")
    _prepare(session, context)
    evidence = dict(body.evidence)
    series_id = evidence.get("breach_series_id")
    if isinstance(series_id, int) and not isinstance(series_id, bool):
        # An id past the column's range names no series (and would overflow the driver).
        in_range = abs(series_id) <= ROW_ID_MAX
        snapshot = service.breach_evidence(session, series_id) if in_range else None
        if snapshot is None:
            raise EvidenceNotFoundError(f"series {series_id} has no predicted breach")
        evidence["breach"] = snapshot
    try:
        proposal = service.propose(
            session,
            playbook=playbook,
            params=body.params,
            target=body.target,
            proposed_by=who.name,
            evidence=evidence,
            now=context.clock.now(),
            dry_run=body.dry_run,
        )
    except RemediationError as exc:
        _commit_refusal(session, exc)
        raise
    session.commit()
    return _read(proposal)


@router.get("/remediations")
def list_remediations(
    _: Viewer,
    session: SessionDep,
    status: Annotated[ProposalStatus | None, Query()] = None,
    playbook: Annotated[str | None, Query(max_length=128)] = None,
    target: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[RowId | None, Query(ge=1, description="cursor: older than this id")] = None,
) -> RemediationPage:
    items = service.list_proposals(
        session,
        status=None if status is None else status.value,
        playbook=playbook,
        target=target,
        limit=limit + 1,
        before=before,
    )
    more = len(items) > limit
    items = items[:limit]
    return RemediationPage(
        items=[RemediationSummary.model_validate(p) for p in items],
        next_cursor=items[-1].id if more and items else None,
    )


@router.get("/remediations/{proposal_id}")
def show_remediation(proposal_id: RowId, _: Viewer, session: SessionDep) -> RemediationRead:
    return _full(session, proposal_id)


@router.post("/remediations/{proposal_id}/approve", responses=declare(409))
def approve(
    proposal_id: RowId,
    body: ApproveBody,
    who: Approver,
    context: ContextDep,
    session: SessionDep,
) -> RemediationRead:
    _prepare(session, context)
    try:
        service.approve(
            session,
            proposal_id=proposal_id,
            principal=who.name,
            role=who.role.value,
            digest=body.digest,
            playbooks=playbooks_of(context),
            now=context.clock.now(),
            wake=context.wake_executor,
        )
    except RemediationError as exc:
        _commit_refusal(session, exc)
        raise
    session.commit()  # the wake hook runs now, after the execution row is visible
    return _full(session, proposal_id)


@router.post("/remediations/{proposal_id}/reject", responses=declare(409))
def reject(
    proposal_id: RowId,
    body: RejectBody,
    who: Approver,
    context: ContextDep,
    session: SessionDep,
) -> RemediationRead:
    _prepare(session, context)
    try:
        service.reject(
            session,
            proposal_id=proposal_id,
            principal=who.name,
            role=who.role.value,
            reason=body.reason,
            playbooks=playbooks_of(context),
            now=context.clock.now(),
        )
    except RemediationError as exc:
        _commit_refusal(session, exc)
        raise
    session.commit()
    return _full(session, proposal_id)


@router.post("/remediations/{proposal_id}/cancel", responses=declare(409))
def cancel(
    proposal_id: RowId,
    who: Operator,
    context: ContextDep,
    session: SessionDep,
    body: CancelBody | None = None,
) -> RemediationRead:
    _prepare(session, context)
    try:
        service.cancel(
            session,
            proposal_id=proposal_id,
            principal=who.name,
            reason=None if body is None else body.reason,
            now=context.clock.now(),
        )
    except RemediationError as exc:
        _commit_refusal(session, exc)
        raise
    session.commit()
    return _full(session, proposal_id)


@router.get("/executions/{execution_id}")
def show_execution(execution_id: RowId, _: Viewer, session: SessionDep) -> ExecutionRead:
    return ExecutionRead.model_validate(service.get_execution(session, execution_id))


@router.get("/playbooks")
def list_playbooks(_: Viewer, context: ContextDep) -> list[PlaybookRead]:
    return [_playbook_read(p) for _, p in sorted(playbooks_of(context).items())]


@router.get("/audit")
def list_audit(
    _: Viewer,
    session: SessionDep,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    after: Annotated[
        RowId | None, Query(ge=0, description="cursor: entries after this seq")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    items = audit.entries(session, subject=subject, after=after, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return AuditPage(
        items=[AuditRead.model_validate(e) for e in items],
        next_cursor=items[-1].seq if more and items else None,
    )
