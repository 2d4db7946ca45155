"""promtool accepts the shipped Prometheus scrape config and alert rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_server
from tests.support.servers import ServerMissing

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        need_server(ServerMissing("promtool not installed (apt-get install prometheus)"))
    assert path
    return path


def test_alert_rules_are_valid(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prognos-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_is_valid(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    """Each rule fires when it should and stays quiet otherwise (prognos-alerts.test.yml)."""
    result = subprocess.run(
        [promtool, "test", "rules", "prognos-alerts.test.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_severity_summary_and_a_unit_test() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prognos-alerts.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"] if "alert" in r]
    tests = yaml.safe_load((DEPLOY / "prognos-alerts.test.yml").read_text())
    tested = {
        case["alertname"]
        for group in tests["tests"]
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
    untested = {a["alert"] for a in alerts} - tested
    assert not untested, f"alerts without a firing unit test: {sorted(untested)}"
