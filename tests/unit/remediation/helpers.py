"""Playbooks built in code for the remediation tests, a pinned clock, and a proposal taken
through approval to its pending execution."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from remediation import service
from remediation.playbooks import Playbook

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


def make_playbook(
    name: str = "restart",
    *,
    version: int = 1,
    quorum: int = 1,
    roles: list[str] | None = None,
    expires_after: str = "1h",
    cooldown: str = "10m",
    breaker_max_runs: int = 3,
    breaker_window: str = "1h",
    **extra: Any,
) -> Playbook:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "parameters": {
            "deployment": {"type": "string", "pattern": "[a-z0-9-]+"},
            "replicas": {"type": "int", "default": 1},
        },
        "steps": [
            {
                "kind": "command",
                "name": "restart",
                "argv": ["kubectl", "rollout", "restart", "deployment/{{ params.deployment }}"],
            }
        ],
        "guards": {
            "cooldown": cooldown,
            "breaker_max_runs": breaker_max_runs,
            "breaker_window": breaker_window,
        },
        "approval": {
            "quorum": quorum,
            "roles": roles or ["approver", "admin"],
            "expires_after": expires_after,
        },
    }
    data.update(extra)
    return Playbook.model_validate(data)


def later(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def proposed(
    sessions: sessionmaker[Session],
    book: Playbook,
    *,
    target: str = "cart",
    now: datetime,
    dry_run: bool = False,
) -> service.Proposal:
    """Olga proposes `book` for `target` (parameter deployment = target), committed."""
    with sessions() as session:
        proposal = service.propose(
            session,
            playbook=book,
            params={"deployment": target},
            target=target,
            proposed_by="olga",
            evidence={},
            now=now,
            dry_run=dry_run,
        )
        session.commit()
    return proposal


def approved(
    sessions: sessionmaker[Session],
    book: Playbook,
    *,
    target: str = "cart",
    now: datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Olga proposes `book` for `target` (parameter deployment = target) and Ada approves it;
    returns the pending execution's id."""
    now = now or datetime.now(UTC)
    proposal = proposed(sessions, book, target=target, now=now, dry_run=dry_run)
    with sessions() as session:
        result = service.approve(
            session,
            proposal_id=proposal.id,
            principal="ada",
            role="approver",
            digest=proposal.params_digest,
            playbooks={book.name: book},
            now=now,
        )
        session.commit()
    assert result.execution_id is not None
    return result.execution_id


def command_playbook(name: str, **match: Any) -> Playbook:
    """A parameterless playbook of one harmless command, matching events by `match`."""
    return make_playbook(
        name,
        parameters={},
        steps=[{"kind": "command", "name": name, "argv": ["true", "{{ target }}"]}],
        match=match,
    )


def audit_approvals(
    sessions: sessionmaker[Session],
    checkpoint: Path,
    count: int,
    *,
    start: int = 0,
    data: Callable[[int], dict[str, Any]] = lambda i: {"n": i},
    now: Callable[[int], datetime] | None = None,
) -> None:
    """`count` anchored audit entries, one transaction each, as approvals of proposals
    start..start+count-1 would write them."""
    from remediation import audit

    for i in range(start, start + count):
        with sessions() as session:
            audit.append(
                session,
                actor="alice",
                action="approve",
                subject=f"proposal:{i}",
                data=data(i),
                now=None if now is None else now(i),
                checkpoint=checkpoint,
            )
            session.commit()
