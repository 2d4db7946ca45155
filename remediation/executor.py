"""The executor: claims approved executions durably, runs their steps with Vault-issued
credentials, verifies, rolls back on failure and revokes the credentials whatever happens.

A claim is one conditional UPDATE (status pending → running with an owner and a lease); the
lease is renewed while the run lasts. A process that dies mid-run leaves a `running` row whose
lease expires: `recover()` marks it `interrupted` (needs attention, never re-run) and revokes
what its Vault token and leases left behind. Every event is appended to the audit chain with
accessors and lease ids only, never a secret value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, SystemClock, wall_seconds
from core.database import session_scope
from core.errors import PrognosError
from core.settings import RemediationSettings
from remediation import audit
from remediation.domain import Execution, ExecutionNotFoundError, ExecutionStatus
from remediation.playbooks import (
    Playbook,
    Step,
    VaultSpec,
    Verify,
    params_digest,
    render_steps,
    render_verify,
)
from remediation.redact import LOG_REDACTION, Redactor
from remediation.service import get_execution
from remediation.steps import (
    MAX_OUTPUT,
    Action,
    PrometheusQuery,
    StepContext,
    StepResult,
    check_actions,
    describe,
    run_step,
    wait_until,
)
from remediation.tables import ExecutionRow, ExecutionStepRow, ProposalRow
from remediation.vault import IssuedCredentials, VaultError, credential_ttl

log = logging.getLogger(__name__)

PENDING = ExecutionStatus.PENDING.value
RUNNING = ExecutionStatus.RUNNING.value
ACTOR = "executor"


def _subject(execution_id: int) -> str:
    return f"execution:{execution_id}"


@dataclass(frozen=True)
class _Plan:
    execution_id: int
    proposal_id: int
    dry_run: bool
    playbook: Playbook
    steps: list[Step]
    rollback: list[Step]
    verify: Verify | None


class Broker(Protocol):
    """What the executor needs from Vault (remediation.vault.CredentialBroker)."""

    def issue(self, execution_id: int, spec: VaultSpec, ttl: timedelta) -> IssuedCredentials: ...

    def revoke(self, issued: IssuedCredentials) -> list[str]: ...

    def revoke_leftovers(
        self, token_accessors: Iterable[str], lease_ids: Iterable[str]
    ) -> list[str]: ...


class ExecutionFailed(PrognosError):
    """Internal: stops the main phase; its message is what the execution's `error` says."""

    code = "execution_failed"


class ClaimLost(PrognosError):
    """Internal: this executor no longer holds the claim (taken over, marked interrupted, or
    its lease ran out unrenewed); the run stops at once: no further step, no rollback."""

    code = "claim_lost"


