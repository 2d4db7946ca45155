#!/usr/bin/env python
"""Which alerting rules will fire: how early, and how often wrongly, Prognos warns before a
Prometheus alerting rule fires, against the early-warning rule an SRE would write instead.

Per seed, the simulated shop (`sim.shop`) runs two days at 60 s: a healthy first day (history),
then on the second day one fault (kind by seed: leak, latency creep, CPU hog, error burst, or
none: a healthy day), on a service rotating with the seed, at a random hour and magnitude. The
seed's rule set (`sim.rules.rule_set`: thresholds and `for:` drawn per seed) goes through the
product: `models.rules.service.derive` makes each supported rule a target (the series side of
the comparison, the rule's constant as the limit) and `sim.ShopSource` answers its query as
Prometheus would. Every series of every rule is then replayed as the daemon's cycle forecasts
it (`models.evaluation.breach`: a forecast every step of day two from the data up to then,
`predict_breach` with the seasonal check, the target's warning rule p >= 0.5 in 4 forecasts
in a row); the forecaster is the global LSTM, trained once on separate training seeds.

Ground truth (`sim.rules.firing`): a rule fires where its condition has held for its `for:`.

  warned >= 15 min   share of firings warned at least 15 min before the rule fired (lead =
                     firing time - first warning within the 60 min before it; a warning on an
                     earlier firing's excursion is not credited to the next)
  median lead        of the warned firings, minutes
  false / rule-day   warning episodes that no firing justifies (none of their steps within the
                     60 min before a firing or while the rule fires), summed over a rule's
                     series, per rule and evaluated day; on all days and on healthy days

Baseline in the same run: `predict_linear(expr[1h], 30*60) > c` (the least-squares line over
the last hour, extrapolated 30 min; what an SRE writes as an early-warning rule), evaluated at
every step on the same series, with `for: 0s` and with `for: 5m`.

Seeds: training 200-214 (LSTM only), development 0-9 (used while writing the generator and
this bench: nothing was tuned on it, the warning rule is BreachSettings' default chosen on
bench/breach.py's development seeds), held-out evaluation 100-119 (the reported table).

    .venv/bin/python bench/rules.py [--seeds 100-119] [--train-seeds 200-214] [--epochs 8]
        [--out bench/results/rules.json]
    .venv/bin/python bench/rules.py --quick        # smoke test: seeds 100-109, 5 training
                                                   # seeds, 3 epochs (too few to learn trends)

About 5-7 minutes on 2 shared cores (half of it training the LSTM); --quick about 4.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.clock import FixedClock, from_epoch  # noqa: E402
from core.settings import RulesSettings  # noqa: E402
from ingest.domain import SeriesKey  # noqa: E402
from models.breach import BreachConfig, linear_extrapolation, warning_mask  # noqa: E402
from models.domain import History  # noqa: E402
from models.evaluation.breach import (  # noqa: E402
    BreachEvalConfig,
    judge_warnings,
    replay_series,
)
from models.forecasters.registry import build  # noqa: E402
from models.rules.domain import AlertRule  # noqa: E402
from models.rules.service import derive  # noqa: E402
from prognos.demo import SCENARIO_SEEDS  # noqa: E402
from sim import scenarios  # noqa: E402
from sim.rules import firing, rule_set  # noqa: E402
from sim.seeds import parse_seeds  # noqa: E402
from sim.shop import DAY, HOUR, SERVICES, Fault, Shop  # noqa: E402
from sim.source import ShopSource  # noqa: E402

STEP = 60
START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # a Monday
KINDS = ("leak", "latency", "cpu", "errors", "healthy")
HORIZON = 1800 // STEP
CONTEXT = 120
WINDOW = 3600  #: a warning counts for a firing within this many seconds before it
MIN_LEAD = 900
#: data past the evaluated day, so a warning in its last hour is judged by what followed
AFTER = HOUR
PROGNOS = "Prognos (LSTM, crossing ETA + for:)"
LINEAR = "predict_linear(expr[1h], 1800) > c"
LINEAR_FOR = "predict_linear(expr[1h], 1800) > c, for: 5m"


@dataclass
class Series:
    rule: str  #: the rule's name in the seed's set
    seed: int
    kind: str
    values: np.ndarray
    threshold: float
    for_steps: int
    consecutive: int
    probability: float
    hold: int  #: seconds: the derived target's breach hold (rules.hold_for)


@dataclass
class Outcome:
    leads: list[float] = field(default_factory=list)  #: seconds; NaN = missed
    kinds: list[str] = field(default_factory=list)  #: the seed's fault kind, per firing
    false_episodes: int = 0
    false_healthy: int = 0
    false_by_rule: dict[str, int] = field(default_factory=dict)  #: "<rule> on <kind> days"

    def add(self, kind: str, rule: str, leads: Sequence[float], false: int) -> None:
        self.leads.extend(leads)
        self.kinds.extend([kind] * len(leads))
        self.false_episodes += false
        if kind == "healthy":
            self.false_healthy += false
        if false:
            key = f"{rule} on {kind} days"
            self.false_by_rule[key] = self.false_by_rule.get(key, 0) + false

    def share(self, kind: str | None = None) -> tuple[int, int]:
        chosen = [x for x, k in zip(self.leads, self.kinds, strict=True) if kind in (None, k)]
        return sum(1 for x in chosen if x >= MIN_LEAD), len(chosen)

    def median_lead(self) -> float:
        warned = [x for x in self.leads if math.isfinite(x)]
        return float(np.median(warned)) / 60 if warned else math.nan


def scenario(seed: int) -> tuple[Shop, str, int, int]:
    """The seed's shop with its fault; (shop, kind, start, end) of the two days."""
    start = START + (seed % 7) * DAY
    shop = Shop(seed=seed, step=STEP)
    kind = KINDS[seed % len(KINDS)]
    rng = np.random.default_rng([seed, zlib.crc32(b"bench-rules")])
    if kind != "healthy":
        at = start + DAY + int(rng.uniform(2 * HOUR, 20 * HOUR)) // STEP * STEP
        service = SERVICES[(seed // len(KINDS)) % len(SERVICES)]
        shop.inject(Fault(kind, service, at, float(rng.uniform(0.7, 1.3))))
    return shop, kind, start, start + 2 * DAY + AFTER - STEP


def series_of(seed: int, hold_for: bool | None = None) -> tuple[list[Series], int, int]:
    """Every series of every supported rule of the seed's set, as the product pulls them;
    (series, supported rules, start)."""
    shop, kind, start, end = scenario(seed)
    generated = rule_set(seed)
    derived = derive(
        [AlertRule(r.group, r.name, r.expr, r.for_seconds) for r in generated],
        settings=RulesSettings(
            enabled=True, **({} if hold_for is None else {"hold_for": hold_for})
        ),
    )
    source = ShopSource(shop, FixedClock(from_epoch(end)))
    grid = np.arange(start, end + 1, STEP)
    out = []
    supported = 0
    for rule in derived:
        target = rule.target
        if target is None or target.breach is None:
            continue
        if target.breach.direction != "above":
            raise SystemExit(f"{rule.rule.name}: only rules that fire above are generated")
        supported += 1
        for data in source.query_range(target, start, end, STEP).series:
            values = np.full(len(grid), np.nan)
            values[np.searchsorted(grid, data.timestamps)] = data.values
            out.append(
                Series(
                    rule.rule.name,
                    seed,
                    kind,
                    values,
                    target.breach.threshold,
                    rule.rule.for_seconds // STEP,
                    target.breach.consecutive,
                    target.breach.probability,
                    int(target.breach.hold.total_seconds()),
                )
            )
    return out, supported, start


def predict_linear_warnings(values: np.ndarray, threshold: float, first: int) -> np.ndarray:
    """`predict_linear(expr[1h], 1800) > c` at every step from `first` on."""
    w = HOUR // STEP
    padded = np.concatenate([np.full(w - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)[first:]
    centre, _, _ = linear_extrapolation(windows, HORIZON)
    return np.nan_to_num(centre[:, -1], nan=-np.inf) > threshold


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", default=None, help="evaluation seeds (default 100-119)")
    parser.add_argument("--train-seeds", default=None, help="LSTM training (default 200-214)")
    parser.add_argument("--epochs", type=int, default=None, help="LSTM max_epochs (default 8)")
    parser.add_argument("--quick", action="store_true", help="seeds 100-109, 5 train seeds")
    parser.add_argument(
        "--hold-for",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override rules.hold_for (default: the product's)",
    )
    parser.add_argument(
        "--run-combine",
        choices=["max", "independent"],
        default=None,
        help="how P(beyond for the rule's for:) is combined (default: the product's)",
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "rules.json"))
    args = parser.parse_args(argv)
    quick = {"seeds": "100-109", "train_seeds": "200-204", "epochs": 3}
    full = {"seeds": "100-119", "train_seeds": "200-214", "epochs": 8}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    seeds, train_seeds = parse_seeds(args.seeds), parse_seeds(args.train_seeds)
    if set(seeds) & set(train_seeds):
        print("training and evaluation seeds overlap", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    began = time.perf_counter()

    histories = []
    for seed in train_seeds:
        found, _, start = series_of(seed)
        for i, s in enumerate(found):
            seen = np.isfinite(s.values)
            key = SeriesKey.of(s.rule, {"seed": str(seed), "series": str(i)})
            ts = (np.flatnonzero(seen) * STEP + start).astype(np.int64)
            histories.append(History.from_points(key, ts, s.values[seen], STEP))
    # As `prognos demo` trains it: the shop's healthy-looking history alone teaches the model
    # that every excursion returns, so generated scenarios that run into their limits join it.
    histories += [sc.history() for sc in scenarios.suite(range(SCENARIO_SEEDS), step=STEP)]
    model = build(
        "lstm",
        {
            "context_length": CONTEXT,
            "horizon": HORIZON,
            "hidden_size": 32,
            "max_epochs": args.epochs,
            "windows_per_epoch": 16384,
            "batch_size": 256,
            "patience": 3,
            "seed": 0,
        },
    )
    fit = model.fit(histories)
    train_seconds = time.perf_counter() - began
    print(f"LSTM trained on {len(histories)} series (shop seeds {args.train_seeds} and "
          f"scenario seeds 0-{SCENARIO_SEEDS - 1}) "
          f"in {train_seconds:.0f} s ({fit.epochs} epochs)")  # fmt: skip

    methods = {PROGNOS: Outcome(), LINEAR: Outcome(), LINEAR_FOR: Outcome()}
    rule_days = healthy_rule_days = 0.0
    series_count = firings_total = 0
    first = DAY // STEP
    t0 = time.perf_counter()
    for seed in seeds:
        found, supported, start = series_of(seed, args.hold_for)
        rule_days += supported
        healthy_rule_days += supported if KINDS[seed % len(KINDS)] == "healthy" else 0
        series_count += len(found)
        for s in found:
            config = BreachEvalConfig(
                breach=BreachConfig(
                    probability=s.probability,
                    consecutive=s.consecutive,
                    hold=s.hold,  # as the product derived it (rules.hold_for)
                    **({"run_combine": args.run_combine} if args.run_combine else {}),
                ),
                window=WINDOW,
                min_lead=MIN_LEAD,
                rearm=0,
            )
            fires = firing(s.values, s.threshold, "above", s.for_steps).astype(np.float64)
            seen = s.values[: len(s.values) - AFTER // STEP]  # forecast over day two only
            replay = replay_series(model, seen, start, STEP, s.threshold, first, config)
            baseline = predict_linear_warnings(seen, s.threshold, first)
            warns = {
                PROGNOS: warning_mask(replay.probability, config.breach),
                LINEAR: baseline,
                LINEAR_FOR: firing(baseline.astype(np.float64), 0.5, "above", 5),
            }
            for name, warn in warns.items():
                crossed, leads, false = judge_warnings(
                    warn, replay.indices, fires, 0.5, STEP, config
                )
                methods[name].add(s.kind, s.rule, leads, false)
            firings_total += len(crossed)
        print(f"  seed {seed} ({KINDS[seed % len(KINDS)]}): {len(found)} series", flush=True)
    replay_seconds = time.perf_counter() - t0

    header = (
        f"{'method':46s} {'warned>=15m':>13s} {'leak':>7s} {'latency':>7s} {'cpu':>7s} "
        f"{'errors':>7s} {'median lead':>11s} {'false/rule-day':>14s} {'healthy days':>12s}"
    )
    print()
    print(header)
    results: dict[str, Any] = {}
    for name, o in methods.items():
        warned, total = o.share()
        per_kind = {k: o.share(k) for k in KINDS[:4]}
        row = {
            "warned_15min": warned,
            "firings": total,
            "share_warned_15min": warned / total if total else None,
            "by_kind": {k: {"warned_15min": w, "firings": n} for k, (w, n) in per_kind.items()},
            "median_lead_min": o.median_lead(),
            "false_per_rule_day": o.false_episodes / rule_days if rule_days else None,
            "false_per_rule_day_healthy": (
                o.false_healthy / healthy_rule_days if healthy_rule_days else None
            ),
            "false_episodes": o.false_episodes,
            "false_by_rule": o.false_by_rule,
        }
        results[name] = row
        kinds = " ".join(f"{w:>3d}/{n:<3d}" for w, n in per_kind.values())
        print(
            f"{name:46s} {warned:>4d}/{total:<4d}{100 * warned / max(total, 1):4.0f}% {kinds} "
            f"{row['median_lead_min']:>9.1f} m {row['false_per_rule_day'] or 0:>14.3f} "
            f"{row['false_per_rule_day_healthy'] or 0:>12.3f}"
        )
    for name, o in methods.items():
        where = ", ".join(f"{k}: {v}" for k, v in sorted(o.false_by_rule.items()))
        print(f"false warnings of {name}: {where or 'none'}")
    document = {
        "seeds": seeds,
        "train_seeds": train_seeds,
        "epochs": args.epochs,
        "rule_days": rule_days,
        "healthy_rule_days": healthy_rule_days,
        "series": series_count,
        "firings": firings_total,
        "train_seconds": round(train_seconds, 1),
        "replay_seconds": round(replay_seconds, 1),
        "seconds": round(time.perf_counter() - began, 1),
        "methods": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\n{rule_days:g} rule-days ({healthy_rule_days:g} healthy), {series_count} series; "
          f"{time.perf_counter() - began:.0f} s; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
