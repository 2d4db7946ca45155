"""kill -9 of the process running an execution mid-step, then a restart in a new process:
the execution is `interrupted` (needs attention), never re-run, and what its Vault token and
database lease left behind is revoked."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from core.database import create_engine, migrate, session_factory
from remediation import audit
from remediation.tables import ExecutionRow, ExecutionStepRow, ProposalRow
from tests.integration.remediation.conftest import VaultEnv
from tests.unit.remediation.helpers import approved, make_playbook

WORKER = Path(__file__).with_name("crash_worker.py")
LEASE_S = 2


def test_a_killed_executor_leaves_an_interrupted_run_whose_credentials_the_restart_revokes(
    vault_env: VaultEnv, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'prognos.db'}"
    engine = create_engine(db_url)
    migrate(engine)
    sessions = session_factory(engine)
    marker = tmp_path / "started.txt"
    pidfile = tmp_path / "step.pid"
    sleeper = (
        "import os, time\n"
        f"open({str(marker)!r}, 'a').write(os.environ['DB_USER'] + '\\n')\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    playbook = make_playbook(
        steps=[
            {
                "kind": "command",
                "name": "slow",
                "argv": [sys.executable, "-c", sleeper],
                "timeout": "10m",
            }
        ],
        vault={
            "policies": ["remediate-db"],
            "secrets": [
                {
                    "engine": "database",
                    "path": "database/creds/readonly",
                    "env": {"DB_USER": "username", "DB_PASSWORD": "password"},
                }
            ],
        },
    )
    execution_id = approved(sessions, playbook)
    config = tmp_path / "worker.json"
    config.write_text(
        json.dumps(
            {
                "db_url": db_url,
                "playbook": json.loads(playbook.model_dump_json()),
                "vault_url": vault_env.server.url,
                "role_id": vault_env.role_id,
                "secret_id": vault_env.secret_id(),
                "lease_s": LEASE_S,
            }
        )
    )
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(config), "run", str(execution_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    step_pid = None
    try:
        for _ in range(600):  # until the step is running (a fact, not a speed requirement)
            if pidfile.exists() and pidfile.read_text():
                step_pid = int(pidfile.read_text())
                break
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            time.sleep(0.1)
        assert step_pid is not None
        with sessions() as session:
            row = session.get(ExecutionRow, execution_id)
            assert row is not None and row.status == "running"
            accessor, leases = row.vault_token_accessor, list(row.vault_lease_ids)
        assert accessor and leases
        user = marker.read_text().strip()
        assert user in vault_env.pg_roles() and vault_env.accessor_alive(accessor)

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        # The step dies with the executor that started it (no orphan holding credentials).
        for _ in range(100):
            if not _alive(step_pid):
                break
            time.sleep(0.1)
        assert not _alive(step_pid)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        # Should the test fail early, leave no sleeping step behind.
        if step_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(step_pid, signal.SIGKILL)

    time.sleep(LEASE_S + 0.5)  # the dead executor's lease runs out
    restart = subprocess.run(
        [sys.executable, str(WORKER), str(config), "recover"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert json.loads(restart.stdout.strip().splitlines()[-1]) == {"interrupted": [execution_id]}

    with sessions() as session:
        row = session.get(ExecutionRow, execution_id)
        assert row is not None
        assert row.status == "interrupted" and "needs attention" in (row.error or "")
        proposal_row = session.get(ProposalRow, row.proposal_id)
        assert proposal_row is not None and proposal_row.status == "interrupted"
        steps = (
            session.execute(
                sa.select(ExecutionStepRow).where(ExecutionStepRow.execution_id == execution_id)
            )
            .scalars()
            .all()
        )
        assert [(s.name, s.status) for s in steps] == [("slow", "failed")]
        actions = [e.action for e in audit.entries(session, subject=f"execution:{execution_id}")]
        assert actions[-2:] == ["execution_interrupted", "credentials_revoked"]
    assert not vault_env.accessor_alive(accessor)
    assert not any(vault_env.lease_alive(lease) for lease in leases)
    assert user not in vault_env.pg_roles()
    assert marker.read_text().strip().splitlines() == [user]  # the step ran once, never again
    engine.dispose()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