class Executor:
    """Runs approved executions; `start()` recovers, then a thread waits for `wake()`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker: Broker | None,
        settings: RemediationSettings,
        *,
        owner: str,
        playbooks: Mapping[str, Playbook] | Callable[[], Mapping[str, Playbook]],
        actions: Mapping[str, Action],
        prometheus_query: PrometheusQuery | None = None,
        clock: Clock | None = None,
        audit_checkpoint: Path | None = None,
        poll_interval: float = 10.0,
        max_output: int = MAX_OUTPUT,
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.owner = owner
        self.lease = settings.executor_lease
        self._playbooks = playbooks
        self.actions = dict(actions)
        self.prometheus_query = prometheus_query
        self.clock = clock or SystemClock()
        self.audit_checkpoint = audit_checkpoint
        self.poll_interval = poll_interval
        self.max_output = max_output
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def wake(self) -> None:
        """An execution became pending (an approval reached quorum): look now, not at a tick."""
        self._wake.set()

    def start(self) -> None:
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="executor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                while not self._stop.is_set():
                    execution_id = self.claim_next()
                    if execution_id is None:
                        break
                    self._execute(execution_id)
            except Exception:
                log.exception("executor loop failed; retrying at the next wake-up")
            self._wake.wait(self.poll_interval)

    def playbooks(self) -> Mapping[str, Playbook]:
        source = self._playbooks
        return source() if callable(source) else source

    # -- claiming ------------------------------------------------------------------------------

    def _audit(
        self, session: Session, action: str, execution_id: int, data: dict[str, Any]
    ) -> None:
        audit.append(
            session,
            actor=ACTOR,
            action=action,
            subject=_subject(execution_id),
            data={"owner": self.owner, **data},
            now=self.clock.now(),
            checkpoint=self.audit_checkpoint,
        )

    def claim(self, execution_id: int) -> bool:
        """pending → running with this owner and a lease; True only for the one that won."""
        now = self.clock.now()
        with session_scope(self.sessions) as session:
            result = session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == execution_id)
                .where(ExecutionRow.status == PENDING)
                .values(
                    status=RUNNING, owner=self.owner, lease_until=now + self.lease, started_at=now
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            row = session.get(ExecutionRow, execution_id)
            assert row is not None
            self._set_proposal(session, row.proposal_id, RUNNING)
            self._audit(session, "execution_claimed", execution_id, {"dry_run": row.dry_run})
            session.commit()
        return True

    def claim_next(self) -> int | None:
        """The oldest pending execution this executor managed to claim, if any."""
        with session_scope(self.sessions) as session:
            candidates = list(
                session.execute(
                    sa.select(ExecutionRow.id)
                    .where(ExecutionRow.status == PENDING)
                    .order_by(ExecutionRow.id)
                    .limit(20)
                ).scalars()
            )
        for execution_id in candidates:
            if self.claim(execution_id):
                return execution_id
        return None

    def run(self, execution_id: int) -> Execution:
        """Claim and run one execution now (in this thread); returns its final state."""
        if not self.claim(execution_id):
            with session_scope(self.sessions) as session:
                row = session.get(ExecutionRow, execution_id)
                if row is None:
                    raise ExecutionNotFoundError(f"no execution {execution_id}")
            log.info("execution %s is %s; not claimed", execution_id, row.status)
        else:
            self._execute(execution_id)
        return self.get(execution_id)

    def get(self, execution_id: int) -> Execution:
        with session_scope(self.sessions) as session:
            return get_execution(session, execution_id)

    # -- running -------------------------------------------------------------------------------

    def _plan(self, execution_id: int) -> _Plan:
        with session_scope(self.sessions) as session:
            row = session.get(ExecutionRow, execution_id)
            if row is None:
                raise ExecutionNotFoundError(f"no execution {execution_id}")
            proposal = session.get(ProposalRow, row.proposal_id)
            assert proposal is not None
            dry_run, proposal_id = proposal.dry_run, row.proposal_id
            run_dry = row.dry_run
            name, version = proposal.playbook, proposal.playbook_version
            params, target = dict(proposal.params), proposal.target
            digest = proposal.params_digest
        # The same digest as propose() and approve() compute: the dry-run flag is part of what
        # was approved (a dry run is approved on lighter checks), so it is bound here too.
        if params_digest(name, version, params, target, dry_run=dry_run) != digest:
            raise ExecutionFailed("the proposal's parameters no longer match what was approved")
        if run_dry != dry_run:
            raise ExecutionFailed(
                "the execution's dry-run flag differs from what was approved; propose it again"
            )
        playbook = self.playbooks().get(name)
        if playbook is None:
            raise ExecutionFailed(f"playbook {name!r} is not loaded")
        if playbook.version != version:
            raise ExecutionFailed(
                f"playbook {name} is now version {playbook.version}, approved was {version}"
            )
        try:
            steps = render_steps(playbook, params, target)
            rollback = render_steps(playbook, params, target, phase="rollback")
            verify = render_verify(playbook, params, target)
        except PrognosError as exc:
            raise ExecutionFailed(f"cannot render the playbook: {exc.message}") from None
        check_actions([*steps, *rollback], self.actions)
        return _Plan(execution_id, proposal_id, dry_run, playbook, steps, rollback, verify)

    def _execute(self, execution_id: int) -> None:
        """Run a claimed execution to its end; never raises for a failing playbook."""
        heartbeat = _Heartbeat(self, execution_id)
        heartbeat.start()
        issued: IssuedCredentials | None = None
        redactor = Redactor()
        LOG_REDACTION.register(redactor)
        status, error = ExecutionStatus.FAILED, None
        try:
            plan = self._plan(execution_id)
            if plan.dry_run:
                self._dry_run(plan)
                status = ExecutionStatus.SUCCEEDED
                return
            if plan.playbook.vault is not None:
                issued = self._issue(plan)
                redactor.add(issued.secrets)
            ctx = StepContext(
                redactor=redactor,
                secret_env=dict(issued.env) if issued else {},
                actions=self.actions,
                prometheus_query=self.prometheus_query,
                max_output=self.max_output,
                stop=self._stop,
            )
            status, error = self._run_phases(plan, ctx)
        except ClaimLost as exc:
            log.warning("execution %s: %s", execution_id, exc.message)
            status, error = ExecutionStatus.INTERRUPTED, f"interrupted: {exc.message}"
        except VaultError as exc:
            error = f"{exc.code}: {exc.message} (no step ran)"
        except PrognosError as exc:
            error = f"{exc.code}: {exc.message}"
        except Exception as exc:
            log.exception("execution %s failed inside the executor", execution_id)
            error = f"internal error ({type(exc).__name__})"
        finally:
            heartbeat.stop()
            if issued is not None:
                self._revoke(execution_id, issued)
            try:
                self._finish(execution_id, status, redactor(error) if error else None)
            finally:
                LOG_REDACTION.unregister(redactor)

    def _issue(self, plan: _Plan) -> IssuedCredentials:
        spec = plan.playbook.vault
        assert spec is not None
        if self.broker is None:
            raise VaultError("the playbook needs Vault credentials but no Vault is configured")
        ttl = credential_ttl(plan.playbook.total_timeout())
        with session_scope(self.sessions) as session:
            self._fence(session, plan.execution_id, "credentials were issued")
            session.commit()
        try:
            issued = self.broker.issue(plan.execution_id, spec, ttl)
        except VaultError as exc:
            with session_scope(self.sessions) as session:
                self._audit(session, "credentials_failed", plan.execution_id, {"error": exc.code})
                session.commit()
            raise
        # Recorded before any step runs, so a crash leaves what recover() must revoke.
        try:
            self._record_issued(plan, spec, issued, ttl)
        except BaseException:
            self._revoke(plan.execution_id, issued)
            raise
        return issued

    def _record_issued(
        self, plan: _Plan, spec: VaultSpec, issued: IssuedCredentials, ttl: timedelta
    ) -> None:
        with session_scope(self.sessions) as session:
            self._fence(session, plan.execution_id, "credentials were recorded")
            session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == plan.execution_id)
                .values(
                    vault_token_accessor=issued.token_accessor,
                    vault_lease_ids=list(issued.lease_ids),
                )
            )
            self._audit(
                session,
                "credentials_issued",
                plan.execution_id,
                {
                    "accessor": issued.token_accessor,
                    "lease_ids": list(issued.lease_ids),
                    "policies": list(spec.policies),
                    "env": sorted(issued.env),
                    "ttl_s": int(ttl.total_seconds()),
                },
            )
            session.commit()

    def _revoke(self, execution_id: int, issued: IssuedCredentials) -> None:
        assert self.broker is not None
        try:
            problems = self.broker.revoke(issued)
        except Exception as exc:  # revocation must never mask the outcome
            problems = [f"revocation failed ({type(exc).__name__})"]
        if problems:
            log.warning(
                "execution %s: credentials not fully revoked (accessor %s): %s",
                execution_id,
                issued.token_accessor,
                "; ".join(problems),
            )
        with session_scope(self.sessions) as session:
            self._audit(
                session,
                "credentials_revoked",
                execution_id,
                {
                    "accessor": issued.token_accessor,
                    "lease_ids": list(issued.lease_ids),
                    "complete": not problems,
                    "problems": problems,
                },
            )
            session.commit()

    def _run_phases(self, plan: _Plan, ctx: StepContext) -> tuple[ExecutionStatus, str | None]:
        failure: str | None = None
        idx = 0
        for step in plan.steps:
            result = self._step(plan.execution_id, idx, "main", step.name, ctx, step)
            idx += 1
            if not result.ok:
                failure = f"step {step.name!r} failed: {result.error}"
                break
        if failure is None and plan.verify is not None:
            verify = plan.verify
            result = self._step(plan.execution_id, idx, "verify", "verify", ctx, verify)
            idx += 1
            if not result.ok:
                failure = f"verification failed: {result.error}"
        if failure is None:
            return ExecutionStatus.SUCCEEDED, None
        if not plan.rollback:
            return ExecutionStatus.FAILED, failure
        rollback_ok = True
        for step in plan.rollback:
            result = self._step(plan.execution_id, idx, "rollback", step.name, ctx, step)
            idx += 1
            rollback_ok = rollback_ok and result.ok
        if rollback_ok:
            return ExecutionStatus.ROLLED_BACK, failure
        return ExecutionStatus.FAILED, f"{failure}; rollback failed too"

    def _step(
        self,
        execution_id: int,
        idx: int,
        phase: str,
        name: str,
        ctx: StepContext,
        step: Step | Verify,
    ) -> StepResult:
        with session_scope(self.sessions) as session:
            # Fencing: the step's start is recorded only under a claim this executor still
            # holds, in the same transaction; a lost claim stops the run before the step.
            self._fence(session, execution_id, f"{phase} step {name!r}")
            row = ExecutionStepRow(
                execution_id=execution_id,
                idx=idx,
                phase=phase,
                name=name,
                status="running",
                started_at=self.clock.now(),
                finished_at=None,
                exit_code=None,
                output="",
            )
            session.add(row)
            self._audit(
                session, "step_started", execution_id, {"idx": idx, "phase": phase, "name": name}
            )
            session.commit()
            step_id = row.id
        try:
            if isinstance(step, Verify):
                result = wait_until(
                    step.query, step.timeout.total_seconds(), step.interval.total_seconds(), ctx
                )
            else:
                result = run_step(step, ctx)
        except Exception as exc:
            log.exception("step %s of execution %s raised", name, execution_id)
            result = StepResult(False, "", error=f"internal error ({type(exc).__name__})")
        output = result.output
        if result.error:
            output = f"{output}\n[{result.error}]" if output else f"[{result.error}]"
        output = ctx.redactor(output)
        status = "succeeded" if result.ok else "failed"
        with session_scope(self.sessions) as session:
            session.execute(
                sa.update(ExecutionStepRow)
                .where(ExecutionStepRow.id == step_id)
                .values(
                    status=status,
                    finished_at=self.clock.now(),
                    exit_code=result.exit_code,
                    output=output,
                )
            )
            self._audit(
                session,
                "step_finished",
                execution_id,
                {
                    "idx": idx,
                    "phase": phase,
                    "name": name,
                    "status": status,
                    "exit_code": result.exit_code,
                },
            )
            session.commit()
        return result

    def _dry_run(self, plan: _Plan) -> None:
        """Record exactly what would run, as skipped steps; nothing runs, nothing is issued."""
        import json

        spec = plan.playbook.vault
        names = sorted({var for s in (spec.secrets if spec else []) for var in s.env})
        items: list[tuple[str, str, Step | Verify]] = [("main", s.name, s) for s in plan.steps]
        if plan.verify is not None:
            items.append(("verify", "verify", plan.verify))
        items += [("rollback", s.name, s) for s in plan.rollback]
        with session_scope(self.sessions) as session:
            self._fence(session, plan.execution_id, "the dry run was recorded")
            for idx, (phase, name, step) in enumerate(items):
                session.add(
                    ExecutionStepRow(
                        execution_id=plan.execution_id,
                        idx=idx,
                        phase=phase,
                        name=name,
                        status="skipped",
                        started_at=None,
                        finished_at=None,
                        exit_code=None,
                        output=json.dumps(describe(step, names), sort_keys=True),
                    )
                )
            self._audit(
                session,
                "dry_run",
                plan.execution_id,
                {
                    "steps": len(items),
                    "vault_policies": list(spec.policies) if spec else [],
                    "env": names,
                },
            )
            session.commit()

    def _finish(self, execution_id: int, status: ExecutionStatus, error: str | None) -> None:
        now = self.clock.now()
        with session_scope(self.sessions) as session:
            row = session.get(ExecutionRow, execution_id)
            if row is None:
                return
            result = session.execute(
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == execution_id)
                .where(ExecutionRow.status == RUNNING)
                .where(ExecutionRow.owner == self.owner)
                .values(status=status.value, finished_at=now, error=error, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                log.warning(
                    "execution %s was taken over (%s) before it finished", execution_id, row.status
                )
                session.rollback()
                return
            self._set_proposal(session, row.proposal_id, status.value)
            self._audit(
                session,
                "execution_finished",
                execution_id,
                {"status": status.value, "error": error},
            )
            session.commit()
        log.info("execution %s %s", execution_id, status.value)

    @staticmethod
    def _set_proposal(session: Session, proposal_id: int, status: str) -> None:
        session.execute(
            sa.update(ProposalRow)
            .where(ProposalRow.id == proposal_id)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )

    def _hold(self, session: Session, execution_id: int) -> bool:
        """Renew the claim inside the caller's transaction if this executor still holds it:
        still `running`, still its owner, and the lease not yet run out. A row lock (a write
        lock on SQLite) orders it against `_interrupt`, so exactly one of them wins."""
        now = self.clock.now()
        result = session.execute(
            sa.update(ExecutionRow)
            .where(ExecutionRow.id == execution_id)
            .where(ExecutionRow.owner == self.owner)
            .where(ExecutionRow.status == RUNNING)
            .where(ExecutionRow.lease_until >= now)
            .values(lease_until=now + self.lease)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _fence(self, session: Session, execution_id: int, before: str) -> None:
        """`_hold` or stop: raises ClaimLost (the caller's transaction is rolled back)."""
        if not self._hold(session, execution_id):
            raise ClaimLost(f"the claim was lost before {before}; stopped there")

    def renew_lease(self, execution_id: int) -> bool:
        with session_scope(self.sessions) as session:
            held = self._hold(session, execution_id)
            session.commit()
            return held

    # -- recovery ------------------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Executions left `running` by a dead executor → `interrupted`; revoke their leftover
        Vault token and leases. Dead means: the lease ran out, or the owner is an earlier life
        of this executor on this host (`_orphaned`), whose lease need not be waited for.

        They are never re-run: a human decides what happens next.
        """
        now = self.clock.now()
        with session_scope(self.sessions) as session:
            rows = list(
                session.execute(
                    sa.select(
                        ExecutionRow.id,
                        ExecutionRow.owner,
                        ExecutionRow.lease_until,
                        ExecutionRow.vault_token_accessor,
                        ExecutionRow.vault_lease_ids,
                    )
                    .where(ExecutionRow.status == RUNNING)
                    .order_by(ExecutionRow.id)
                )
            )
        interrupted = []
        for execution_id, owner, lease_until, accessor, lease_ids in rows:
            expired = lease_until is None or lease_until < now
            if not expired and not self._orphaned(owner):
                continue
            if self._interrupt(execution_id, owner, lease_until, now):
                interrupted.append(execution_id)
                self._revoke_leftovers(execution_id, accessor, list(lease_ids or []))
        return interrupted

    def _orphaned(self, owner: str | None) -> bool:
        """Whether `owner` (`host:pid:nonce`, as the service names its executor) is an earlier
        life of this executor: the same host, another identity, and its process gone — or this
        very pid (a restarted container keeps its pid; the nonce is new each start). Another
        live process on this host, or any other host, keeps its run until its lease runs out."""
        mine, theirs = _owner_parts(self.owner), _owner_parts(owner)
        if mine is None or theirs is None or owner == self.owner or mine[0] != theirs[0]:
            return False
        return theirs[1] == mine[1] or not _pid_alive(theirs[1])

    def _interrupt(
        self, execution_id: int, owner: str | None, lease_until: datetime | None, now: datetime
    ) -> bool:
        message = (
            f"interrupted: executor {owner or '?'} stopped mid-run (lease "
            f"{'expired' if lease_until is None or lease_until < now else 'orphaned'}); "
            "needs attention, it is not re-run"
        )
        with session_scope(self.sessions) as session:
            query = (
                sa.update(ExecutionRow)
                .where(ExecutionRow.id == execution_id)
                .where(ExecutionRow.status == RUNNING)
            )
            query = query.where(
                ExecutionRow.lease_until.is_(None)
                if lease_until is None
                else ExecutionRow.lease_until == lease_until
            )
            result = session.execute(
                query.values(
                    status=ExecutionStatus.INTERRUPTED.value, finished_at=now, error=message
                ).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()  # renewed or finished meanwhile: not ours to touch
                return False
            session.execute(
                sa.update(ExecutionStepRow)
                .where(ExecutionStepRow.execution_id == execution_id)
                .where(ExecutionStepRow.status == "running")
                .values(
                    status="failed",
                    finished_at=now,
                    output=ExecutionStepRow.output + "\n[interrupted]",
                )
                .execution_options(synchronize_session=False)
            )
            row = session.get(ExecutionRow, execution_id)
            assert row is not None
            self._set_proposal(session, row.proposal_id, ExecutionStatus.INTERRUPTED.value)
            self._audit(
                session,
                "execution_interrupted",
                execution_id,
                {"previous_owner": owner, "status": ExecutionStatus.INTERRUPTED.value},
            )
            session.commit()
        log.warning("execution %s was interrupted mid-run; needs attention", execution_id)
        return True

    def _revoke_leftovers(
        self, execution_id: int, accessor: str | None, lease_ids: list[str]
    ) -> None:
        if accessor is None and not lease_ids:
            return
        if self.broker is None:
            problems = ["no Vault configured to revoke the leftovers"]
        else:
            try:
                problems = self.broker.revoke_leftovers([accessor] if accessor else [], lease_ids)
            except Exception as exc:
                problems = [f"revocation failed ({type(exc).__name__})"]
        with session_scope(self.sessions) as session:
            self._audit(
                session,
                "credentials_revoked",
                execution_id,
                {
                    "accessor": accessor,
                    "lease_ids": lease_ids,
                    "complete": not problems,
                    "problems": problems,
                    "recovered": True,
                },
            )
            session.commit()


def _owner_parts(owner: str | None) -> tuple[str, int] | None:
    """(host, pid) of an owner named `host:pid:nonce`; None for any other form."""
    parts = (owner or "").rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class _Heartbeat:
    """Renews the claim's lease every third of its length while the execution runs."""

    def __init__(self, executor: Executor, execution_id: int) -> None:
        self.executor = executor
        self.execution_id = execution_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{execution_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # A third of the lease as the executor's clock counts it (simulated on a ScaledClock).
        every = max(
            0.05, wall_seconds(self.executor.clock, self.executor.lease.total_seconds() / 3)
        )
        while not self._done.wait(every):
            try:
                if not self.executor.renew_lease(self.execution_id):
                    log.warning("execution %s: the claim was lost", self.execution_id)
                    return
            except Exception:
                log.warning("could not renew the lease of execution %s", self.execution_id)
