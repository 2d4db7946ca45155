"""Executions against a real OpenBao with the database secrets engine on a real PostgreSQL:
the dynamic role lives exactly as long as the run, Vault trouble fails closed before any step,
and no issued secret shows up in logs, output, tables, API responses or the audit trail."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.database import Base, create_engine, migrate, session_factory
from core.settings import RemediationSettings
from remediation.executor import Executor
from remediation.playbooks import Playbook, VaultSpec
from remediation.vault import CredentialBroker, IssuedCredentials
from tests.integration.remediation.conftest import KV_VALUE, VaultEnv
from tests.unit.remediation.helpers import approved, make_playbook

Sessions = sessionmaker[Session]
PY = sys.executable

VAULT = {
    "policies": ["remediate-db"],
    "secrets": [
        {
            "engine": "database",
            "path": "database/creds/readonly",
            "env": {"DB_USER": "username", "DB_PASSWORD": "password"},
        },
        {"engine": "kv", "path": "secret/data/app", "env": {"API_KEY": "api_key"}},
        {
            "engine": "ssh_otp",
            "path": "ssh/creds/otp_role",
            "env": {"SSH_OTP": "key"},
            "params": {"ip": "127.0.0.1"},
        },
    ],
}


class RecordingBroker(CredentialBroker):
    """The real broker, remembering every secret it issued so the test can hunt for them."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.issued: list[IssuedCredentials] = []

    def issue(self, execution_id: int, spec: VaultSpec, ttl: timedelta) -> IssuedCredentials:
        issued = super().issue(execution_id, spec, ttl)
        self.issued.append(issued)
        return issued


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[sa.Engine, Sessions]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    yield engine, session_factory(engine)
    engine.dispose()


def make_executor(
    sessions: Sessions, book: Playbook, broker: CredentialBroker | None, **actions: Any
) -> Executor:
    return Executor(
        sessions,
        broker,
        RemediationSettings(),
        owner="it-1",
        playbooks={book.name: book},
        actions={"noop": lambda a, e: "ok", **actions},
    )


def step_rows(sessions: Sessions, execution_id: int) -> list[tuple[str, str, str]]:
    from remediation.tables import ExecutionStepRow

    with sessions() as session:
        rows = session.execute(
            sa.select(ExecutionStepRow)
            .where(ExecutionStepRow.execution_id == execution_id)
            .order_by(ExecutionStepRow.idx)
        ).scalars()
        return [(r.name, r.status, r.output) for r in rows]


def db_step(vault_env: VaultEnv) -> dict[str, Any]:
    """A command step that logs in to PostgreSQL with the issued credentials."""
    port = vault_env.postgres.port
    script = (
        "import os, psycopg\n"
        "u, p = os.environ['DB_USER'], os.environ['DB_PASSWORD']\n"
        f"c = psycopg.connect(host='127.0.0.1', port={port}, dbname='postgres', user=u, "
        "password=p)\n"
        "who = c.execute('select current_user').fetchone()[0]\n"
        "n = c.execute('select count(*) from pg_roles where rolname = current_user')"
        ".fetchone()[0]\n"
        "print('connected as', who, 'roles', n, 'password', p, 'otp', os.environ['SSH_OTP'])\n"
        "print('api key', os.environ['API_KEY'])\n"
        "assert who == u and n == 1\n"
    )
    return {"kind": "command", "name": "use-db", "argv": [PY, "-c", script], "timeout": "60s"}


@pytest.mark.parametrize("wrapped", [False, True], ids=["secret_id", "wrapped_secret_id"])
def test_the_dynamic_role_exists_during_the_run_and_is_gone_after(
    vault_env: VaultEnv, db: tuple[sa.Engine, Sessions], wrapped: bool, tmp_path: Path
) -> None:
    _, sessions = db
    record = tmp_path / "seen.json"

    def check_role(args: Any, env: Any) -> str:
        # Python actions run in a child process: what they see comes back through a file.
        record.write_text(
            json.dumps({"user": env["DB_USER"], "roles": sorted(vault_env.pg_roles())})
        )
        return "checked"

    book = make_playbook(
        steps=[db_step(vault_env), {"kind": "python", "name": "check", "action": "check_role"}],
        vault=VAULT,
    )
    broker = RecordingBroker(vault_env.settings(wrapped=wrapped))
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker, check_role=check_role).run(execution_id)

    assert result.status == "succeeded", (result.error, step_rows(sessions, execution_id))
    seen = json.loads(record.read_text())
    assert seen["user"] in seen["roles"]
    assert seen["user"] not in vault_env.pg_roles()  # revoked: Vault dropped the role
    [issued] = broker.issued
    assert not vault_env.accessor_alive(issued.token_accessor)
    assert issued.lease_ids and not any(vault_env.lease_alive(x) for x in issued.lease_ids)
    output = step_rows(sessions, execution_id)[0][2]
    assert "connected as *** roles 1 password *** otp ***" in output
    assert "api key ***" in output and KV_VALUE not in output


def test_sealed_vault_fails_closed_before_any_step(
    own_vault: VaultEnv, db: tuple[sa.Engine, Sessions]
) -> None:
    _, sessions = db
    book = make_playbook(steps=[{"kind": "python", "name": "s", "action": "noop"}], vault=VAULT)
    broker = CredentialBroker(own_vault.settings())
    broker.login()
    own_vault.root("PUT", "sys/seal")
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker).run(execution_id)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("vault_sealed")
    assert step_rows(sessions, execution_id) == []


