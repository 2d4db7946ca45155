"""Fencing: an executor that lost its claim (taken over, marked interrupted, or its lease ran
out unrenewed) stops before its next step, never records the outcome, and revokes what it holds.

Time is a fake clock moved by the test; the lease heartbeat never gets to run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core.clock import FixedClock
from remediation.executor import Executor
from remediation.tables import ExecutionRow
from tests.unit.remediation.helpers import approved
from tests.unit.remediation.test_executor import (
    VAULT,
    FakeBroker,
    Sessions,
    audit_actions,
    executor,
    lite,
    playbook,
    proposal_status,
    steps_of,
)

__all__ = ["lite"]  # the fixture, imported

LEASE_S = 60


def checkpoint(timeout: str = "5s") -> dict[str, Any]:
    """A wait_until step: its PromQL query is the test's hook between two steps."""
    return {
        "kind": "wait_until",
        "name": "checkpoint",
        "query": "up",
        "timeout": timeout,
        "interval": "1s",
    }


SECOND = {"kind": "python", "name": "second", "action": "noop"}
UNDO = {"kind": "python", "name": "undo", "action": "noop"}


def run_with(
    lite: Sessions,
    steps: list[dict[str, Any]],
    during: Callable[[FixedClock, int], bool],
    broker: FakeBroker,
) -> tuple[Executor, int]:
    clock = FixedClock(datetime.now(UTC))
    book = playbook(steps, vault=VAULT, rollback=[UNDO])
    execution_id = approved(lite, book)
    ex = executor(
        lite,
        book,
        broker,
        lease_s=LEASE_S,
        clock=clock,
        prometheus_query=lambda query: during(clock, execution_id),
    )
    ex.run(execution_id)
    return ex, execution_id


def ran(lite: Sessions, execution_id: int) -> list[tuple[str, str, str]]:
    return [(r.phase, r.name, r.status) for r in steps_of(lite, execution_id)]


def test_a_run_whose_lease_ran_out_stops_before_its_next_step_and_revokes(lite: Sessions) -> None:
    def lease_runs_out(clock: FixedClock, execution_id: int) -> bool:
        clock.advance(timedelta(seconds=LEASE_S + 1))  # no renewal came in time
        return True

    broker = FakeBroker()
    ex, execution_id = run_with(lite, [checkpoint(), SECOND], lease_runs_out, broker)

    assert ran(lite, execution_id) == [("main", "checkpoint", "succeeded")]
    state = ex.get(execution_id)
    assert state.status == "interrupted", state.error
    assert "claim was lost before main step 'second'" in (state.error or "")
    assert proposal_status(lite, execution_id) == "interrupted"
    assert broker.revoked == [f"acc-{execution_id}"]
    assert audit_actions(lite, execution_id)[-2:] == ["credentials_revoked", "execution_finished"]


def test_a_run_taken_over_by_another_process_stops_and_leaves_its_verdict(lite: Sessions) -> None:
    other_broker = FakeBroker()

    def taken_over(clock: FixedClock, execution_id: int) -> bool:
        clock.advance(timedelta(seconds=LEASE_S + 1))
        book = playbook([SECOND])
        other = executor(lite, book, other_broker, owner="other:2", clock=clock)
        assert other.recover() == [execution_id]
        return True

    broker = FakeBroker()
    ex, execution_id = run_with(lite, [checkpoint(), SECOND], taken_over, broker)

    assert ran(lite, execution_id) == [("main", "checkpoint", "succeeded")]
    state = ex.get(execution_id)
    # The other process's verdict stands: the loser neither runs on nor writes an outcome.
    assert state.status == "interrupted" and "needs attention" in (state.error or "")
    assert other_broker.leftovers == [
        ([f"acc-{execution_id}"], [f"database/creds/readonly/lease-{execution_id}"])
    ]
    assert broker.revoked == [f"acc-{execution_id}"]
    assert "execution_finished" not in audit_actions(lite, execution_id)


def test_a_run_marked_interrupted_under_a_live_lease_stops_and_is_not_succeeded(
    lite: Sessions,
) -> None:
    def marked(clock: FixedClock, execution_id: int) -> bool:
        with lite() as session:
            session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == execution_id)
                .values(status="interrupted", error="stopped by an operator")
            )
            session.commit()
        return True

    broker = FakeBroker()
    ex, execution_id = run_with(lite, [checkpoint(), SECOND], marked, broker)

    assert ran(lite, execution_id) == [("main", "checkpoint", "succeeded")]
    state = ex.get(execution_id)
    assert state.status == "interrupted" and state.error == "stopped by an operator"
    assert broker.revoked == [f"acc-{execution_id}"]


def test_a_lost_claim_runs_no_rollback_either(lite: Sessions) -> None:
    def fails_after_losing(clock: FixedClock, execution_id: int) -> bool:
        clock.advance(timedelta(seconds=LEASE_S + 1))
        return False  # the step fails: the rollback is next, but the claim is gone

    broker = FakeBroker()
    ex, execution_id = run_with(lite, [checkpoint("50ms")], fails_after_losing, broker)

    assert ran(lite, execution_id) == [("main", "checkpoint", "failed")]
    state = ex.get(execution_id)
    assert state.status == "interrupted"
    assert "before rollback step 'undo'" in (state.error or "")
    assert broker.revoked == [f"acc-{execution_id}"]


def test_a_live_claim_is_renewed_by_each_step_start(lite: Sessions) -> None:
    """Steps that together outlast the lease still run when each starts under a live claim."""

    def half_a_lease(clock: FixedClock, execution_id: int) -> bool:
        clock.advance(timedelta(seconds=LEASE_S * 0.6))
        return True

    broker = FakeBroker()
    ex, execution_id = run_with(
        lite, [checkpoint(), checkpoint() | {"name": "again"}, SECOND], half_a_lease, broker
    )
    assert ex.get(execution_id).status == "succeeded"
    assert [r[1] for r in ran(lite, execution_id)] == ["checkpoint", "again", "second"]
