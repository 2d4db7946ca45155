"""Rules read from `/api/v1/rules` become targets with the rule's threshold; a failed read keeps
the last known rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.settings import PrometheusSettings, RulesSettings
from ingest.errors import SourceUnavailableError
from ingest.prometheus import PrometheusSource
from models.rules.domain import AlertRule
from models.rules.prometheus import parse_rules, read_rules
from models.rules.service import derive, refresh

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _answer() -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "groups": [
                {
                    "name": "shop",
                    "file": "/etc/prometheus/shop.yml",
                    "rules": [
                        {
                            "type": "alerting",
                            "name": "MemoryHigh",
                            "query": "memory > 9e+08",
                            "duration": 300,
                            "labels": {"severity": "page"},
                            "state": "pending",
                            "alerts": [
                                {
                                    "labels": {
                                        "alertname": "MemoryHigh",
                                        "severity": "page",
                                        "pod": "a-0",
                                    },
                                    "state": "pending",
                                    "activeAt": "2026-01-05T11:58:00.123Z",
                                }
                            ],
                        },
                        {"type": "recording", "name": "job:x:sum", "query": "sum(x)"},
                        {"type": "alerting", "name": "Down", "query": "up == 0", "duration": 0},
                    ],
                }
            ]
        },
    }


def test_alerting_rules_are_read_and_recording_rules_skipped() -> None:
    rules = parse_rules(_answer())
    assert [(r.group, r.name, r.for_seconds, r.state) for r in rules] == [
        ("shop", "MemoryHigh", 300, "pending"),
        ("shop", "Down", 0, "inactive"),
    ]
    assert rules[0].labels == {"severity": "page"}
    with pytest.raises(SourceUnavailableError, match="did not list its rules"):
        parse_rules({"status": "error", "error": "boom"})


def test_a_supported_rule_becomes_a_target_with_its_threshold() -> None:
    settings = RulesSettings(enabled=True, step=timedelta(seconds=30))
    rules = derive(parse_rules(_answer()), settings=settings)
    memory, down = rules
    assert memory.target is not None and memory.reason is None
    assert memory.target.name == "rule_shop_MemoryHigh"
    assert memory.target.query == "memory{}"
    assert memory.target.step_seconds == 30
    assert memory.target.breach is not None
    assert (memory.target.breach.threshold, memory.target.breach.direction) == (9e8, "above")
    assert memory.target.breach.hold == timedelta(seconds=300)  # the rule's for:
    touch = derive(parse_rules(_answer()), settings=RulesSettings(enabled=True, hold_for=False))
    assert touch[0].target is not None and touch[0].target.breach is not None
    assert touch[0].target.breach.hold == timedelta(0)  # reaching the threshold warns
    assert down.target is None and down.reason is not None and "equality" in down.reason


def test_names_are_sanitised_and_unique_whatever_the_order() -> None:
    a = AlertRule("api-v2 group", "Latency.High", "avg(x) > 1", 60)
    b = AlertRule("api-v2 group", "Latency.High", "avg(x) > 2", 60)  # same alert, a 2nd level
    settings = RulesSettings(enabled=True)
    first = [r.target.name for r in derive([a, b], settings=settings) if r.target]
    assert first[0] == "rule_api_v2_group_Latency_High"
    assert first[1].startswith("rule_api_v2_group_Latency_High_") and first[1] != first[0]
    # a configured target of the same name keeps its name; the rule gets the suffix
    taken = derive([a], settings=settings, taken=["rule_api_v2_group_Latency_High"])
    assert taken[0].target is not None
    assert taken[0].target.name.startswith("rule_api_v2_group_Latency_High_")


def test_include_and_exclude_keep_the_rule_listed_with_the_reason() -> None:
    rules = parse_rules(_answer())
    only = derive(rules, settings=RulesSettings(include=["^shop/Memory"]))
    assert [r.reason for r in only] == [None, "not matched by rules.include"]
    out = derive(rules, settings=RulesSettings(exclude=["High$"]))
    assert out[0].reason == "matched by rules.exclude"


def test_a_failed_read_keeps_the_last_known_rules_and_says_why() -> None:
    settings = RulesSettings(enabled=True)
    good = refresh(None, read=lambda: parse_rules(_answer()), settings=settings, taken=[], now=NOW)
    assert good.error is None and len(good.targets) == 1

    def down() -> list[AlertRule]:
        raise SourceUnavailableError("Prometheus at http://p:9090 is unreachable")

    later = NOW + timedelta(minutes=5)
    kept = refresh(good, read=down, settings=settings, taken=[], now=later)
    assert kept.rules == good.rules and kept.read_at == NOW and kept.tried_at == later
    assert kept.error == "Prometheus at http://p:9090 is unreachable"
    assert refresh(None, read=down, settings=settings, taken=[], now=later).rules == ()


def test_bad_include_patterns_are_refused_with_the_pattern() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RulesSettings(include=["(unclosed"])


def test_while_the_condition_holds_the_rule_fires_for_after_it_began() -> None:
    (memory, _) = parse_rules(_answer())
    alert = memory.active({"pod": "a-0"})
    assert alert is not None and alert.state == "pending"
    assert alert.active_at == int(datetime(2026, 1, 5, 11, 58, tzinfo=UTC).timestamp())
    assert memory.active({"pod": "a-1"}) is None


def test_a_failed_listing_never_echoes_the_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PrometheusSettings(
        url="http://127.0.0.1:9", auth={"type": "bearer", "token": "s3cret-token"}
    )
    source = PrometheusSource(settings)
    body = b'{"status": "error", "error": "proxy: token s3cret-token is not allowed"}'
    monkeypatch.setattr(source, "_request", lambda *a, **k: body)
    with pytest.raises(SourceUnavailableError) as caught:
        read_rules(source)
    assert "s3cret-token" not in caught.value.message and "***" in caught.value.message
    source.close()
