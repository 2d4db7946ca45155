"""A real Alertmanager notifies a running `prognos serve` through its webhook receiver, with an
`alerts` token in `http_config.authorization`: an alert posted to Alertmanager opens an incident
on its service, Alertmanager's repeats change nothing, and its resolution closes the incident."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import need_server
from tests.e2e.test_processes import _cli, _env, _stop, _token, _wait
from tests.support.servers import ServerMissing, free_port, start_alertmanager

pytestmark = pytest.mark.timeout(120)


def _config(webhook: str, token: str) -> str:
    return f"""
route:
  receiver: prognos
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: prognos
    webhook_configs:
      - url: {webhook}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


def _until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str]]]:
    env = _env(f"sqlite:///{tmp_path / 'var' / 'prognos.db'}")
    port = free_port()
    proc = subprocess.Popen(
        _cli("serve", "--port", str(port)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", env, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_alertmanager_notifies_prognos_which_opens_and_closes_an_incident(
    tmp_path: Path, serve: tuple[str, dict[str, str], subprocess.Popen[str]]
) -> None:
    base, env, proc = serve
    _wait(f"{base}/readyz", proc=proc)
    alerts_token = _token(tmp_path, env, role="alerts")
    viewer = {"Authorization": f"Bearer {_token(tmp_path, env)}"}
    try:
        alertmanager = start_alertmanager(
            tmp_path / "am", _config(f"{base}/v1/alerts/alertmanager", alerts_token)
        )
    except ServerMissing as exc:
        need_server(exc)
    try:
        started = datetime.now(UTC).replace(microsecond=0)
        alert = {
            "labels": {"alertname": "CheckoutErrors", "service": "checkout", "severity": "page"},
            "annotations": {"summary": "checkout 5xx above 5%"},
            "startsAt": started.isoformat(),
            "generatorURL": "http://prometheus.example/graph",
        }
        alertmanager.post([alert])

        def incidents() -> list[dict[str, Any]]:
            answer = requests.get(f"{base}/v1/incidents", headers=viewer, timeout=5)
            return list(answer.json())

        (incident,) = _until("an incident", incidents)
        assert incident["services"] == ["checkout"]
        assert incident["symptom"] == "checkout 5xx above 5%"
        assert incident["status"] == "open"

        # Alertmanager repeats the notification every 2 s (repeat_interval): stored once,
        # still one incident.
        db = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'prognos.db'}")
        try:

            def repeated() -> bool:
                with db.connect() as connection:
                    rows = connection.execute(
                        sa.text("SELECT received_at, seen_at FROM alertmanager_received")
                    ).all()
                return len(rows) == 1 and rows[0].seen_at > rows[0].received_at

            _until("a repeat delivery", repeated, timeout=20)
        finally:
            db.dispose()
        assert [i["id"] for i in incidents()] == [incident["id"]]

        # Resolved in Alertmanager (ends now): the notification closes the incident.
        alertmanager.post(
            [{**alert, "endsAt": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}]
        )
        closed = _until(
            "the incident closed",
            lambda: [i for i in incidents() if i["status"] == "closed"],
        )
        assert [i["id"] for i in closed] == [incident["id"]]
    finally:
        alertmanager.stop()
    output = _stop(proc)
    assert alerts_token not in output  # the token is never logged
    assert "Traceback" not in output
