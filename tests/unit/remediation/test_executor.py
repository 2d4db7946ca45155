"""The executor on a real database with a fake credential broker: claims, steps, timeouts,
redaction, verification and rollback, fail-closed Vault errors, dry runs and crash recovery."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.database import create_engine, migrate, session_factory
from core.settings import RemediationSettings
from remediation import audit, service
from remediation.executor import Executor
from remediation.playbooks import Playbook, VaultSpec
from remediation.steps import prometheus_condition
from remediation.tables import AuditRow, ExecutionRow, ExecutionStepRow, ProposalRow
from remediation.vault import IssuedCredentials, VaultSealed
from tests.unit.remediation.helpers import approved, make_playbook

Sessions = sessionmaker[Session]
PY = sys.executable
DB_PASSWORD = "pw-Zq81-very-secret"
API_KEY = "key-77e1c0ffee"


class FakeBroker:
    """Issues fixed secrets and records what was revoked."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.issued: list[tuple[int, VaultSpec, timedelta]] = []
        self.revoked: list[str] = []
        self.leftovers: list[tuple[list[str], list[str]]] = []

    def issue(self, execution_id: int, spec: VaultSpec, ttl: timedelta) -> IssuedCredentials:
        if self.fail is not None:
            raise self.fail
        self.issued.append((execution_id, spec, ttl))
        return IssuedCredentials(
            execution_id=execution_id,
            token_accessor=f"acc-{execution_id}",
            lease_ids=[f"database/creds/readonly/lease-{execution_id}"],
            env={"DB_USER": "v-user", "DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY},
            secrets=["s.childtokenvalue0000000000", DB_PASSWORD, API_KEY, "v-user"],
        )

    def revoke(self, issued: IssuedCredentials) -> list[str]:
        self.revoked.append(issued.token_accessor)
        return []

    def revoke_leftovers(self, accessors: list[str], leases: list[str]) -> list[str]:
        self.leftovers.append((list(accessors), list(leases)))
        return []


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Sessions]:
    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def playbook(steps: list[dict[str, Any]], **extra: Any) -> Playbook:
    return make_playbook(steps=steps, **extra)


VAULT = {
    "policies": ["remediate-db"],
    "secrets": [
        {
            "engine": "database",
            "path": "database/creds/readonly",
            "env": {"DB_USER": "username", "DB_PASSWORD": "password"},
        }
    ],
}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def executor(
    sessions: Sessions,
    book: Playbook,
    broker: Any = None,
    *,
    lease_s: float = 60,
    owner: str = "test-1",
    **kw: Any,
) -> Executor:
    actions = kw.pop("actions", {"noop": lambda args, env: "ok"})
    return Executor(
        sessions,
        broker,
        RemediationSettings(executor_lease=timedelta(seconds=lease_s)),
        owner=owner,
        playbooks={book.name: book},
        actions=actions,
        **kw,
    )


def steps_of(sessions: Sessions, execution_id: int) -> list[ExecutionStepRow]:
    with sessions() as session:
        return list(
            session.execute(
                sa.select(ExecutionStepRow)
                .where(ExecutionStepRow.execution_id == execution_id)
                .order_by(ExecutionStepRow.idx)
            ).scalars()
        )


def audit_actions(sessions: Sessions, execution_id: int) -> list[str]:
    with sessions() as session:
        return [
            e.action for e in audit.entries(session, subject=f"execution:{execution_id}", limit=500)
        ]


def proposal_status(sessions: Sessions, execution_id: int) -> str:
    with sessions() as session:
        row = session.get(ExecutionRow, execution_id)
        assert row is not None
        proposal = session.get(ProposalRow, row.proposal_id)
        assert proposal is not None
        return proposal.status


