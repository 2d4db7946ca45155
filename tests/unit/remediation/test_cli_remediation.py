"""`prognos playbook validate|list` and `prognos audit verify|show` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core.database import create_engine, migrate, session_factory
from prognos.cli import app
from remediation import audit
from remediation.tables import AuditRow
from tests.unit.remediation.helpers import audit_approvals

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "playbooks"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prognos.yaml").write_text(
        f"data_dir: {tmp_path / 'var'}\nremediation:\n  playbooks_dir: {DEPLOY}\n"
    )
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_validate_accepts_the_shipped_playbooks() -> None:
    code, output = invoke("playbook", "validate", str(DEPLOY))
    assert code == 0, output
    assert "restart-deployment.yaml: ok (restart-deployment v1" in output
    assert output.count(": ok (") == 4


def test_validate_points_at_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: restart\n"
        "version: 1\n"
        "steps:\n"
        "  - kind: command\n"
        "    name: restart\n"
        '    argv: "kubectl rollout restart deployment/cart"\n'
        "    retry: 3\n"
    )
    good = DEPLOY / "scale-up.yaml"
    code, output = invoke("playbook", "validate", str(bad), str(good))
    assert code == 2
    assert f"{bad}:6: steps[0].argv: a command must be an argv list" in output
    assert f"{bad}:7: steps[0].retry: unknown key" in output
    assert "scale-up.yaml: ok" in output


def test_list_shows_the_configured_playbooks(workdir: Path) -> None:
    code, output = invoke("playbook", "list")
    assert code == 0, output
    assert "rotate-db-credentials v1  risk=high" in output
    assert "quorum=2 (approver/admin)" in output


def chain(workdir: Path, count: int) -> tuple[Engine, sessionmaker[Session]]:
    """The configured database with `count` anchored entries."""
    engine = create_engine(f"sqlite:///{workdir / 'var' / 'prognos.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    audit_approvals(sessions, workdir / "var" / "audit-head", count)
    return engine, sessions


def test_audit_verify_and_show_detect_tampering(workdir: Path) -> None:
    engine, sessions = chain(workdir, 3)

    code, output = invoke("audit", "verify")
    assert code == 0, output
    assert "audit chain intact: 3 entries, anchored at seq 3" in output
    code, output = invoke("audit", "show", "--subject", "proposal:1")
    assert code == 0 and "approve" in output and "proposal:1" in output

    with sessions() as session:
        session.execute(sa.delete(AuditRow).where(AuditRow.seq == 3))
        session.commit()
    engine.dispose()
    code, output = invoke("audit", "verify")
    assert code == 1
    assert "TAMPERED" in output and "removed from the tail" in output


def test_audit_reanchor_asks_then_records_itself(workdir: Path) -> None:
    engine, sessions = chain(workdir, 4)
    with sessions() as session:  # as after restoring a backup taken at entry 2
        session.execute(sa.delete(AuditRow).where(AuditRow.seq > 2))
        session.commit()
    engine.dispose()

    code, output = invoke("audit", "verify")
    assert code == 1
    assert "the chain is behind its anchor" in output and "entries 3..4" in output
    assert "prognos audit reanchor --reason TEXT" in output

    result = CliRunner().invoke(app, ["audit", "reanchor", "--reason", "drill"], input="n\n")
    assert result.exit_code == 1 and "nothing changed" in result.output
    code, output = invoke("audit", "reanchor", "--reason", "drill", "--yes", "--actor", "bob")
    assert code == 0, output
    assert "re-anchored: entry 3 (reanchor)" in output
    code, output = invoke("audit", "verify")
    assert code == 0 and "audit chain intact: 3 entries, anchored at seq 3" in output
    code, output = invoke("audit", "show", "--json", "--after", "2")
    assert '"actor": "bob"' in output and '"reason": "drill"' in output
    result = CliRunner().invoke(app, ["audit", "reanchor", "--reason", "again", "--yes"])
    assert isinstance(result.exception, audit.NothingToReanchorError)
    assert "nothing to re-anchor" in result.exception.message
