"""The page in a real (headless) Chromium against `prognos serve`: an approver approves and
watches the run finish; approving one's own proposal shows the API's refusal; with a series,
its kept forecasts, an alarm, a predicted breach and an incident stored, the page draws the
chart, shows the ETA and the incident's top suspect, and approves from the incident."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from core.database import create_engine, session_factory
from ingest.tables import SampleRow, SeriesRow
from models.tables import AnomalyScoreRow, BreachRow, ForecastHistoryRow, ForecastRow
from rca.findings import Evidence, RcaReport, Suspect
from rca.tables import IncidentRow
from tests.conftest import need_server
from tests.e2e.test_processes import _cli, _env, _start, _token, _wait, started  # noqa: F401
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


def _propose(base: str, token: str, target: str = "cart") -> dict:
    response = requests.post(
        f"{base}/v1/remediations",
        json={"playbook": "echo", "target": target, "params": {"word": "hi"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _serve(tmp_path: Path, started: list) -> tuple[str, dict[str, str], str]:  # noqa: F811
    """`prognos serve` with the echo playbook: (base URL, environment, database URL)."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "echo.yaml").write_text(PLAYBOOK)
    url = f"sqlite:///{tmp_path / 'var' / 'prognos.db'}"
    env = _env(url)
    env["PROGNOS_REMEDIATION__PLAYBOOKS_DIR"] = str(playbooks)
    port = free_port()
    proc = _start(_cli("serve", "--port", str(port)), tmp_path, env, started)
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/readyz", proc=proc)
    return base, env, url