def test_a_run_hands_secrets_to_the_command_redacts_them_and_revokes_after(lite: Sessions) -> None:
    book = playbook(
        [
            {
                "kind": "command",
                "name": "use-db",
                "argv": [
                    PY,
                    "-c",
                    "import os,base64;p=os.environ['DB_PASSWORD'];"
                    "print('user', os.environ['DB_USER'], 'pw', p, 'b64', "
                    "base64.b64encode(p.encode()).decode(), 'deploy {{ params.deployment }}')",
                ],
            }
        ],
        vault=VAULT,
    )
    broker = FakeBroker()
    execution_id = approved(lite, book)
    result = executor(lite, book, broker).run(execution_id)

    assert result.status == "succeeded", result.error
    assert proposal_status(lite, execution_id) == "succeeded"
    [step] = steps_of(lite, execution_id)
    assert step.status == "succeeded" and step.exit_code == 0
    assert "deploy cart" in step.output and "pw ***" in step.output
    assert DB_PASSWORD not in step.output and "b64 ***" in step.output
    assert broker.revoked == [f"acc-{execution_id}"]
    # TTL: the playbook's total timeouts plus the margin.
    assert broker.issued[0][2] == book.total_timeout() + timedelta(seconds=60)
    assert audit_actions(lite, execution_id) == [
        "execution_claimed",
        "credentials_issued",
        "step_started",
        "step_finished",
        "credentials_revoked",
        "execution_finished",
    ]
    with lite() as session:
        rows = session.execute(sa.select(AuditRow)).scalars().all()
        dumped = json.dumps([r.data for r in rows])
        assert f"acc-{execution_id}" in dumped
        assert DB_PASSWORD not in dumped and API_KEY not in dumped
        assert audit.verify(session, None).ok


def test_a_failed_step_runs_the_rollback_and_stops_the_rest(lite: Sessions) -> None:
    book = playbook(
        [
            {"kind": "command", "name": "fails", "argv": [PY, "-c", "raise SystemExit(3)"]},
            {"kind": "python", "name": "never", "action": "noop"},
        ],
        rollback=[{"kind": "python", "name": "undo", "action": "noop"}],
    )
    execution_id = approved(lite, book)
    result = executor(lite, book).run(execution_id)
    assert result.status == "rolled_back"
    assert "fails" in (result.error or "")
    rows = steps_of(lite, execution_id)
    assert [(r.phase, r.name, r.status, r.exit_code) for r in rows] == [
        ("main", "fails", "failed", 3),
        ("rollback", "undo", "succeeded", None),
    ]
    assert proposal_status(lite, execution_id) == "rolled_back"


def test_a_failed_step_without_rollback_is_failed(lite: Sessions) -> None:
    book = playbook([{"kind": "python", "name": "boom", "action": "boom"}])
    actions = {"boom": lambda args, env: (_ for _ in ()).throw(RuntimeError("nope"))}
    execution_id = approved(lite, book)
    result = executor(lite, book, actions=actions).run(execution_id)
    assert result.status == "failed"
    [row] = steps_of(lite, execution_id)
    assert "RuntimeError: nope" in row.output


def test_verification_failure_rolls_back(lite: Sessions) -> None:
    queries: list[str] = []

    def query(expr: str) -> bool:
        queries.append(expr)
        return False

    book = playbook(
        [{"kind": "python", "name": "fix", "action": "noop"}],
        verify={"query": 'up{job="{{ target }}"} == 1', "timeout": "2s", "interval": "1s"},
        rollback=[{"kind": "python", "name": "undo", "action": "noop"}],
    )
    execution_id = approved(lite, book)
    result = executor(lite, book, prometheus_query=query).run(execution_id)
    assert result.status == "rolled_back"
    assert queries and queries[0] == 'up{job="cart"} == 1'
    assert [(r.phase, r.status) for r in steps_of(lite, execution_id)] == [
        ("main", "succeeded"),
        ("verify", "failed"),
        ("rollback", "succeeded"),
    ]


def test_verification_that_holds_succeeds(lite: Sessions) -> None:
    book = playbook(
        [{"kind": "python", "name": "fix", "action": "noop"}],
        verify={"query": "vector(1)", "timeout": "5s", "interval": "1s"},
    )
    execution_id = approved(lite, book)
    result = executor(lite, book, prometheus_query=lambda q: True).run(execution_id)
    assert result.status == "succeeded"


def test_sealed_vault_fails_closed_before_any_step(lite: Sessions) -> None:
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}], vault=VAULT)
    ran: list[str] = []
    execution_id = approved(lite, book)
    result = executor(
        lite,
        book,
        FakeBroker(fail=VaultSealed("Vault at http://vault is sealed")),
        actions={"noop": lambda a, e: ran.append("x")},
    ).run(execution_id)
    assert result.status == "failed"
    assert result.error is not None and "vault_sealed" in result.error
    assert "no step ran" in result.error
    assert steps_of(lite, execution_id) == [] and ran == []
    assert "credentials_failed" in audit_actions(lite, execution_id)


