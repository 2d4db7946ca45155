"""Generated rule sets over the shop: deterministic per seed, answerable by the shop's source,
and the ground truth of when a rule fires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml

from core.clock import FixedClock, to_epoch
from core.settings import RulesSettings
from ingest.errors import QueryError
from models.rules.domain import AlertRule
from models.rules.service import derive
from sim.rules import evaluate, firing, render, rule_set
from sim.shop import Shop
from sim.source import ShopSource

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_a_rule_set_is_the_same_per_seed_and_varies_between_seeds() -> None:
    assert rule_set(3) == rule_set(3)
    assert rule_set(3) != rule_set(4)
    rules = rule_set(3)
    document = yaml.safe_load(render(rules))
    (group,) = document["groups"]
    assert [r["alert"] for r in group["rules"]] == [r.name for r in rules]
    assert all(r["for"].endswith("s") for r in group["rules"])


def test_prognos_forecasts_the_supported_rules_and_refuses_the_others() -> None:
    rules = rule_set(0)
    derived = derive(
        [AlertRule(r.group, r.name, r.expr, r.for_seconds) for r in rules],
        settings=RulesSettings(enabled=True),
    )
    for generated, found in zip(rules, derived, strict=True):
        assert found.supported == (generated.threshold is not None), found.reason
        if found.target is not None and found.target.breach is not None:
            assert found.target.breach.threshold == generated.threshold


def test_the_shop_answers_the_rules_queries() -> None:
    shop = Shop(seed=1)
    end = to_epoch(NOW)
    start = end - 600
    pods = evaluate(shop, "memory", start, end)
    assert len(pods) == 8 and all(len(s) == 11 for s in pods)
    by_service = evaluate(shop, "avg by (service) (memory)", start, end)
    assert sorted(s.key.label_dict["service"] for s in by_service) == sorted(
        {s.key.label_dict["service"] for s in pods}
    )
    cart = [s for s in pods if s.key.label_dict["service"] == "cart"]
    (mean,) = [s for s in by_service if s.key.label_dict["service"] == "cart"]
    np.testing.assert_allclose(mean.values, np.mean([s.values for s in cart], axis=0))
    assert len(evaluate(shop, 'memory{service="cart"}', start, end)) == len(cart)

    source = ShopSource(shop, FixedClock(NOW))
    target = derive(
        [AlertRule("shop", "X", "max by (service) (latency_p99) > 0.4", 60)],
        settings=RulesSettings(enabled=True, step=timedelta(seconds=60)),
    )[0].target
    assert target is not None
    pulled = source.query_range(target, start, end, 60)
    assert len(pulled.series) == 5 and {s.key.target for s in pulled.series} == {target.name}
    with pytest.raises(QueryError, match="the shop has the metrics"):
        source.query_range(target.model_copy(update={"query": "nope"}), start, end, 60)


def test_a_rule_fires_once_its_condition_held_for_its_for() -> None:
    values = np.array([0, 2, 2, 0, 2, 2, 2, 2, np.nan, 2], dtype=float)
    assert firing(values, 1.0, "above", 0).tolist() == [
        False, True, True, False, True, True, True, True, False, True
    ]  # fmt: skip
    assert np.flatnonzero(firing(values, 1.0, "above", 2)).tolist() == [6, 7]
    assert np.flatnonzero(firing(-values, -1.0, "below", 3)).tolist() == [7]
