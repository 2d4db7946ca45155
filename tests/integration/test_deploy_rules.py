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