def test_a_playbook_needing_vault_without_a_broker_fails_closed(lite: Sessions) -> None:
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}], vault=VAULT)
    execution_id = approved(lite, book)
    result = executor(lite, book, None).run(execution_id)
    assert result.status == "failed" and steps_of(lite, execution_id) == []


def test_an_unknown_action_is_refused_before_anything_runs(lite: Sessions) -> None:
    book = playbook(
        [
            {"kind": "python", "name": "ok", "action": "noop"},
            {"kind": "python", "name": "bad", "action": "rm_rf"},
        ]
    )
    execution_id = approved(lite, book)
    broker = FakeBroker()
    result = executor(lite, book, broker).run(execution_id)
    assert result.status == "failed"
    assert "rm_rf" in (result.error or "")
    assert steps_of(lite, execution_id) == [] and broker.issued == []


def test_a_command_that_overruns_is_killed_with_its_whole_process_group(
    lite: Sessions, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess,sys;"
        "c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']);"
        f"open({str(pidfile)!r},'w').write(str(c.pid));print('started', flush=True);"
        "c.wait()"
    )
    book = playbook(
        [{"kind": "command", "name": "hang", "argv": [PY, "-c", script], "timeout": "2s"}]
    )
    execution_id = approved(lite, book)
    result = executor(lite, book).run(execution_id)
    assert result.status == "failed"
    [row] = steps_of(lite, execution_id)
    assert "started" in row.output and "timed out" in row.output
    child = int(pidfile.read_text())
    for _ in range(50):  # the kernel reaps the orphan shortly after SIGKILL
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_output_is_bounded(lite: Sessions) -> None:
    book = playbook(
        [{"kind": "command", "name": "noisy", "argv": [PY, "-c", "print('x' * 500000)"]}]
    )
    execution_id = approved(lite, book)
    result = executor(lite, book, max_output=1000).run(execution_id)
    assert result.status == "succeeded"
    [row] = steps_of(lite, execution_id)
    assert len(row.output) < 1200 and "truncated" in row.output


def test_commands_get_a_minimal_environment(
    lite: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_LEAKY_SECRET", "from-the-service-env")
    monkeypatch.setenv("VAULT_TOKEN", "s.servicetokenneverhanded000")
    book = playbook(
        [
            {
                "kind": "command",
                "name": "env",
                "argv": [PY, "-c", "import json, os; print(json.dumps(sorted(os.environ)))"],
                "env": {"MODE": "safe"},
            }
        ]
    )
    execution_id = approved(lite, book)
    executor(lite, book).run(execution_id)
    [row] = steps_of(lite, execution_id)
    names = set(json.loads(row.output))
    assert names <= {"PATH", "LANG", "LC_ALL", "MODE", "LC_CTYPE"}
    assert "from-the-service-env" not in row.output


def test_dry_run_records_what_would_run_without_running_or_issuing(lite: Sessions) -> None:
    ran: list[str] = []
    book = playbook(
        [
            {
                "kind": "command",
                "name": "restart",
                "argv": ["kubectl", "rollout", "restart", "deployment/{{ params.deployment }}"],
            },
            {"kind": "python", "name": "mark", "action": "noop"},
        ],
        vault=VAULT,
    )
    # The real path: proposed as a dry run, approved on that digest, claimed and run.
    execution_id = approved(lite, book, dry_run=True)
    broker = FakeBroker()
    result = executor(lite, book, broker, actions={"noop": lambda a, e: ran.append("x")}).run(
        execution_id
    )
    assert result.status == "succeeded", result.error
    assert broker.issued == [] and ran == []
    rows = steps_of(lite, execution_id)
    assert [r.status for r in rows] == ["skipped", "skipped"]
    described = json.loads(rows[0].output)
    assert described["argv"] == ["kubectl", "rollout", "restart", "deployment/cart"]
    assert described["env"] == ["DB_PASSWORD", "DB_USER", "PATH"]


def test_exactly_one_of_two_racing_executors_claims(sessions: Sessions) -> None:
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}])
    execution_id = approved(sessions, book)
    executors = [executor(sessions, book, owner=f"ex-{i}") for i in range(4)]
    barrier = threading.Barrier(len(executors))
    wins: list[bool] = []

    def race(ex: Executor) -> None:
        barrier.wait()
        wins.append(ex.claim(execution_id))

    threads = [threading.Thread(target=race, args=(ex,)) for ex in executors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    with sessions() as session:
        row = session.get(ExecutionRow, execution_id)
        assert row is not None and row.status == "running"


def test_recover_marks_abandoned_runs_interrupted_revokes_leftovers_and_never_reruns(
    lite: Sessions,
) -> None:
    ran: list[str] = []
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}])
    execution_id = approved(lite, book)
    dead = executor(lite, book, owner="dead-host:1", lease_s=0.2)
    assert dead.claim(execution_id)
    with lite() as session:
        session.execute(
            sa.update(ExecutionRow).values(
                vault_token_accessor="acc-left", vault_lease_ids=["database/creds/readonly/l1"]
            )
        )
        session.commit()
    time.sleep(0.5)  # the dead owner's lease runs out
    broker = FakeBroker()
    fresh = executor(
        lite, book, broker, owner="new-host:2", actions={"noop": lambda a, e: ran.append("x")}
    )
    assert fresh.recover() == [execution_id]
    assert broker.leftovers == [(["acc-left"], ["database/creds/readonly/l1"])]
    assert fresh.claim_next() is None and ran == []
    state = fresh.get(execution_id)
    assert state.status == "interrupted" and "needs attention" in (state.error or "")
    assert proposal_status(lite, execution_id) == "interrupted"
    assert "execution_interrupted" in audit_actions(lite, execution_id)
    assert fresh.recover() == []  # idempotent


