"""The Rules tab in a real (headless) Chromium against `prognos serve` (no daemon: the API
process reads Prometheus' rules itself): every alerting rule of a real Prometheus is listed,
the unsupported one with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import need_server
from tests.e2e.test_processes import _cli, _env, _start, _token, _wait, started  # noqa: F401
from tests.e2e.test_ui_browser import _browser, _launch
from tests.integration.test_rules_prometheus import start_with_rules
from tests.support.servers import ServerMissing, free_port

pytestmark = pytest.mark.timeout(120)


def test_the_rules_tab_lists_prometheus_rules(tmp_path: Path, started: list) -> None:  # noqa: F811
    sync_playwright = _browser()
    try:
        prometheus = start_with_rules(tmp_path / "prometheus")
    except ServerMissing as exc:
        need_server(exc)
    try:
        env = _env(f"sqlite:///{tmp_path / 'var' / 'prognos.db'}")
        env.update(
            {
                "PROGNOS_PROMETHEUS__URL": prometheus.url,
                "PROGNOS_RULES__ENABLED": "true",
                "PROGNOS_REMEDIATION__PLAYBOOKS_DIR": str(tmp_path / "none"),
            }
        )
        port = free_port()
        proc = _start(_cli("serve", "--port", str(port)), tmp_path, env, started)
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/readyz", proc=proc)
        viewer = _token(tmp_path, env)
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page()
            page.goto(f"{base}/ui#rules")
            page.fill("#token", viewer)
            page.click("#use-token")
            down = page.wait_for_selector("#rule-rows tr.rule[data-rule='shop/InstanceDown']")
            assert down is not None and "not forecast" in down.inner_text()
            assert "equality" in down.inner_text()
            memory = page.inner_text("#rule-rows tr.rule[data-rule='shop/MemoryNearLimit']")
            assert "shop_memory_bytes > 9e+08" in memory and "no series forecast yet" in memory
            assert "read at" in page.inner_text("#rules-read")
            browser.close()
    finally:
        prometheus.stop()
