"""Which alerting-rule expressions are a series against a constant, and why the others are not."""

from __future__ import annotations

import pytest

from models.rules.promql import Comparison, Unsupported, classify


@pytest.mark.parametrize(
    ("expr", "query", "op", "threshold"),
    [
        ("memory_bytes > 9e8", "memory_bytes{}", ">", 9e8),
        ("rate(errors_total[5m]) >= 0.05", "rate(errors_total{}[5m])", ">=", 0.05),
        ("avg by (service) (latency) < 0.1", "avg by (service)(latency{})", "<", 0.1),
        ("(up{job='api'}) <= 0", 'up{job="api"}', "<=", 0.0),
        # the constant first: the comparison is read from the series' side
        ("0.5 < avg by (service) (latency)", "avg by (service)(latency{})", ">", 0.5),
        ("-1 >= x", "x{}", "<=", -1.0),
        ("x > (2)", "x{}", ">", 2.0),
        (
            "sum(a) by (job) / sum(b) by (job) > 0.9",
            "sum by (job)(a{}) / sum by (job)(b{})",
            ">",
            0.9,
        ),
    ],
)
def test_a_series_against_a_constant_is_forecast(
    expr: str, query: str, op: str, threshold: float
) -> None:
    found = classify(expr)
    assert found == Comparison(query=query, op=op, threshold=threshold)
    assert found.direction == ("above" if op.startswith(">") else "below")


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("x > bool 1", "`bool`"),
        ("x > 1 and y < 2", "`and` combines"),
        ("x unless y", "`unless` combines"),
        ("x or y", "`or` combines"),
        ("x > y", "no constant threshold"),
        ("x > scalar(y)", "no constant threshold"),
        ("x == 1", "`==` tests equality"),
        ("x != 1", "`!=` tests equality"),
        ("absent(up)", "no comparison with a constant"),
        ("up", "no comparison with a constant"),
        ("x + 1", "not a comparison"),
        ("x > 1 > 2", "itself a comparison"),
        ("x > Inf", "not a finite number"),
        ("x >", "does not parse"),
    ],
)
def test_other_shapes_are_refused_with_the_reason(expr: str, why: str) -> None:
    found = classify(expr)
    assert isinstance(found, Unsupported)
    assert why in found.reason