def _launch(p):  # type: ignore[no-untyped-def]
    return p.chromium.launch(
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


def test_approve_in_the_browser_and_follow_the_run(tmp_path: Path, started: list) -> None:  # noqa: F811
    sync_playwright = _browser()
    base, env, _ = _serve(tmp_path, started)
    operator = _token(tmp_path, env, role="operator")
    approver = _token(tmp_path, env, role="approver")
    admin = _token(tmp_path, env, role="admin")
    first = _propose(base, operator)
    own = _propose(base, admin)

    with sync_playwright() as p:
        browser = _launch(p)
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


STEP = 60


def _seed_story(url: str) -> tuple[int, int]:
    """A leaking memory series (two hours of values, the band forecast 15 minutes before each,
    an alarm), its predicted breach and an incident naming `payment`: (series id, incident id)."""
    now = int(time.time()) // STEP * STEP
    stamps = [now - STEP * i for i in range(120, -1, -1)]
    engine = create_engine(url)
    try:
        with session_factory(engine)() as session:
            seen = datetime.fromtimestamp(now, UTC)
            series = SeriesRow(
                target="memory", key="leak", labels={"service": "payment", "pod": "payment-0"},
                service="payment", first_seen=seen, last_seen=seen,
            )  # fmt: skip
            session.add(series)
            session.flush()
            for n, ts in enumerate(stamps):
                value = 0.5 + 0.003 * n
                session.add(SampleRow(series_id=series.id, ts=ts, value=value))
                session.add(
                    ForecastHistoryRow(
                        series_id=series.id, target_ts=ts, made_at=ts - 900,
                        p10=value - 0.04, p50=value - 0.01, p90=value + 0.03,
                    )
                )  # fmt: skip
            alarm_at = stamps[100]
            session.add(
                AnomalyScoreRow(
                    series_id=series.id, ts=alarm_at, z=5.0, magnitude=5.0, score=5.0,
                    model="detector", alarm=True, evidence={"z": 5.0},
                )
            )  # fmt: skip
            session.add(
                ForecastRow(
                    series_id=series.id, made_at=now, step=STEP, model="lstm-v1",
                    quantiles=[0.1, 0.5, 0.9], created_at=seen,
                    values=[[0.86 + h / 300, 0.87 + h / 300, 0.9 + h / 300] for h in range(30)],
                )
            )  # fmt: skip
            session.add(
                BreachRow(
                    series_id=series.id, made_at=now, threshold=0.95, direction="above",
                    probability=0.92, eta=now + 900, streak=4, warning=True,
                    warning_since=now - 180, model="lstm-v1", updated_at=seen,
                )
            )  # fmt: skip
            onset = datetime.fromtimestamp(alarm_at, UTC)
            report = RcaReport(
                started_at=onset,
                window=(onset, seen),
                baseline=(datetime.fromtimestamp(now - 7200, UTC), onset),
                symptom="frontend latency p99 up",
                suspects=[
                    Suspect(
                        service="payment", operation="charge", score=7.5,
                        evidence=[Evidence("metric", "memory", 0.5, 0.86, 6.1, "leaking")],
                        path=["frontend", "orders", "payment"], named_by=["metric"],
                    ),
                    Suspect("orders", None, 2.1, path=["frontend", "orders"]),
                ],
                operations=[],
            )  # fmt: skip
            incident = IncidentRow(
                status="open", opened_at=onset, updated_at=seen, last_alarm_at=onset,
                closed_at=None, services=["payment", "orders"], series=[series.id],
                symptom=report.symptom, top_suspect="payment", report=report.to_dict(),
                markdown="# report", html="<p id='stored-html'>stored report</p>",
            )  # fmt: skip
            session.add(incident)
            session.commit()
            return series.id, incident.id
    finally:
        engine.dispose()


def test_the_page_tells_the_story_chart_breach_incident_and_approval(
    tmp_path: Path,
    started: list,  # noqa: F811
) -> None:
    sync_playwright = _browser()
    base, env, url = _serve(tmp_path, started)
    series_id, incident_id = _seed_story(url)
    operator = _token(tmp_path, env, role="operator")
    approver = _token(tmp_path, env, role="approver")
    proposal = _propose(base, operator, target="payment")

    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page()
        page.goto(f"{base}/ui#series")  # the tab is in the address
        page.fill("#token", approver)
        page.click("#use-token")
        # The series with a breach warning comes first; its chart has the band and the actual.
        # (a selector, not a script: the page's policy forbids eval, rightly)
        page.wait_for_selector("#chart-band[d^='M']", state="attached")
        assert page.input_value("#series-pick") == str(series_id)
        for path in ("#chart-band", "#chart-actual", "#chart-ahead"):
            assert page.get_attribute(path, "d"), path
        assert page.locator("#chart-limit").count() == 1
        assert page.locator("circle.anomaly[data-alarm='true']").count() == 1
        assert "ETA" in page.inner_text("#chart-breach")

        page.click("#tab-breaches")
        row = page.locator(f"#breach-rows tr[data-series-id='{series_id}']")
        row.wait_for()
        assert "92%" in row.inner_text() and "15 min after the forecast" in row.inner_text()
        assert row.locator("td.eta").get_attribute("data-eta")

        page.click("#tab-incidents")
        page.click(f"tr.row[data-incident-id='{incident_id}']")
        page.wait_for_selector(f"#incident-detail[data-incident-id='{incident_id}'] #top-suspect")
        assert page.get_attribute("#top-suspect", "data-top-suspect") == "payment"
        first = page.locator("#suspects li.suspect[data-rank='1']")
        assert first.get_attribute("data-service") == "payment"
        assert "frontend → orders → payment" in first.inner_text()
        assert "leaking" in first.inner_text()  # the evidence, as text
        assert page.locator("#stored-html").count() == 0  # the stored HTML is never shown

        page.click(f"#incident-detail button.approve[data-proposal-id='{proposal['id']}']")
        page.wait_for_selector("#message.info")
        page.click("#tab-executions")
        done = page.locator(
            f".execution[data-proposal-id='{proposal['id']}'][data-status='succeeded']"
        )
        done.wait_for(timeout=30_000)
        assert done.locator("tr.step[data-step-status='succeeded']").count() >= 1
        assert "say" in done.inner_text()
        browser.close()
    approved = requests.get(
        f"{base}/v1/remediations/{proposal['id']}",
        headers={"Authorization": f"Bearer {approver}"},
        timeout=10,
    ).json()
    assert [a["decision"] for a in approved["approvals"]] == ["approve"]
