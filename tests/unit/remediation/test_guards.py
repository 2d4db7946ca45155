"""Guards: cooldown after a run, the circuit breaker with its escalation, the target lock."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from remediation import service
from remediation.domain import (
    BreakerOpenError,
    CooldownError,
    RemediationError,
    TargetLockedError,
)
from remediation.playbooks import Playbook
from remediation.tables import AuditRow, ExecutionRow
from tests.unit.remediation.helpers import T0, later, make_playbook

Sessions = sessionmaker[Session]


def run_once(
    sessions: Sessions, playbook: Playbook, *, target: str, at: datetime, finish: bool = True
) -> int:
    """Propose, approve and (as the executor would) finish one run; returns the execution id."""
    with sessions() as session:
        proposal = service.propose(
            session,
            playbook=playbook,
            params={"deployment": "cart"},
            target=target,
            proposed_by="olga",
            now=at,
        )
        result = service.approve(
            session,
            proposal_id=proposal.id,
            principal="alice",
            role="approver",
            digest=proposal.params_digest,
            playbooks={playbook.name: playbook},
            now=at,
        )
        assert result.execution_id is not None
        if finish:
            session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == result.execution_id)
                .values(status="succeeded", started_at=at, finished_at=at)
            )
        session.commit()
    return result.execution_id


def try_propose(sessions: Sessions, playbook: Playbook, *, target: str, at: datetime) -> None:
    with sessions() as session:
        try:
            service.propose(
                session,
                playbook=playbook,
                params={"deployment": "cart"},
                target=target,
                proposed_by="daemon",
                now=at,
            )
        except RemediationError as exc:
            if exc.persist:
                session.commit()
            raise
        session.commit()


def escalations(sessions: Sessions) -> list[AuditRow]:
    with sessions() as session:
        return list(
            session.execute(sa.select(AuditRow).where(AuditRow.action == "escalate")).scalars()
        )


def test_cooldown_per_playbook_and_target(sessions: Sessions) -> None:
    playbook = make_playbook(cooldown="10m")
    run_once(sessions, playbook, target="cart", at=T0)
    with pytest.raises(CooldownError):
        try_propose(sessions, playbook, target="cart", at=later(9))
    try_propose(sessions, playbook, target="orders", at=later(9))  # another target is free
    try_propose(sessions, make_playbook("other"), target="cart", at=later(9))
    try_propose(sessions, playbook, target="cart", at=later(10))


def test_cooldown_also_refuses_the_approval(sessions: Sessions) -> None:
    playbook = make_playbook(cooldown="10m")
    with sessions() as session:
        waiting = service.propose(
            session,
            playbook=playbook,
            params={"deployment": "cart"},
            target="cart",
            proposed_by="olga",
            now=T0,
        )
        session.commit()
    run_once(sessions, playbook, target="cart", at=later(1))
    with sessions() as session, pytest.raises(CooldownError):
        service.approve(
            session,
            proposal_id=waiting.id,
            principal="bob",
            role="approver",
            digest=waiting.params_digest,
            playbooks={playbook.name: playbook},
            now=later(2),
        )


def test_breaker_stops_after_n_runs_in_the_window_and_escalates_once(sessions: Sessions) -> None:
    playbook = make_playbook(cooldown="0s", breaker_max_runs=2, breaker_window="1h")
    run_once(sessions, playbook, target="cart", at=T0)
    run_once(sessions, playbook, target="cart", at=later(5))
    for minute in (6, 7):
        with pytest.raises(BreakerOpenError):
            try_propose(sessions, playbook, target="cart", at=later(minute))
    (entry,) = escalations(sessions)
    assert entry.subject == "guard:restart:cart"
    assert entry.data["runs"] == 2 and entry.data["max_runs"] == 2
    try_propose(sessions, playbook, target="cart", at=later(61))  # the first run left the window


def test_breaker_also_refuses_execution(sessions: Sessions) -> None:
    playbook = make_playbook(cooldown="0s", breaker_max_runs=1)
    with sessions() as session:
        waiting = service.propose(
            session,
            playbook=playbook,
            params={"deployment": "cart"},
            target="cart",
            proposed_by="olga",
            now=T0,
        )
        session.commit()
    run_once(sessions, playbook, target="cart", at=later(1))
    with sessions() as session:
        with pytest.raises(BreakerOpenError):
            service.approve(
                session,
                proposal_id=waiting.id,
                principal="bob",
                role="approver",
                digest=waiting.params_digest,
                playbooks={playbook.name: playbook},
                now=later(2),
            )
        session.commit()
    assert len(escalations(sessions)) == 1


def test_a_target_never_has_two_active_executions(sessions: Sessions) -> None:
    first = make_playbook("restart", cooldown="0s")
    second = make_playbook("scale", cooldown="0s")
    with sessions() as session:
        waiting = service.propose(
            session,
            playbook=second,
            params={"deployment": "cart"},
            target="cart",
            proposed_by="olga",
            now=T0,
        )
        session.commit()
    execution_id = run_once(sessions, first, target="cart", at=T0, finish=False)
    with sessions() as session, pytest.raises(TargetLockedError):
        service.approve(
            session,
            proposal_id=waiting.id,
            principal="bob",
            role="approver",
            digest=waiting.params_digest,
            playbooks={second.name: second},
            now=later(1),
        )
    with sessions() as session:  # the executor finishes the first run: the lock is released
        session.execute(
            sa.update(ExecutionRow)
            .where(ExecutionRow.id == execution_id)
            .values(status="succeeded", finished_at=later(2))
        )
        session.commit()
    with sessions() as session:
        result = service.approve(
            session,
            proposal_id=waiting.id,
            principal="bob",
            role="approver",
            digest=waiting.params_digest,
            playbooks={second.name: second},
            now=later(3),
        )
        session.commit()
    assert result.execution_id is not None


def test_the_database_backs_the_lock_up(sessions: Sessions) -> None:
    """Even a writer that skips the guard cannot create a second active execution."""
    playbook = make_playbook()
    run_once(sessions, playbook, target="cart", at=T0, finish=False)
    with sessions() as session:
        other = service.propose(
            session,
            playbook=make_playbook("other"),
            params={"deployment": "cart"},
            target="cart",
            proposed_by="olga",
            now=T0,
        )
        session.add(
            ExecutionRow(
                proposal_id=other.id,
                playbook="other",
                target="cart",
                status="pending",
                dry_run=False,
                created_at=T0,
                vault_lease_ids=[],
            )
        )
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()
