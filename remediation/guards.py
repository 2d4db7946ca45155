"""Guards against runaway automation: cooldown, circuit breaker and a lock per target.

- cooldown: after a run of a playbook on a target ends, the same pair waits `guards.cooldown`;
- circuit breaker: at most `guards.breaker_max_runs` runs of the pair per `guards.breaker_window`,
  after which proposing and executing are refused and an "escalate" entry is audited (once per
  window) so a human looks at why the fix keeps not fixing;
- lock: a target never has two pending/running executions (also a partial unique index).

Dry runs do not count: they touch nothing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from remediation import audit
from remediation.domain import (
    FINISHED_EXECUTION_STATES,
    BreakerOpenError,
    CooldownError,
    TargetLockedError,
)
from remediation.playbooks import Playbook
from remediation.tables import ACTIVE_EXECUTION_STATES, AuditRow, ExecutionRow

ESCALATE = "escalate"


def guard_subject(playbook: str, target: str) -> str:
    return f"guard:{playbook}:{target}"


def check_lock(session: Session, target: str) -> None:
    active = session.execute(
        sa.select(ExecutionRow.id, ExecutionRow.status)
        .where(ExecutionRow.target == target)
        .where(ExecutionRow.status.in_(ACTIVE_EXECUTION_STATES))
        .limit(1)
    ).first()
    if active is not None:
        raise TargetLockedError(
            f"target {target!r} already has execution {active[0]} {active[1]}; "
            "one target never runs two playbooks at once",
            detail={"execution_id": active[0]},
        )


def check_cooldown(session: Session, playbook: Playbook, target: str, now: datetime) -> None:
    cooldown = playbook.guards.cooldown
    if cooldown.total_seconds() <= 0:
        return
    last = session.execute(
        sa.select(sa.func.max(ExecutionRow.finished_at))
        .where(ExecutionRow.playbook == playbook.name)
        .where(ExecutionRow.target == target)
        .where(ExecutionRow.dry_run.is_(False))
        .where(ExecutionRow.status.in_([s.value for s in FINISHED_EXECUTION_STATES]))
    ).scalar_one_or_none()
    if last is not None and last + cooldown > now:
        until = last + cooldown
        raise CooldownError(
            f"{playbook.name} ran on {target!r} recently; cooling down until "
            f"{until.isoformat(timespec='seconds')}",
            detail={"until": until.isoformat()},
        )


def runs_in_window(session: Session, playbook: Playbook, target: str, now: datetime) -> int:
    since = now - playbook.guards.breaker_window
    count = session.execute(
        sa.select(sa.func.count())
        .select_from(ExecutionRow)
        .where(ExecutionRow.playbook == playbook.name)
        .where(ExecutionRow.target == target)
        .where(ExecutionRow.dry_run.is_(False))
        .where(ExecutionRow.created_at >= since)
    ).scalar_one()
    return int(count)


def check_breaker(
    session: Session, playbook: Playbook, target: str, now: datetime, *, actor: str
) -> None:
    """Refuse once the pair ran breaker_max_runs times in the window; audit one escalation."""
    runs = runs_in_window(session, playbook, target, now)
    limit = playbook.guards.breaker_max_runs
    if runs < limit:
        return
    subject = guard_subject(playbook.name, target)
    since = now - playbook.guards.breaker_window
    already = session.execute(
        sa.select(AuditRow.seq)
        .where(AuditRow.subject == subject)
        .where(AuditRow.action == ESCALATE)
        .where(AuditRow.ts >= since)
        .limit(1)
    ).first()
    if already is None:
        audit.append(
            session,
            actor=actor,
            action=ESCALATE,
            subject=subject,
            data={
                "playbook": playbook.name,
                "target": target,
                "runs": runs,
                "max_runs": limit,
                "window_seconds": int(playbook.guards.breaker_window.total_seconds()),
                "reason": "circuit breaker open: the playbook keeps running; a human must look",
            },
            now=now,
        )
    raise BreakerOpenError(
        f"circuit breaker open for {playbook.name} on {target!r}: {runs} runs in the last "
        f"{int(playbook.guards.breaker_window.total_seconds())}s (limit {limit}); escalated",
        detail={"runs": runs, "max_runs": limit},
    )


def check_propose(
    session: Session, playbook: Playbook, target: str, now: datetime, *, actor: str
) -> None:
    check_breaker(session, playbook, target, now, actor=actor)
    check_cooldown(session, playbook, target, now)


def check_execute(
    session: Session, playbook: Playbook, target: str, now: datetime, *, actor: str
) -> None:
    """Before an execution is created (quorum reached) or claimed."""
    check_lock(session, target)
    check_breaker(session, playbook, target, now, actor=actor)
    check_cooldown(session, playbook, target, now)
