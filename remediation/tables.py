"""Tables owned by remediation: proposals, approvals, executions, their steps, the audit chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime

# Executions in these states hold their target's lock (see the partial unique index below).
ACTIVE_EXECUTION_STATES = ("pending", "running")


class ProposalRow(Base):
    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    playbook: Mapped[str] = mapped_column(sa.String(128))
    playbook_version: Mapped[int] = mapped_column(sa.Integer)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    # sha256 over playbook name + version + params + target (remediation.playbooks.params_digest)
    params_digest: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(255))
    # proposed|approved|rejected|expired|cancelled|running|succeeded|failed|rolled_back|interrupted
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    proposed_by: Mapped[str] = mapped_column(sa.String(255))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quorum: Mapped[int] = mapped_column(sa.Integer)
    # A dry run records what would run without running it or issuing credentials.
    dry_run: Mapped[bool] = mapped_column(sa.Boolean)

    __table_args__ = (sa.Index("ix_proposals_playbook_target", "playbook", "target"),)


class ApprovalRow(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("proposals.id", ondelete="CASCADE")
    )
    principal: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16))
    decision: Mapped[str] = mapped_column(sa.String(8))  # approve | reject
    reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The digest this decision was made on: what exactly was approved.
    digest: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (
        sa.UniqueConstraint("proposal_id", "principal", name="uq_approvals_proposal_principal"),
    )


class ExecutionRow(Base):
    __tablename__ = "executions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    # Unique: whatever races happen above, one proposal never gets two executions.
    proposal_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("proposals.id", ondelete="CASCADE"), unique=True
    )
    playbook: Mapped[str] = mapped_column(sa.String(128))
    target: Mapped[str] = mapped_column(sa.String(255))
    # pending|running|succeeded|failed|rolled_back|interrupted
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    dry_run: Mapped[bool] = mapped_column(sa.Boolean)
    owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    vault_token_accessor: Mapped[str | None] = mapped_column(sa.String(255))
    vault_lease_ids: Mapped[list[str]] = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        # The target lock's backstop: at most one pending or running execution per target.
        sa.Index(
            "uq_executions_active_target",
            "target",
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'running')"),
            postgresql_where=sa.text("status IN ('pending', 'running')"),
        ),
        sa.Index("ix_executions_playbook_target", "playbook", "target"),
    )


class ExecutionStepRow(Base):
    __tablename__ = "execution_steps"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    idx: Mapped[int] = mapped_column(sa.Integer)
    phase: Mapped[str] = mapped_column(sa.String(16))  # main | verify | rollback
    name: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16))  # running|succeeded|failed|skipped
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(sa.Integer)
    output: Mapped[str] = mapped_column(sa.Text)  # redacted before it is stored


class AuditRow(Base):
    """One hash-chained entry: hash = sha256(canonical JSON of seq, ts, actor, action, subject,
    data, prev_hash); see remediation.audit."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(255), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditHeadRow(Base):
    """A single row locked by every append, so concurrent appends queue instead of forking."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.Integer)
    hash: Mapped[str] = mapped_column(sa.String(64))
