"""`GET /v1/rules/forecast`: every alerting rule, the supported ones with their series'
forecasts against the rule's own threshold and a firing ETA that includes `for:`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from core.clock import FixedClock, to_epoch
from ingest.errors import SourceUnavailableError
from models.rules.domain import AlertRule
from prognos import jobs
from prognos.context import ServiceContext
from tests.unit.api.helpers import NOW, MakeContext, bearer
from tests.unit.fakes import FakeSeries, FakeSource

RULES = [
    # cpu of every pod is ts/1000 (about 1.77e6 now): already beyond 1, not below 0
    AlertRule("shop", "CpuHigh", "avg by (pod) (cpu) > 1", 600, labels={"severity": "page"}),
    AlertRule("shop", "CpuGone", "0 > cpu", 0),
    AlertRule("shop", "Both", "cpu > 1 and memory > 2", 0),
]


def _context(make_context: MakeContext) -> ServiceContext:
    source = FakeSource(
        [
            FakeSeries("rule_shop_CpuHigh", {"pod": "a-0"}),
            FakeSeries("rule_shop_CpuHigh", {"pod": "a-1"}),
            FakeSeries("rule_shop_CpuGone", {"pod": "a-0"}),
        ]
    )
    context = make_context(source, rules={"enabled": True, "refresh": "5m"})
    return dataclasses.replace(context, targets=[], rule_reader=lambda: list(RULES))


def _cycles(context: ServiceContext, count: int) -> None:
    assert isinstance(context.clock, FixedClock)
    for _ in range(count):
        jobs.refresh_rules(context)
        jobs.ingest_cycle(context)
        jobs.forecast_cycle(context)
        context.clock.advance(timedelta(minutes=1))


def test_rules_are_listed_with_their_forecasts_and_firing_eta_warned_first(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = _context(make_context)
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        _cycles(context, 5)  # the default warning needs 4 forecasts in a row
        body = client.get("/v1/rules/forecast", headers=bearer(token)).json()
        warned = client.get(
            "/v1/rules/forecast", params={"warning_only": "true"}, headers=bearer(token)
        ).json()
    assert [r["name"] for r in warned["rules"]] == ["CpuHigh"]
    assert body["enabled"] is True and body["error"] is None
    high, gone, both = body["rules"]
    assert (high["supported"], high["target"], high["threshold"], high["direction"]) == (
        True,
        "rule_shop_CpuHigh",
        1.0,
        "above",
    )
    assert high["query"] == "avg by (pod)(cpu{})" and high["for_seconds"] == 600
    assert len(high["series"]) == 2 and high["warning"] is True
    for s in high["series"]:
        assert s["probability"] == 1.0 and s["warning"] is True and s["value"] > 1
        crossing, firing = s["crossing_eta"], s["firing_eta"]
        assert crossing is not None and firing is not None
        assert (
            to_epoch(datetime.fromisoformat(firing)) - to_epoch(datetime.fromisoformat(crossing))
            == 600
        )
    assert high["firing_eta"] == min(s["firing_eta"] for s in high["series"])
    assert (gone["direction"], gone["threshold"]) == ("below", 0.0)
    assert gone["warning"] is False and gone["series"][0]["probability"] < 0.5
    assert both["supported"] is False and "`and` combines" in both["reason"]
    assert both["series"] == [] and both["target"] is None


def test_prometheus_down_keeps_the_last_rules_and_says_so(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = _context(make_context)
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        _cycles(context, 1)

        def down() -> list[AlertRule]:
            raise SourceUnavailableError("Prometheus at http://p:9090 is unreachable")

        context.rule_reader = down
        assert isinstance(context.clock, FixedClock)
        context.clock.advance(timedelta(minutes=5))
        body = client.get("/v1/rules/forecast", headers=bearer(token)).json()
    assert body["error"] == "Prometheus at http://p:9090 is unreachable"
    assert body["read_at"].startswith(NOW.strftime("%Y-%m-%dT%H:%M"))
    assert [r["name"] for r in body["rules"]] == ["CpuHigh", "CpuGone", "Both"]
    assert {t.name for t in context.targets} == {"rule_shop_CpuHigh", "rule_shop_CpuGone"}


def test_off_by_default_and_needs_a_token(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    with TestClient(create_app(make_context())) as client:
        assert client.get("/v1/rules/forecast").status_code == 401
        body = client.get("/v1/rules/forecast", headers=bearer(issue(Role.VIEWER))).json()
    assert body == {"enabled": False, "read_at": None, "error": None, "rules": []}