def test_recover_at_once_interrupts_what_an_earlier_life_of_this_executor_left(
    lite: Sessions,
) -> None:
    """The service names its executor `host:pid:nonce`, new at each start. At start, runs an
    earlier life on this host left (its process gone, or this same pid, as in a restarted
    container) are interrupted without waiting for their lease; a live sibling's or another
    host's are not."""
    host, me = "node-a", os.getpid()
    gone = _reaped_pid()
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}], breaker_max_runs=10)
    owners = {
        "cart": f"{host}:{me}:aaaaaa",  # this pid, an earlier start
        "pay": f"{host}:{gone}:bbbbbb",  # a process of this host that is gone
        "ship": f"{host}:{os.getppid()}:cccccc",  # a live sibling on this host
        "mail": f"node-b:{gone}:dddddd",  # another host: only its lease tells
    }
    ids = {}
    for target, owner in owners.items():
        ids[target] = approved(lite, book, target=target)
        assert executor(lite, book, owner=owner, lease_s=600).claim(ids[target])
    broker = FakeBroker()
    fresh = executor(lite, book, broker, owner=f"{host}:{me}:eeeeee")

    assert fresh.recover() == [ids["cart"], ids["pay"]]
    for target in ("cart", "pay"):
        state = fresh.get(ids[target])
        assert state.status == "interrupted" and "orphaned" in (state.error or "")
    assert [fresh.get(ids[t]).status for t in ("ship", "mail")] == ["running", "running"]
    assert fresh.recover() == []


def _reaped_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([PY, "-c", ""])
    proc.wait()
    return proc.pid


def test_recover_leaves_a_live_lease_alone(lite: Sessions) -> None:
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}])
    execution_id = approved(lite, book)
    assert executor(lite, book, owner="alive:1", lease_s=600).claim(execution_id)
    assert executor(lite, book, owner="other:2").recover() == []


def test_an_approval_wakes_the_executor_at_once(lite: Sessions) -> None:
    # Actions run in a forked child: an event shared across the fork tells the test it ran.
    started = multiprocessing.get_context("fork").Event()
    book = playbook([{"kind": "python", "name": "fix", "action": "mark"}])
    ex = executor(lite, book, actions={"mark": lambda a, e: started.set()}, poll_interval=3600)
    ex.start()
    try:
        with lite() as session:
            proposal = service.propose(
                session,
                playbook=book,
                params={"deployment": "cart"},
                target="cart",
                proposed_by="olga",
                evidence={},
                now=_now(),
            )
            session.commit()
        with lite() as session:
            service.approve(
                session,
                proposal_id=proposal.id,
                principal="ada",
                role="approver",
                digest=proposal.params_digest,
                playbooks={book.name: book},
                now=_now(),
                wake=ex.wake,
            )
            session.commit()
        # The poll interval is an hour: only the wake-up can start it.
        assert started.wait(30)
    finally:
        ex.stop()


class _FakeResponse:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict[str, Any]:
        return self.payload


class _FakeHttp:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.calls: list[tuple[str, Any]] = []

    def get(self, url: str, params: Any = None, timeout: float = 0) -> _FakeResponse:
        self.calls.append((url, params))
        return _FakeResponse(self.payload)


