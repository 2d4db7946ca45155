"""Root-cause ranking evaluated on labelled cases: AC@k and Avg@5 at service level, overall and
per fault type, for our method and the published BARO and N-Sigma baselines (rca.baselines) in
the same run, on the same windows.

AC@k = share of cases whose true service is among the top k; Avg@5 = mean of AC@1..AC@5.
`leave_one_type_out` is the protocol the defaults are chosen by: for each fault type, the
settings are chosen on the other types' cases only and scored on the held-out type's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from rca.analysis import SPREAD_FLOOR, Gathered, analyze, epoch_ns, gather, rank
from rca.baselines import baro, n_sigma
from rca.cases import (
    NezhaCase,
    case_windows,
    metric_windows,
    nezha_cases,
    rcd_cases,
    read_nezha_metrics,
    read_rcd_metrics,
)
from rca.windows import GUARD_S

METHODS = ("prognos", "n-sigma", "baro")
#: the settings leave-one-fault-type-out chooses among
GRID: dict[str, tuple[float, ...]] = {"guard_s": (0.0, 15.0, 30.0, 60.0), "floor": (0.25, 0.5, 1.0)}


@dataclass
class Outcome:
    case: str
    fault_type: str
    truth: str
    rankings: dict[str, list[str]]
    seconds: dict[str, float]


@dataclass
class Evaluation:
    system: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def scores(self, method: str, fault_type: str | None = None) -> dict[str, float]:
        chosen = [o for o in self.outcomes if fault_type in (None, o.fault_type)]
        return accuracy([(o.truth, o.rankings[method]) for o in chosen])

    def to_dict(self, method: str = "prognos") -> dict[str, Any]:
        types = sorted({o.fault_type for o in self.outcomes})
        seconds = [o.seconds[method] for o in self.outcomes]
        return {
            "overall": self.scores(method),
            "by_fault_type": {t: self.scores(method, t) for t in types},
            "seconds_per_case": sum(seconds) / len(seconds) if seconds else None,
        }

    def report(self) -> dict[str, Any]:
        """Ours at the top level (the agreed shape), the baselines beside it."""
        out = self.to_dict("prognos")
        out["system"] = self.system
        out["skipped"] = self.skipped
        out["baselines"] = {m: self.to_dict(m) for m in METHODS if m != "prognos"}
        out["cases"] = [
            {
                "case": o.case,
                "fault_type": o.fault_type,
                "truth": o.truth,
                **{f"top5_{m}": r[:5] for m, r in o.rankings.items()},
            }
            for o in self.outcomes
        ]
        return out


def accuracy(results: Sequence[tuple[str, Sequence[str]]]) -> dict[str, float]:
    """AC@1, AC@3, AC@5, Avg@5 over (truth, ranking) pairs, and the case count."""
    n = len(results)
    if n == 0:
        return {"AC@1": 0.0, "AC@3": 0.0, "AC@5": 0.0, "Avg@5": 0.0, "cases": 0}
    ac = {k: sum(truth in list(r)[:k] for truth, r in results) / n for k in range(1, 6)}
    return {
        "AC@1": ac[1],
        "AC@3": ac[3],
        "AC@5": ac[5],
        "Avg@5": sum(ac.values()) / 5,
        "cases": n,
    }


def _timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    started = time.perf_counter()
    ranking = fn()
    return ranking, time.perf_counter() - started


def _metrics_of(case: NezhaCase, cache: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if case.day not in cache:
        cache[case.day] = read_nezha_metrics(case.metric_dir)
    return cache[case.day]


def evaluate_nezha(
    root: Path,
    *,
    guard_s: float = GUARD_S,
    on_case: Callable[[str], None] | None = None,
) -> Evaluation:
    """Every usable case under a Nezha-layout folder; unusable ones are listed, not guessed."""
    evaluation = Evaluation(system=root.name)
    metrics_by_day: dict[str, pd.DataFrame] = {}
    for case in nezha_cases(root):
        if not case.usable:
            evaluation.skipped.append({"case": case.name, "missing": case.missing()})
            continue
        metrics = _metrics_of(case, metrics_by_day)
        windows = case_windows(case, guard_s=guard_s)
        m_base, m_incident = metric_windows(case, metrics, guard_s=guard_s, onset_ns=windows.onset)
        base_rows, incident_rows = _rows(metrics, m_base), _rows(metrics, m_incident)

        def ours(
            windows: Any = windows,
            metrics: pd.DataFrame = metrics,
            m_base: Any = m_base,
            m_incident: Any = m_incident,
        ) -> list[str]:
            report = analyze(
                windows.spans,
                baseline=windows.baseline,
                incident=windows.incident,
                metrics=metrics,
                metric_windows=(m_base, m_incident),
            )
            return report.ranking()

        rankings, seconds = {}, {}
        rankings["prognos"], seconds["prognos"] = _timed(ours)
        rankings["n-sigma"], seconds["n-sigma"] = _timed(partial(n_sigma, base_rows, incident_rows))
        rankings["baro"], seconds["baro"] = _timed(partial(baro, base_rows, incident_rows))
        evaluation.outcomes.append(
            Outcome(case.name, case.fault_type, case.service, rankings, seconds)
        )
        if on_case is not None:
            on_case(case.name)
    return evaluation


@dataclass
class GatheredCase:
    name: str
    fault_type: str
    truth: str
    by_guard: dict[float, Gathered]


def gather_nezha(root: Path, *, guards: Sequence[float] = GRID["guard_s"]) -> list[GatheredCase]:
    """The evidence of every usable case for each guard band (fusion settings apply later)."""
    out = []
    metrics_by_day: dict[str, pd.DataFrame] = {}
    for case in nezha_cases(root):
        if not case.usable:
            continue
        metrics = _metrics_of(case, metrics_by_day)
        by_guard = {}
        for guard in guards:
            w = case_windows(case, guard_s=guard)
            by_guard[guard] = gather(
                w.spans,
                baseline=w.baseline,
                incident=w.incident,
                metrics=metrics,
                metric_windows=metric_windows(case, metrics, guard_s=guard, onset_ns=w.onset),
            )
        out.append(GatheredCase(case.name, case.fault_type, case.service, by_guard))
    return out


def _ranking(case: GatheredCase, guard: float, floor: float) -> list[str]:
    return rank(case.by_guard[guard], floor=floor).ranking()


def _objective(cases: Sequence[GatheredCase], guard: float, floor: float) -> tuple[float, ...]:
    scores = accuracy([(c.truth, _ranking(c, guard, floor)) for c in cases])
    return (scores["AC@1"], scores["Avg@5"])


def leave_one_type_out(
    cases: Sequence[GatheredCase], *, floors: Sequence[float] = GRID["floor"]
) -> dict[str, Any]:
    """For each fault type: the (guard, floor) that scores best (AC@1, then Avg@5, then the
    longer guard) on the other types, scored on that type. Returns
    the held-out accuracy overall and per type, the settings chosen per type, and the in-sample
    accuracy of the defaults for comparison."""
    guards = sorted({g for c in cases for g in c.by_guard})
    types = sorted({c.fault_type for c in cases})
    held: list[tuple[str, list[str]]] = []
    per_type: dict[str, Any] = {}
    for kind in types:
        train = [c for c in cases if c.fault_type != kind]
        test = [c for c in cases if c.fault_type == kind]
        # Ties go to the longer guard band: when the dev data cannot tell, the reference
        # that is safer from a late label wins.
        best = max(
            itertools.product(guards, floors),
            key=lambda gf: (*_objective(train, *gf), gf[0]),
        )
        results = [(c.truth, _ranking(c, *best)) for c in test]
        held += results
        per_type[kind] = {**accuracy(results), "guard_s": best[0], "floor": best[1]}
    defaults = (GUARD_S, SPREAD_FLOOR)
    in_sample = (
        accuracy([(c.truth, _ranking(c, *defaults)) for c in cases]) if GUARD_S in guards else None
    )
    return {
        "held_out": accuracy(held),
        "held_out_by_fault_type": per_type,
        "defaults": {"guard_s": defaults[0], "floor": defaults[1]},
        "defaults_in_sample": in_sample,
        "grid": {"guard_s": guards, "floor": list(floors)},
    }


def evaluate_rcd(root: Path, *, on_case: Callable[[str], None] | None = None) -> Evaluation:
    """RCD layout (metrics only): the whole normal.csv as baseline, anomalous.csv as incident."""
    evaluation = Evaluation(system=root.name)
    for case in rcd_cases(root):
        normal, anomalous = read_rcd_metrics(case.normal), read_rcd_metrics(case.anomalous)
        # normal.csv was recorded on another day: put the two windows back to back.
        shift = anomalous.index.min() - normal.index.max() - pd.Timedelta(seconds=1)
        normal.index = normal.index + shift
        metrics = pd.concat([normal, anomalous]).sort_index()
        stamps = epoch_ns(metrics.index)
        b = (int(stamps.min()), int(epoch_ns(normal.index).max()) + 1)
        a = (int(epoch_ns(anomalous.index).min()), int(stamps.max()) + 1)

        def ours(metrics: pd.DataFrame = metrics, b: Any = b, a: Any = a) -> list[str]:
            return analyze(None, baseline=b, incident=a, metrics=metrics).ranking()

        rankings, seconds = {}, {}
        rankings["prognos"], seconds["prognos"] = _timed(ours)
        rankings["n-sigma"], seconds["n-sigma"] = _timed(partial(n_sigma, normal, anomalous))
        rankings["baro"], seconds["baro"] = _timed(partial(baro, normal, anomalous))
        evaluation.outcomes.append(
            Outcome(case.name, case.fault_type, case.service, rankings, seconds)
        )
        if on_case is not None:
            on_case(case.name)
    return evaluation


def _rows(metrics: pd.DataFrame, window: tuple[int, int]) -> pd.DataFrame:
    if not len(metrics):
        return metrics
    stamps = epoch_ns(metrics.index)
    return metrics[(stamps >= window[0]) & (stamps < window[1])]
