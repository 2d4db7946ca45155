"""A real Alertmanager notifies a running `prognos serve` through its webhook receiver, with an
`alerts` token in `http_config.authorization`: an alert posted to Alertmanager (or fired by a
real Prometheus' rule) opens an incident on its service, Alertmanager's repeats change nothing,
and its resolution closes the incident."""

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
from tests.support.servers import (
    PrometheusServer,
    ServerMissing,
    free_port,
    prometheus_available,
    start_alertmanager,
)

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


@pytest.mark.timeout(180)
def test_a_prometheus_rule_that_fires_and_resolves_opens_and_closes_an_incident(
    tmp_path: Path, serve: tuple[str, dict[str, str], subprocess.Popen[str]]
) -> None:
    """The whole chain: a real Prometheus evaluates a rule, fires it to Alertmanager, which
    notifies Prognos; the rule stops holding (its expression compares with a time 35 s ahead),
    Prometheus sends the resolution and the incident closes."""
    if not prometheus_available():
        need_server(ServerMissing("prometheus not installed (apt-get install prometheus)"))
    base, env, proc = serve
    _wait(f"{base}/readyz", proc=proc)
    alerts_token = _token(tmp_path, env, role="alerts")
    viewer = {"Authorization": f"Bearer {_token(tmp_path, env)}"}
    # Prometheus finds its Alertmanager some seconds after it starts (discovery syncs every
    # 5 s): the rule holds for 35 s, long enough to be sent, short enough to see it resolve.
    until = int(time.time()) + 35
    rules = tmp_path / "rules.yml"
    rules.write_text(
        f"""
groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: PaymentsDown
        expr: vector(time()) < {until}
        for: 0s
        labels: {{service: payments, severity: page}}
        annotations: {{summary: "payments: the health check fails"}}
"""
    )
    try:
        alertmanager = start_alertmanager(
            tmp_path / "am", _config(f"{base}/v1/alerts/alertmanager", alerts_token)
        )
    except ServerMissing as exc:
        need_server(exc)
    (tmp_path / "prom").mkdir()
    prometheus = PrometheusServer(
        tmp_path / "prom",
        free_port(),
        flags=("--rules.alert.resend-delay=1s",),
        config=f"""
global:
  evaluation_interval: 1s
rule_files: [{rules}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{alertmanager.port}"]
""",
    )
    try:
        prometheus.start()

        def incidents() -> list[dict[str, Any]]:
            answer = requests.get(f"{base}/v1/incidents", headers=viewer, timeout=5)
            return list(answer.json())

        (incident,) = _until("an incident from the rule", incidents, timeout=30)
        assert incident["services"] == ["payments"]
        assert incident["symptom"] == "payments: the health check fails"
        closed = _until(
            "the incident closed by the rule's resolution",
            lambda: [i for i in incidents() if i["status"] == "closed"],
            timeout=60,
        )
        assert [i["id"] for i in closed] == [incident["id"]]
        assert len(incidents()) == 1
    finally:
        prometheus.stop()
        alertmanager.stop()
    assert alerts_token not in _stop(proc)