@pytest.mark.parametrize(
    ("data", "holds"),
    [
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}, True),
        ({"resultType": "vector", "result": []}, False),
        ({"resultType": "scalar", "result": [1, "0"]}, False),
        ({"resultType": "scalar", "result": [1, "1"]}, True),
    ],
)
def test_a_promql_condition_holds_on_a_non_empty_vector_or_true_scalar(
    data: dict[str, Any], holds: bool
) -> None:
    http = _FakeHttp({"status": "success", "data": data})
    query = prometheus_condition("http://prom:9090/", session=http)  # type: ignore[arg-type]
    assert query('up{job="cart"} == 1') is holds
    assert http.calls == [("http://prom:9090/api/v1/query", {"query": 'up{job="cart"} == 1'})]


def test_the_claims_lease_is_renewed_while_a_step_runs(lite: Sessions) -> None:
    seen: list[Any] = []
    done = threading.Event()
    execution_id = 0

    def watch() -> None:
        while not done.wait(0.2):
            with lite() as session:
                row = session.get(ExecutionRow, execution_id)
                if row is not None and row.status == "running":
                    seen.append(row.lease_until)

    book = playbook([{"kind": "python", "name": "slow", "action": "slow"}])
    execution_id = approved(lite, book)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # The step lasts several lease periods of 0.3 s: only the heartbeat keeps the claim.
        slow = {"slow": lambda args, env: time.sleep(2.0)}
        result = executor(lite, book, lease_s=0.3, actions=slow).run(execution_id)
    finally:
        done.set()
        watcher.join()
    assert result.status == "succeeded", result.error
    assert len(seen) >= 2 and seen[-1] > seen[0]


def test_an_action_that_overruns_is_killed_before_the_rollback_runs(
    lite: Sessions, tmp_path: Path
) -> None:
    """A timed-out Python action must not keep running with the execution's secrets: its
    process is gone when the rollback starts, and it never gets to use them afterwards."""
    pidfile = tmp_path / "action.pid"

    def hang(args: Any, env: Any) -> None:
        pidfile.write_text(str(os.getpid()))
        time.sleep(30)  # overruns its 1 s timeout, holding the secrets in `env`

    def undo(args: Any, env: Any) -> str:
        pid = int(pidfile.read_text())
        return f"action {'alive' if _alive(pid) else 'gone'} at rollback"

    book = playbook(
        [{"kind": "python", "name": "hang", "action": "hang", "timeout": "1s"}],
        rollback=[{"kind": "python", "name": "undo", "action": "undo"}],
        vault=VAULT,
    )
    execution_id = approved(lite, book)
    broker = FakeBroker()
    result = executor(lite, book, broker, actions={"hang": hang, "undo": undo}).run(execution_id)

    assert result.status == "rolled_back", result.error
    hung, rolled = steps_of(lite, execution_id)
    assert hung.status == "failed" and "timed out after 1s" in hung.output
    assert rolled.status == "succeeded" and "action gone at rollback" in rolled.output
    assert not _alive(int(pidfile.read_text()))
    assert broker.revoked == [f"acc-{execution_id}"]


def test_parameters_edited_after_approval_are_refused_before_any_step(lite: Sessions) -> None:
    ran: list[str] = []
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}])
    execution_id = approved(lite, book)
    with lite() as session:  # someone edits the row behind the approval's back
        session.execute(sa.update(ProposalRow).values(params={"deployment": "payments"}))
        session.commit()
    result = executor(lite, book, actions={"noop": lambda a, e: ran.append("x")}).run(execution_id)
    assert result.status == "failed" and "no longer match" in (result.error or "")
    assert ran == [] and steps_of(lite, execution_id) == []


def test_a_dry_run_flag_flipped_after_approval_is_refused_before_any_step(
    lite: Sessions,
) -> None:
    """The approval binds the dry-run flag: a dry run approved on the lighter dry-run checks
    must never become a real run because someone edited the execution row."""
    ran: list[str] = []
    book = playbook([{"kind": "python", "name": "fix", "action": "noop"}])
    execution_id = approved(lite, book, dry_run=True)
    with lite() as session:
        session.execute(sa.update(ExecutionRow).values(dry_run=False))
        session.commit()
    result = executor(lite, book, actions={"noop": lambda a, e: ran.append("x")}).run(execution_id)
    assert result.status == "failed" and "dry-run" in (result.error or "")
    assert ran == [] and steps_of(lite, execution_id) == []
