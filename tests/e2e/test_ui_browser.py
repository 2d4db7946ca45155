"""The approvals page in a real (headless) Chromium against `prognos serve`: an approver
approves and watches the run finish; approving one's own proposal shows the API's refusal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import need_server
from tests.e2e.test_processes import _cli, _env, _start, _stop, _token, _wait, started  # noqa: F401
from tests.support.servers import ServerMissing, free_port

pytestmark = pytest.mark.timeout(120)
CHROMIUM = os.environ.get("PROGNOS_TEST_CHROMIUM", "/usr/bin/chromium")
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


def _browser():  # type: ignore[no-untyped-def]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_server(ServerMissing("playwright is not installed (dev extra)"))
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        need_server(ServerMissing(f"no Chromium at {CHROMIUM} (apt-get install chromium)"))
    return sync_playwright


def _propose(base: str, token: str) -> dict:
    response = requests.post(
        f"{base}/v1/remediations",
        json={"playbook": "echo", "target": "cart", "params": {"word": "hi"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_approve_in_the_browser_and_follow_the_run(tmp_path: Path, started: list) -> None:  # noqa: F811
    sync_playwright = _browser()
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "echo.yaml").write_text(PLAYBOOK)
    env = _env(f"sqlite:///{tmp_path / 'var' / 'prognos.db'}")
    env["PROGNOS_REMEDIATION__PLAYBOOKS_DIR"] = str(playbooks)
    port = free_port()
    proc = _start(_cli("serve", "--port", str(port)), tmp_path, env, started)
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/readyz")
    operator = _token(tmp_path, env, role="operator")
    approver = _token(tmp_path, env, role="approver")
    admin = _token(tmp_path, env, role="admin")
    first = _propose(base, operator)
    own = _propose(base, admin)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.goto(f"{base}/ui")
        page.fill("#token", approver)
        page.click("#use-token")
        page.click(f"tr.row[data-id='{first['id']}']")
        page.wait_for_selector("#approve")
        assert first["digest"] in page.inner_text("#detail")
        page.click("#approve")
        # The page follows the run (no eval here: the page's policy forbids it, rightly).
        page.wait_for_selector("#detail span.status.succeeded", timeout=30_000)
        assert "execution status: succeeded" in " ".join(page.inner_text("#detail").split())
        assert "say" in page.inner_text("#detail")  # the step and its output are shown
        assert approver not in page.url and approver not in page.content()

        # The admin proposed the second one: approving it is four-eyes, refused with a reason.
        page.fill("#token", admin)
        page.click("#use-token")
        page.click(f"tr.row[data-id='{own['id']}']")
        page.wait_for_selector("#approve")
        page.click("#approve")
        page.wait_for_selector("#message.error")
        message = page.inner_text("#message")
        assert "409" in message and "propos" in message.lower(), message
        browser.close()
    _stop(proc)
