"""The shipped example configuration is valid, so a user who copies it gets a working start."""

from __future__ import annotations

from pathlib import Path

from core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_means_prometheus() -> None:
    settings = load_settings(ROOT / "deploy" / "prognos.example.yaml")
    assert settings.effective_source == "prometheus"
    assert [t.name for t in settings.targets] == ["cpu", "memory", "latency_p99", "error_ratio"]
    assert all(t.step_seconds == 60 for t in settings.targets)
    assert settings.database_url.startswith("sqlite:///")
