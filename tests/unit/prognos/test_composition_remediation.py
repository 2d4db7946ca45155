"""The composition root wires remediation: playbooks, the audit anchor, and an executor that an
approval over HTTP wakes at once (no scheduler tick in between)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role, create_token
from core.database import session_scope
from core.settings import Settings
from prognos.composition import build_context
from prognos.context import ServiceContext

PLAYBOOK = """\
name: echo
version: 1
match: {services: ["*"], kinds: [breach]}
parameters:
  word: {type: string, default: hello, pattern: "[a-z]+"}
steps:
  - {kind: python, name: say, action: noop, args: {word: "{{ params.word }}"}, timeout: 5s}
approval: {quorum: 1, expires_after: 1h}
"""


def _settings(tmp_path: Path, playbooks: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "state",
        remediation={"playbooks_dir": playbooks},  # type: ignore[arg-type]
    )


def _token(context: ServiceContext, role: Role) -> str:
    with session_scope(context.sessions) as session:
        _, token = create_token(session, name=f"{role.value}-1", role=role, now=context.clock.now())
        session.commit()
    return token


def test_an_approval_runs_the_playbook_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "echo.yaml").write_text(PLAYBOOK)
    context = build_context(_settings(tmp_path, folder))
    assert set(context.loaded_playbooks()) == {"echo"}
    operator, approver = _token(context, Role.OPERATOR), _token(context, Role.APPROVER)
    with TestClient(create_app(context)) as client:  # lifespan starts the executor
        made = client.post(
            "/v1/remediations",
            json={"playbook": "echo", "target": "cart", "params": {"word": "hi"}},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert made.status_code in (200, 201), made.text
        proposal = made.json()
        approved = client.post(
            f"/v1/remediations/{proposal['id']}/approve",
            json={"digest": proposal["digest"]},
            headers={"Authorization": f"Bearer {approver}"},
        )
        assert approved.status_code == 200, approved.text
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            shown = client.get(
                f"/v1/remediations/{proposal['id']}",
                headers={"Authorization": f"Bearer {approver}"},
            ).json()
            status = shown["status"]
            if status in ("succeeded", "failed", "rolled_back"):
                break
            time.sleep(0.05)
        assert status == "succeeded", shown
    assert (tmp_path / "state" / "audit-head").is_file()  # the chain head is anchored outside


def test_broken_playbooks_leave_the_rest_of_the_service_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "bad.yaml").write_text(
        "name: bad\nversion: 1\nsteps:\n  - kind: command\n    argv: rm -rf /\n"
    )
    with caplog.at_level(logging.ERROR):
        context = build_context(_settings(tmp_path, folder))
    assert context.loaded_playbooks() == {}
    assert "bad.yaml:" in caplog.text and "playbook validate" in caplog.text
