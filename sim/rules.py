"""Generated alerting-rule sets over the simulated shop, the PromQL they need answered, and
when each rule truly fires.

A rule set (`rule_set(seed)`) holds rules an SRE would write for the shop — memory near the
pod limit, a service's p99 latency over an SLO, a pod's CPU saturated, a service's error share
high — with thresholds and `for:` durations drawn per seed from the ranges below (every one
above the shop's normal peaks, so only a fault fires them), in both written forms
(`expr > c` and `c < expr`), plus a few rules Prognos cannot forecast (an equality, a `bool`
comparison, two conditions joined by `and`), so that the listing's reasons are exercised too.
`render()` writes a set as a Prometheus rule file.

`evaluate()` answers the small PromQL subset those rules use over the shop: a shop metric with
`=` matchers, optionally inside `avg|max|min|sum by (labels) (...)`.

Ground truth (`firing`): a rule fires at the step where its condition has held continuously
for its `for:` (at every step from the first one, as Prometheus evaluates it), and keeps firing
while the condition holds; a new firing needs the condition to have stopped holding first.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import promql_parser
import yaml

from ingest.domain import SeriesData, SeriesKey
from sim.errors import SimInputError
from sim.shop import MEMORY_LIMIT, TARGETS, Shop

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

GROUP = "shop"
_AGGREGATIONS: dict[str, Callable[..., FloatArray]] = {
    "avg": np.nanmean,
    "max": np.nanmax,
    "min": np.nanmin,
    "sum": np.nansum,
}


@dataclass(frozen=True, slots=True)
class GeneratedRule:
    name: str
    expr: str
    for_seconds: int
    threshold: float | None  #: None: a rule Prognos cannot forecast (kept for the listing)
    watches: str  #: the fault kind it is written for ("" for the unsupported ones)
    group: str = GROUP


#: (name, PromQL with {c} for the threshold, threshold range, `for:` choices in s, fault kind)
_TEMPLATES: tuple[tuple[str, str, tuple[float, float], tuple[int, ...], str], ...] = (
    ("PodMemoryNearLimit", "memory > {c}", (0.85 * MEMORY_LIMIT, 0.95 * MEMORY_LIMIT),
     (0, 60, 120, 300), "leak"),
    ("ServiceMemoryHigh", "{c} < max by (service) (memory)",
     (0.80 * MEMORY_LIMIT, 0.92 * MEMORY_LIMIT), (60, 300), "leak"),
    ("ServiceLatencyHigh", "avg by (service) (latency_p99) > {c}", (0.35, 0.50),
     (60, 300, 600), "latency"),
    ("PodCpuSaturated", "cpu > {c}", (0.85, 0.95), (120, 300), "cpu"),
    ("ServiceErrorsHigh", "avg by (service) (errors) > {c}", (0.03, 0.08), (60, 300), "errors"),
)  # fmt: skip

#: Rules whose shape Prognos refuses (docs/rules.md says why); never forecast, always listed.
UNSUPPORTED: tuple[GeneratedRule, ...] = (
    GeneratedRule("ServiceFlapping", "max by (service) (errors) == 1", 0, None, ""),
    GeneratedRule("ErrorsFlag", "avg by (service) (errors) > bool 0.1", 0, None, ""),
    GeneratedRule("SlowAndFailing", "latency_p99 > 0.4 and errors > 0.05", 300, None, ""),
)


def rule_set(seed: int) -> list[GeneratedRule]:
    """The seed's rules: every template once, threshold and `for:` drawn per seed, then the
    unsupported examples."""
    rng = np.random.default_rng([seed, zlib.crc32(b"rules")])
    out = []
    for name, template, (lo, hi), durations, kind in _TEMPLATES:
        threshold = float(f"{rng.uniform(lo, hi):.3g}")
        wait = int(rng.choice(durations))
        out.append(GeneratedRule(name, template.format(c=f"{threshold:g}"), wait, threshold, kind))
    return [*out, *UNSUPPORTED]


def render(rules: Sequence[GeneratedRule]) -> str:
    """A Prometheus rule file (`rule_files:`) holding the rules, one group per group name."""
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rules:
        groups.setdefault(r.group, []).append(
            {
                "alert": r.name,
                "expr": r.expr,
                "for": f"{r.for_seconds}s",
                "labels": {"severity": "page"},
            }
        )
    document = {"groups": [{"name": g, "rules": rs} for g, rs in groups.items()]}
    return yaml.safe_dump(document, sort_keys=False)


def evaluate(shop: Shop, query: str, start: int, end: int) -> list[SeriesData]:
    """The series `query` gives over the shop at its step-aligned times in [start, end]."""
    try:
        node = promql_parser.parse(query)
    except ValueError as exc:
        raise SimInputError(f"{query!r} does not parse: {exc}") from None
    return _evaluate(shop, node, query, start, end)


def _evaluate(
    shop: Shop, node: promql_parser.Expr, query: str, start: int, end: int
) -> list[SeriesData]:
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    if isinstance(node, promql_parser.VectorSelector):
        if node.name not in TARGETS or node.offset is not None or node.at is not None:
            raise SimInputError(f"{query!r}: the shop has the metrics {', '.join(TARGETS)}")
        wanted = {}
        for m in node.matchers.matchers:
            if str(m.op) != "MatchOp.Equal":
                raise SimInputError(f"{query!r}: the shop answers `=` label matchers only")
            wanted[m.name] = m.value
        return [
            s
            for s in shop.series(node.name, start, end)
            if all(s.key.label_dict.get(k) == v for k, v in wanted.items())
        ]
    if isinstance(node, promql_parser.AggregateExpr) and str(node.op) in _AGGREGATIONS:
        modifier = node.modifier
        if modifier is not None and modifier.type != promql_parser.AggModifierType.By:
            raise SimInputError(f"{query!r}: the shop answers `by (...)` aggregations only")
        by = list(modifier.labels) if modifier is not None else []
        return _aggregate(_evaluate(shop, node.expr, query, start, end), by, str(node.op))
    raise SimInputError(
        f"{query!r}: the shop answers a metric with `=` matchers, optionally inside "
        f"{'|'.join(_AGGREGATIONS)} by (...)"
    )


def _aggregate(series: list[SeriesData], by: list[str], op: str) -> list[SeriesData]:
    groups: dict[tuple[tuple[str, str], ...], list[SeriesData]] = {}
    for s in series:
        own = s.key.label_dict
        groups.setdefault(tuple((k, own[k]) for k in by if k in own), []).append(s)
    out = []
    for labels, members in sorted(groups.items(), key=lambda g: g[0]):
        grid = np.unique(np.concatenate([m.timestamps for m in members]))
        table = np.full((len(members), len(grid)), np.nan)
        for row, m in enumerate(members):
            table[row, np.searchsorted(grid, m.timestamps)] = m.values
        values = _AGGREGATIONS[op](table, axis=0)
        out.append(SeriesData(SeriesKey.of("", dict(labels)), grid, np.asarray(values, float)))
    return out


def firing(values: FloatArray, threshold: float, direction: str, for_steps: int) -> BoolArray:
    """Where the rule fires: its condition (`values` beyond `threshold`; NaN: not) has held at
    this step and the `for_steps` before it."""
    values = np.asarray(values, dtype=np.float64)
    if direction == "above":
        holds = np.nan_to_num(values, nan=-np.inf) > threshold
    else:
        holds = np.nan_to_num(values, nan=np.inf) < threshold
    # length of the run of holding steps ending at each index
    run = np.zeros(len(holds), dtype=np.int64)
    count = 0
    for i, h in enumerate(holds):
        count = count + 1 if h else 0
        run[i] = count
    return run > max(0, for_steps)