def test_stopped_vault_fails_closed_before_any_step(
    own_vault: VaultEnv, db: tuple[sa.Engine, Sessions]
) -> None:
    _, sessions = db
    book = make_playbook(steps=[{"kind": "python", "name": "s", "action": "noop"}], vault=VAULT)
    broker = CredentialBroker(own_vault.settings())
    broker.login()
    own_vault.server.stop()
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker).run(execution_id)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("vault_unavailable")
    assert step_rows(sessions, execution_id) == []


def test_a_revoked_service_token_fails_closed_when_it_cannot_log_in_again(
    vault_env: VaultEnv, db: tuple[sa.Engine, Sessions]
) -> None:
    _, sessions = db
    book = make_playbook(steps=[{"kind": "python", "name": "s", "action": "noop"}], vault=VAULT)
    # A single-use secret_id: once spent, a revoked token cannot be replaced.
    broker = CredentialBroker(vault_env.settings(num_uses=1))
    token = broker.service_token()
    vault_env.root("POST", "auth/token/revoke", {"token": token})
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker).run(execution_id)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("vault_denied")
    assert token not in result.error
    assert step_rows(sessions, execution_id) == []


def test_a_revoked_service_token_is_replaced_by_a_fresh_login(
    vault_env: VaultEnv, db: tuple[sa.Engine, Sessions]
) -> None:
    _, sessions = db
    book = make_playbook(steps=[{"kind": "python", "name": "s", "action": "noop"}], vault=VAULT)
    broker = CredentialBroker(vault_env.settings())
    token = broker.service_token()
    vault_env.root("POST", "auth/token/revoke", {"token": token})
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker).run(execution_id)
    assert result.status == "succeeded", result.error
    assert broker.service_token() != token


def test_no_issued_secret_appears_in_logs_output_tables_api_or_audit(
    vault_env: VaultEnv,
    db: tuple[sa.Engine, Sessions],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    engine, sessions = db
    caplog.set_level(logging.DEBUG)
    leaked_user = tmp_path / "leaked-user"

    def chatty(args: Any, env: Any) -> str:
        # An action that tries hard to leak: logs, prints, returns and raises with secrets.
        logging.getLogger("remediation.actions").warning("password is %s", env["DB_PASSWORD"])
        print("stdout", env["DB_PASSWORD"], env["API_KEY"])
        print("stderr", env["SSH_OTP"], file=sys.stderr)
        leaked_user.write_text(env["DB_USER"])  # the action runs in a child process
        return f"returned {env['DB_PASSWORD']} {env['API_KEY']}"

    def explode(args: Any, env: Any) -> None:
        raise RuntimeError(f"failed with {env['DB_PASSWORD']} and {env['SSH_OTP']}")

    book = make_playbook(
        steps=[
            db_step(vault_env),
            {"kind": "python", "name": "chatty", "action": "chatty"},
            {
                "kind": "command",
                "name": "env-dump",
                "argv": [PY, "-c", "import os, sys; print(dict(os.environ)); sys.exit(2)"],
            },
        ],
        rollback=[{"kind": "python", "name": "explode", "action": "explode"}],
        vault=VAULT,
    )
    broker = RecordingBroker(vault_env.settings())
    execution_id = approved(sessions, book)
    result = make_executor(sessions, book, broker, chatty=chatty, explode=explode).run(execution_id)
    assert result.status == "failed"  # env-dump failed and the rollback raised
    [issued] = broker.issued
    secrets = [s for s in issued.secrets if len(s) >= 6]
    assert len(secrets) >= 5  # child token, username, password, kv value, otp

    # Everything a user or an operator could see.
    haystacks: dict[str, str] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).mappings().all()
            haystacks[f"table {table.name}"] = json.dumps([dict(r) for r in rows], default=str)
    haystacks["logs"] = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    outerr = capfd.readouterr()
    # The action's own print()s go to the service's stdout: that is the action author's
    # choice, outside the executor; what the executor itself writes must be clean.
    own_output = "\n".join(
        line
        for line in (outerr.out + outerr.err).splitlines()
        if not line.startswith(("stdout ", "stderr "))
    )
    haystacks["stdout/stderr"] = own_output
    haystacks["api"] = api_responses(engine, sessions, tmp_path, execution_id)

    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    assert "table execution_steps" in haystacks and "***" in haystacks["table execution_steps"]
    assert not vault_env.accessor_alive(issued.token_accessor)
    assert leaked_user.read_text() not in vault_env.pg_roles()


def api_responses(engine: sa.Engine, sessions: Sessions, data_dir: Path, execution_id: int) -> str:
    """GET the execution, its remediation and the audit trail over the real API."""
    from api.app import create_app
    from api.auth import Role, create_token
    from core.clock import SystemClock
    from core.settings import Settings
    from prognos.context import ServiceContext
    from tests.unit.api.helpers import TARGETS, shop_source

    context = ServiceContext(
        settings=Settings(data_dir=data_dir),
        engine=engine,
        sessions=sessions,
        source=shop_source(),
        targets=list(TARGETS),
        clock=SystemClock(),
    )
    with sessions() as session:
        _, token = create_token(session, role=Role.ADMIN, name="auditor", now=datetime.now(UTC))
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    bodies = []
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        execution = client.get(f"/v1/executions/{execution_id}", headers=headers)
        assert execution.status_code == 200, execution.text
        proposal_id = execution.json()["proposal_id"]
        for url in (
            f"/v1/executions/{execution_id}",
            f"/v1/remediations/{proposal_id}",
            "/v1/audit?limit=500",
        ):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, (url, response.text)
            bodies.append(response.text)
    return "\n".join(bodies)
