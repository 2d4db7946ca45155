"""The approval state machine on both databases: quorum, four eyes, expiry, digests, races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from remediation import audit, service
from remediation.domain import (
    AlreadyDecidedError,
    ApproverRoleError,
    DigestMismatchError,
    DuplicateApprovalError,
    FourEyesError,
    PlaybookChangedError,
    ProposalExpiredError,
    ProposalNotFoundError,
    ProposalStatus,
    ReasonRequiredError,
    RemediationError,
)
from remediation.playbooks import InvalidParamsError, Playbook, params_digest
from remediation.tables import ApprovalRow, AuditRow, ExecutionRow, ProposalRow
from tests.unit.remediation.helpers import T0, later, make_playbook

Sessions = sessionmaker[Session]


def propose(sessions: Sessions, playbook: Playbook, **kw: Any) -> service.Proposal:
    with sessions() as session:
        proposal = service.propose(
            session,
            playbook=playbook,
            params=kw.pop("params", {"deployment": "cart"}),
            target=kw.pop("target", "cart"),
            proposed_by=kw.pop("proposed_by", "olga"),
            evidence=kw.pop("evidence", {"incident_id": 7}),
            now=kw.pop("now", T0),
            dry_run=kw.pop("dry_run", False),
        )
        session.commit()
    return proposal


def approve(
    sessions: Sessions,
    proposal: service.Proposal,
    principal: str,
    playbook: Playbook,
    *,
    role: str = "approver",
    digest: str | None = None,
    now: Any = None,
    wake: Callable[[], None] | None = None,
) -> service.ApproveResult:
    with sessions() as session:
        try:
            result = service.approve(
                session,
                proposal_id=proposal.id,
                principal=principal,
                role=role,
                digest=digest or proposal.params_digest,
                playbooks={playbook.name: playbook},
                now=now or later(1),
                wake=wake,
            )
        except RemediationError as exc:
            if exc.persist:
                session.commit()
            raise
        session.commit()
    return result


def executions(sessions: Sessions) -> list[ExecutionRow]:
    with sessions() as session:
        return list(session.execute(sa.select(ExecutionRow)).scalars())


def actions(sessions: Sessions) -> list[str]:
    with sessions() as session:
        return list(session.execute(sa.select(AuditRow.action).order_by(AuditRow.seq)).scalars())


def test_propose_types_the_parameters_applies_defaults_and_binds_a_digest(
    sessions: Sessions,
) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    assert proposal.status == ProposalStatus.PROPOSED
    assert proposal.params == {"deployment": "cart", "replicas": 1}
    assert proposal.params_digest == params_digest("restart", 1, proposal.params, "cart")
    assert proposal.expires_at == T0 + timedelta(hours=1)
    assert proposal.evidence == {"incident_id": 7}
    assert actions(sessions) == ["propose"]


@pytest.mark.parametrize(
    "params",
    [{}, {"deployment": "Cart!"}, {"deployment": "cart", "replicas": "many"}, {"x": 1}],
)
def test_propose_refuses_parameters_that_do_not_fit(sessions: Sessions, params: Any) -> None:
    with sessions() as session, pytest.raises(InvalidParamsError):
        service.propose(
            session,
            playbook=make_playbook(),
            params=params,
            target="cart",
            proposed_by="olga",
            now=T0,
        )


def test_propose_refuses_a_target_that_could_inject_into_queries(sessions: Sessions) -> None:
    with sessions() as session, pytest.raises(service.InvalidTargetError):
        service.propose(
            session,
            playbook=make_playbook(),
            params={"deployment": "cart"},
            target='cart"} or up{x="',
            proposed_by="olga",
            now=T0,
        )


def test_one_approval_with_quorum_one_creates_a_pending_execution_and_wakes_after_commit(
    sessions: Sessions,
) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    woken: list[int] = []

    def wake() -> None:
        # Runs after the commit: the executor must find the row from its own session.
        with sessions() as other:
            woken.append(len(list(other.execute(sa.select(ExecutionRow.id)).scalars())))

    result = approve(sessions, proposal, "alice", playbook, wake=wake)
    assert result.proposal.status == ProposalStatus.APPROVED
    assert result.execution_id is not None
    (execution,) = executions(sessions)
    assert execution.status == "pending" and execution.proposal_id == proposal.id
    assert woken == [1]
    assert actions(sessions) == ["propose", "approve", "approved"]


def test_quorum_two_needs_two_different_people(sessions: Sessions) -> None:
    playbook = make_playbook(quorum=2)
    proposal = propose(sessions, playbook)
    first = approve(sessions, proposal, "alice", playbook)
    assert first.proposal.status == ProposalStatus.PROPOSED and first.execution_id is None
    with pytest.raises(DuplicateApprovalError):
        approve(sessions, proposal, "alice", playbook, role="admin")  # one person counts once
    assert executions(sessions) == []
    second = approve(sessions, proposal, "bob", playbook)
    assert second.proposal.status == ProposalStatus.APPROVED
    assert {a.principal for a in second.proposal.approvals} == {"alice", "bob"}
    assert all(a.digest == proposal.params_digest for a in second.proposal.approvals)
    assert len(executions(sessions)) == 1


def test_the_proposer_cannot_approve_even_the_daemon(sessions: Sessions) -> None:
    playbook = make_playbook()
    mine = propose(sessions, playbook, proposed_by="olga")
    with pytest.raises(FourEyesError):
        approve(sessions, mine, "olga", playbook)
    auto = propose(sessions, playbook, proposed_by="daemon", target="orders")
    with pytest.raises(FourEyesError):
        approve(sessions, auto, "daemon", playbook)
    assert executions(sessions) == []


def test_only_the_playbooks_roles_may_approve(sessions: Sessions) -> None:
    playbook = make_playbook(roles=["admin"])
    proposal = propose(sessions, playbook)
    with pytest.raises(ApproverRoleError):
        approve(sessions, proposal, "alice", playbook, role="approver")
    approve(sessions, proposal, "root", playbook, role="admin")


def test_an_approval_is_bound_to_the_digest(sessions: Sessions) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    other = params_digest("restart", 1, {"deployment": "cart", "replicas": 5}, "cart")
    with pytest.raises(DigestMismatchError):
        approve(sessions, proposal, "alice", playbook, digest=other)
    with sessions() as session:  # someone edits the stored parameters behind the proposal
        session.execute(sa.update(ProposalRow).values(params={"deployment": "cart", "replicas": 9}))
        session.commit()
    with pytest.raises(DigestMismatchError):
        approve(sessions, proposal, "alice", playbook)
    assert executions(sessions) == []


def test_a_new_playbook_version_needs_a_new_proposal(sessions: Sessions) -> None:
    proposal = propose(sessions, make_playbook(version=1))
    with pytest.raises(PlaybookChangedError):
        approve(sessions, proposal, "alice", make_playbook(version=2))


def test_an_expired_proposal_is_denied_and_stays_expired(sessions: Sessions) -> None:
    playbook = make_playbook(expires_after="30m")
    proposal = propose(sessions, playbook)
    with pytest.raises(ProposalExpiredError):
        approve(sessions, proposal, "alice", playbook, now=later(30))
    with sessions() as session:
        assert service.get_proposal(session, proposal.id).status == ProposalStatus.EXPIRED
    with pytest.raises(ProposalExpiredError):
        approve(sessions, proposal, "bob", playbook, now=later(31))
    assert executions(sessions) == []
    assert actions(sessions) == ["propose", "expire"]


def test_expire_stale_marks_old_proposals_once(sessions: Sessions) -> None:
    playbook = make_playbook(expires_after="10m")
    old = propose(sessions, playbook)
    fresh = propose(sessions, playbook, target="orders", now=later(5))
    with sessions() as session:
        assert service.expire_stale(session, now=later(12)) == [old.id]
        session.commit()
    with sessions() as session:
        assert service.expire_stale(session, now=later(12)) == []
        assert service.get_proposal(session, fresh.id).status == ProposalStatus.PROPOSED


def test_rejection_needs_a_reason_and_ends_the_proposal(sessions: Sessions) -> None:
    playbook = make_playbook(quorum=2)
    proposal = propose(sessions, playbook)
    approve(sessions, proposal, "alice", playbook)
    with sessions() as session:
        with pytest.raises(ReasonRequiredError):
            service.reject(
                session,
                proposal_id=proposal.id,
                principal="bob",
                role="approver",
                reason="  ",
                playbooks={playbook.name: playbook},
                now=later(2),
            )
        rejected = service.reject(
            session,
            proposal_id=proposal.id,
            principal="bob",
            role="approver",
            reason="the leak is in the cache, not the pods",
            playbooks={playbook.name: playbook},
            now=later(2),
        )
        session.commit()
    assert rejected.status == ProposalStatus.REJECTED
    assert rejected.reason == "the leak is in the cache, not the pods"
    with pytest.raises(AlreadyDecidedError):
        approve(sessions, proposal, "carol", playbook)
    assert executions(sessions) == []


def test_cancel_and_not_found(sessions: Sessions) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    with sessions() as session:
        cancelled = service.cancel(session, proposal_id=proposal.id, principal="olga", now=later(1))
        session.commit()
    assert cancelled.status == ProposalStatus.CANCELLED
    with pytest.raises(AlreadyDecidedError):
        approve(sessions, proposal, "alice", playbook)
    with sessions() as session, pytest.raises(ProposalNotFoundError):
        service.cancel(session, proposal_id=999, principal="olga", now=later(1))


def test_the_audit_records_who_approved_what_digest_and_when(sessions: Sessions) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    approve(sessions, proposal, "alice", playbook, now=later(3))
    with sessions() as session:
        entries = audit.entries(session, subject=f"proposal:{proposal.id}")
    approval = next(e for e in entries if e.action == "approve")
    assert approval.actor == "alice"
    assert approval.ts == later(3)
    assert approval.data["digest"] == proposal.params_digest
    assert approval.data["target"] == "cart" and approval.data["version"] == 1


def _race(
    sessions: Sessions, proposal: service.Proposal, playbook: Playbook, who: list[str]
) -> list[Any]:
    barrier = threading.Barrier(len(who))
    outcomes: list[Any] = [None] * len(who)

    def click(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = approve(sessions, proposal, who[index], playbook)
        except RemediationError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=click, args=(i,)) for i in range(len(who))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_approvers_clicking_at_once_give_exactly_one_execution(sessions: Sessions) -> None:
    playbook = make_playbook()
    proposal = propose(sessions, playbook)
    outcomes = _race(sessions, proposal, playbook, ["alice", "bob", "carol", "dave"])
    won = [o for o in outcomes if isinstance(o, service.ApproveResult)]
    lost = [o for o in outcomes if isinstance(o, RemediationError)]
    assert len(won) == 1 and won[0].execution_id is not None
    assert len(lost) == 3 and all(isinstance(o, AlreadyDecidedError) for o in lost)
    assert len(executions(sessions)) == 1


def test_two_approvers_reaching_quorum_two_at_once_give_one_execution(sessions: Sessions) -> None:
    playbook = make_playbook(quorum=2)
    proposal = propose(sessions, playbook)
    outcomes = _race(sessions, proposal, playbook, ["alice", "bob"])
    assert all(isinstance(o, service.ApproveResult) for o in outcomes), outcomes
    assert sorted(o.execution_id is not None for o in outcomes) == [False, True]
    assert len(executions(sessions)) == 1
    with sessions() as session:
        assert service.get_proposal(session, proposal.id).status == ProposalStatus.APPROVED
        assert len(list(session.execute(sa.select(ApprovalRow)).scalars())) == 2


def test_a_dry_run_is_part_of_what_is_approved(sessions: Sessions) -> None:
    playbook = make_playbook()
    dry = propose(sessions, playbook, dry_run=True)
    real = params_digest("restart", 1, dry.params, "cart")
    assert dry.dry_run and dry.params_digest != real
    with pytest.raises(DigestMismatchError):  # approving "the real run" does not match
        approve(sessions, dry, "alice", playbook, digest=real)
    result = approve(sessions, dry, "alice", playbook)
    (execution,) = executions(sessions)
    assert execution.id == result.execution_id and execution.dry_run


def test_auto_propose_matches_skips_duplicates_and_guarded_targets(sessions: Sessions) -> None:
    auto = make_playbook(
        "scale",
        parameters={"replicas": {"type": "int", "default": 2}},
        steps=[{"kind": "http", "name": "scale", "url": "http://127.0.0.1/{{ target }}"}],
        match={"services": ["cart*"], "kinds": ["breach"]},
    )
    manual = make_playbook("restart", match={"kinds": ["breach"]})  # needs a parameter
    playbooks = {p.name: p for p in (auto, manual)}

    def run(service_name: str, kind: str = "breach") -> list[service.Proposal]:
        with sessions() as session:
            made = service.auto_propose(
                session,
                playbooks=playbooks,
                kind=kind,
                service=service_name,
                suspect=False,
                target=service_name,
                evidence={"breach": {"series_id": 3}},
                now=T0,
            )
            session.commit()
        return made

    (made,) = run("cart")
    assert made.playbook == "scale" and made.proposed_by == "daemon"
    assert made.evidence == {"breach": {"series_id": 3}}
    assert run("cart") == []  # already open
    assert run("orders") == [] and run("cart-2", kind="alarm") == []


def test_only_known_races_become_conflicts_other_integrity_errors_stay_errors(
    sessions: sessionmaker[Session],
) -> None:
    """A unique constraint a concurrent decision can hit is a 409-kind error; any other
    integrity error (here: an approval of a proposal that does not exist) is not passed off
    as "decided concurrently"."""
    from sqlalchemy.exc import IntegrityError

    with sessions() as session:
        session.add(
            ApprovalRow(
                proposal_id=987654,
                principal="alice",
                role="approver",
                decision="approve",
                reason=None,
                created_at=T0,
            )
        )
        with pytest.raises(IntegrityError):
            service._flush(session)
        session.rollback()
