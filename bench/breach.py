#!/usr/bin/env python
"""Breach warnings: how early, and how often wrongly, each forecaster warns.

Generates labelled scenarios (`sim.scenarios`: memory leaks, latency creep, saturating queues,
and normal daily / level-shift / gappy / spiky series, 3 days at 60 s), trains each model once on
the TRAINING seeds (one global model; baselines learn nothing), then replays the EVALUATION seeds
as the daemon would (`models.evaluation.breach`: from day 1 on, a forecast every step from the
data up to then) and judges the warnings of each warning probability given (`--probability`,
first = BreachConfig's default), with `--consecutive` forecasts in a row, each two ways: with
`predict_breach`'s seasonal check (given the series' recent values, as the daemon's cycle reads
them from its store) and from the forecast alone;
plus the rule used before (max over the horizon, p >= 0.3, 2 in a row, no seasonal check):

  warned >= 15 min   share of true crossings warned at least 15 min ahead (lead time = crossing
                     time - first warning within the 60 min before it)
  median lead        of the warned crossings, in minutes
  false / day        false warning episodes per series-day: on normal scenarios, on breach
                     scenarios (early / spurious), and on NAB's artificialNoAnomaly files
                     (threshold = series max + margin; for their 5-minute step the same model
                     kind is built with a 30-min horizon and trained on the training seeds
                     generated at that step)

The scenario figures are "generated": the generators and the rule that sets each scenario's
threshold were frozen before the warning rule was tuned; the bench prints their digest
(sha256 of `sim/scenarios.py`, and of the threshold rule) and says whether it still matches
the frozen one.

Targets (issue): >= 90 % warned >= 15 min ahead, <= 0.1 false warnings per series-day.

`predict_linear` is Prometheus' `predict_linear` (least squares over the last hour, extrapolated
with its prediction interval), the rule an SRE would write by hand; it lives here only, as a
yardstick. LSTM: context 120, horizon 30, hidden 32, <= 10 epochs of 16,384 windows.

    .venv/bin/python bench/breach.py [--train-seeds 0-19] [--eval-seeds 100-119]
        [--models lstm,median_band,naive,predict_linear] [--nab ../shared/datasets/nab-dev]
        [--out bench/results/breach.json] [--every 1] [--probability 0.5] [--consecutive 4]
        [--seed 0]

About 3-4 minutes on 2 cores (most of it training the two LSTMs, 60 s and 300 s steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.breach import BreachConfig, linear_extrapolation  # noqa: E402
from models.domain import ContextBatch, History  # noqa: E402
from models.evaluation.breach import (  # noqa: E402
    BreachEvalConfig,
    BreachReport,
    NabWarningReport,
    nab_report,
    replay,
    replay_nab,
    report,
    scenario_digest,
    train,
)
from models.forecasters.base import (  # noqa: E402
    EpochCallback,
    FitReport,
    Forecaster,
    ForecasterConfig,
)
from models.forecasters.registry import FORECASTERS, build  # noqa: E402
from sim.scenarios import STEP, suite  # noqa: E402
from sim.seeds import parse_seeds  # noqa: E402

DEFAULT_MODELS = "lstm,median_band,naive,predict_linear"
#: `scenario_digest()` when the generators and threshold rule were frozen, before tuning.
FROZEN_SOURCE_SHA256 = "cfe28f102f812acc0980fa6f07f38c2c2df199e941b76456ff2cda4ac7c28870"
FROZEN_RULE_SHA256 = "b76b3db960eeba8399989962b65dd91cd57b4e913fa39d3a0f10c4f141e7f865"
#: The warning rule before the seasonal check: max over the horizon, p >= 0.3, 2 in a row.
OLD_RULE = BreachConfig(probability=0.3, consecutive=2, combine="max", season=None)
HORIZON_SECONDS = 1800  # DESIGN.md: the forecast covers 30 min
CONTEXT = 120


class PredictLinearConfig(ForecasterConfig):
    window: int = Field(60, ge=3, description="newest steps the line is fitted to")
    min_points: int = Field(5, ge=3)


class PredictLinearForecaster(Forecaster):
    """Prometheus' predict_linear: an ordinary least-squares line through the newest `window`
    steps (gaps skipped), extrapolated; the band is the line's prediction interval from the
    residual spread (normal quantiles). Fewer than `min_points` observations: NaN."""

    name: ClassVar[str] = "predict_linear"
    config_class = PredictLinearConfig
    config: PredictLinearConfig

    def _fit(self, histories: Sequence[History], on_epoch: EpochCallback | None) -> FitReport:
        return FitReport()

    def _predict(self, batch: ContextBatch) -> np.ndarray:
        from statistics import NormalDist

        w = min(self.config.window, batch.values.shape[1])
        centre, spread, n = linear_extrapolation(batch.values[:, -w:], self.horizon)
        z = np.array([NormalDist().inv_cdf(q) for q in self.quantiles])
        out = centre[..., None] + spread[..., None] * z[None, None, :]
        out[n < self.config.min_points] = np.nan
        return out


def model_config(name: str, step: int, epochs: int, seed: int = 0) -> dict[str, Any]:
    horizon = max(1, HORIZON_SECONDS // step)
    base: dict[str, Any] = {"context_length": CONTEXT, "horizon": horizon}
    if name == "lstm":
        return {
            **base,
            "hidden_size": 32,
            "max_epochs": epochs,
            "windows_per_epoch": 16384,
            "batch_size": 256,
            "patience": 3,
            "seed": seed,
        }
    if name == "predict_linear":
        return {**base, "window": max(3, 3600 // step)}
    return base


def make_model(name: str, step: int, epochs: int, seed: int = 0) -> Forecaster:
    config = model_config(name, step, epochs, seed)
    if name == PredictLinearForecaster.name:
        return PredictLinearForecaster(PredictLinearConfig.model_validate(config))
    return build(name, config)


def fmt(value: float, pattern: str = "{:.2f}") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (pattern.format(value))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--train-seeds", default="0-19", help="e.g. 0-19 or 0-4,7")
    parser.add_argument(
        "--eval-seeds", default="100-119", help="must not overlap the training seeds"
    )
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated")
    parser.add_argument(
        "--nab",
        default=str(ROOT.parent / "shared" / "datasets" / "nab-dev"),
        help="NAB folder holding data/artificialNoAnomaly",
    )
    parser.add_argument("--no-nab", action="store_true", help="skip the NAB false-warning check")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "breach.json"), help="JSON")
    parser.add_argument("--every", type=int, default=1, help="steps between forecasts")
    parser.add_argument(
        "--probability",
        default=f"{BreachConfig().probability}",
        help="warning probabilities to judge (comma-separated; the first is the headline)",
    )
    parser.add_argument(
        "--no-old-rule", action="store_true", help="skip the rule used before (max, p 0.3, x2)"
    )
    parser.add_argument(
        "--consecutive",
        type=int,
        default=BreachConfig().consecutive,
        help="forecasts in a row that must reach the probability",
    )
    parser.add_argument("--epochs", type=int, default=10, help="LSTM max_epochs")
    parser.add_argument("--seed", type=int, default=0, help="LSTM training seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for this small LSTM, and on a shared 2-core box)",
    )
    args = parser.parse_args(argv)

    console = Console(width=200)
    torch.set_num_threads(args.threads)
    train_seeds, eval_seeds = parse_seeds(args.train_seeds), parse_seeds(args.eval_seeds)
    overlap = sorted(set(train_seeds) & set(eval_seeds))
    if overlap:
        console.print(f"[red]training and evaluation seeds overlap: {overlap}")
        return 2
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    known = {*FORECASTERS, PredictLinearForecaster.name}
    unknown = [m for m in names if m not in known]
    if unknown:
        console.print(f"[red]unknown models {unknown}; known: {sorted(known)}")
        return 2
    nab_dir = None if args.no_nab else Path(args.nab)
    if nab_dir is not None and not (nab_dir / "data" / "artificialNoAnomaly").is_dir():
        console.print(f"[yellow]no NAB artificialNoAnomaly under {nab_dir}; skipping NAB")
        nab_dir = None
    probabilities = list(dict.fromkeys(float(p) for p in args.probability.split(",") if p))
    # (label, rule, which replay it judges): probability and consecutive do not change the
    # forecasts' probabilities, so one replay serves every new rule; the old rule needs its own.
    rules: list[tuple[str, BreachEvalConfig, str]] = []
    for p in probabilities:
        breach = BreachConfig(probability=p, consecutive=args.consecutive)
        rules.append(
            (
                f"p≥{p:g}, {args.consecutive} in a row, seasonal check",
                BreachEvalConfig(breach=breach, every=args.every),
                "new",
            )
        )
        rules.append(
            (
                f"p≥{p:g}, {args.consecutive} in a row, forecast only",
                BreachEvalConfig(breach=breach, every=args.every, history=False),
                "new",
            )
        )
    if not args.no_old_rule:
        rules.append(
            (
                "old: max, p≥0.3, 2 in a row",
                BreachEvalConfig(breach=OLD_RULE, every=args.every),
                "old",
            )
        )
    replay_configs = {"new": rules[0][1]}
    if not args.no_old_rule:
        replay_configs["old"] = rules[-1][1]

    digest = scenario_digest()
    frozen = (
        digest["source_sha256"] == FROZEN_SOURCE_SHA256
        and digest["threshold_rule_sha256"] == FROZEN_RULE_SHA256
    )
    console.print(
        f"generated scenarios: {digest['module']} source sha256 {digest['source_sha256']}, "
        f"threshold rule sha256 {digest['threshold_rule_sha256']}: "
        + ("[green]as frozen before tuning[/]" if frozen else "[red]CHANGED since frozen[/]")
    )
    started = time.perf_counter()
    t0 = time.perf_counter()
    train_set = suite(train_seeds)
    eval_set = suite(eval_seeds)
    generate_seconds = time.perf_counter() - t0
    console.print(
        f"scenarios: {len(train_set)} training (seeds {args.train_seeds}), {len(eval_set)} "
        f"evaluation (seeds {args.eval_seeds}), generated in {generate_seconds:.1f} s"
    )

    results: dict[str, Any] = {}
    rows: list[tuple[str, str, BreachReport, NabWarningReport | None, float, float]] = []
    for name in names:
        model = make_model(name, STEP, args.epochs, args.seed)
        t0 = time.perf_counter()
        fit = train(model, train_set)
        train_seconds = time.perf_counter() - t0
        console.print(
            f"{name}: trained in {train_seconds:.1f} s"
            + (f" ({fit.epochs} epochs, best val {fit.best_val_loss:.4f})" if fit.epochs else "")
        )
        nab_models: dict[int, Forecaster] = {STEP: model}
        nab_train: dict[str, float] = {}

        def for_step(
            step: int,
            name: str = name,
            cache: dict[int, Forecaster] = nab_models,
            timing: dict[str, float] = nab_train,
        ) -> Forecaster:
            if step not in cache:
                t = time.perf_counter()
                other = make_model(name, step, args.epochs, args.seed)
                train(other, suite(train_seeds, step=step))
                cache[step] = other
                timing[str(step)] = time.perf_counter() - t
            return cache[step]

        replays: dict[str, Any] = {}
        nab_replays: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        nab_seconds: dict[str, float] = {}
        for which, config in replay_configs.items():
            t0 = time.perf_counter()
            replays[which] = replay(model, eval_set, config)
            seconds[which] = time.perf_counter() - t0
            console.print(
                f"{name}: replayed {len(eval_set)} scenarios ({which} rule) in "
                f"{seconds[which]:.1f} s"
            )
            if nab_dir is not None:
                t0 = time.perf_counter()
                nab_replays[which] = replay_nab(for_step, nab_dir, config)
                nab_seconds[which] = time.perf_counter() - t0
                console.print(
                    f"{name}: NAB artificialNoAnomaly ({which} rule) in {nab_seconds[which]:.1f} s"
                    + (f" (incl. training at steps {list(nab_train)})" if nab_train else "")
                )
        per_rule: dict[str, Any] = {}
        for label, config, which in rules:
            scored = report(replays[which], config, model.version, seconds[which])
            nab = None
            if which in nab_replays:
                found = nab_replays[which]
                nab = nab_report(found, config, found[0].model, nab_seconds[which])
            rows.append((name, label, scored, nab, train_seconds, seconds[which]))
            per_rule[label] = {
                "warning_rule": config.breach.model_dump(mode="json"),
                "seasonal_check": config.history and config.breach.season is not None,
                "scenarios": scored.summary(),
                "nab": None if nab is None else nab.summary(),
            }
        results[name] = {
            "config": model_config(name, STEP, args.epochs, args.seed),
            "train_seconds": train_seconds,
            "replay_seconds": seconds,
            "fit": {"epochs": fit.epochs, "best_val_loss": fit.best_val_loss},
            "nab_train_seconds_other_steps": nab_train,
            "nab_config_other_steps": {
                s: model_config(name, int(s), args.epochs, args.seed) for s in nab_train
            },
            "by_rule": per_rule,
        }

    table = Table(
        title=f"Breach warnings on GENERATED scenarios (evaluation seeds {args.eval_seeds}, "
        f"training seeds {args.train_seeds}) and NAB artificialNoAnomaly"
    )
    for column in (
        "model",
        "warning rule",
        "crossings",
        "warned ≥15 min",
        "warned at all",
        "median lead (min)",
        "false/series-day normal",
        "false/series-day breach series",
        "false/series-day NAB",
        "train s",
        "replay s",
    ):
        table.add_column(column, justify="left" if column in ("model", "warning rule") else "right")
    for name, label, scored, nab, train_seconds, eval_seconds in rows:
        table.add_row(
            name,
            label,
            str(scored.crossings),
            fmt(100 * scored.share_warned(), "{:.1f} %"),
            fmt(100 * scored.share_warned(0.0), "{:.1f} %"),
            fmt(scored.median_lead_minutes, "{:.1f}"),
            fmt(scored.false_per_day(False), "{:.3f}"),
            fmt(scored.false_per_day(True), "{:.3f}"),
            "-" if nab is None else fmt(nab.false_per_day, "{:.3f}"),
            f"{train_seconds:.1f}",
            f"{eval_seconds:.1f}",
        )
    console.print(table)

    kinds = Table(
        title="Per kind (generated): warned ≥15 min (median lead) / false warnings per series-day"
    )
    kinds.add_column("model")
    kinds.add_column("warning rule")
    all_kinds = list(rows[0][2].by_kind()) if rows else []
    for kind in all_kinds:
        kinds.add_column(kind, justify="right")
    for name, label, scored, _, _, _ in rows:
        per = scored.by_kind()
        cells = []
        for kind in all_kinds:
            k = per[kind]
            if k["crossings"]:
                cells.append(
                    f"{fmt(100 * k['warned_min_lead'], '{:.0f} %')} "
                    f"({fmt(k['median_lead_minutes'], '{:.0f}')} min)"
                )
            else:
                cells.append(f"{k['false_per_day']:.3f}")
        kinds.add_row(name, label, *cells)
    console.print(kinds)
    if nab_dir is not None:
        files = Table(title="NAB artificialNoAnomaly: false warning episodes per file")
        files.add_column("model")
        files.add_column("warning rule")
        names_nab = sorted({o.name for row in rows if row[3] for o in row[3].outcomes})
        for file in names_nab:
            files.add_column(file.split("/")[-1].removesuffix(".csv"), justify="right")
        for name, label, _, nab, _, _ in rows:
            if nab is not None:
                counts = {o.name: o for o in nab.outcomes}
                files.add_row(
                    name,
                    label,
                    *(f"{counts[f].false_episodes} / {counts[f].days:.1f} d" for f in names_nab),
                )
        console.print(files)
    total = time.perf_counter() - started
    console.print(f"total {total:.1f} s; targets: ≥ 90 % warned ≥ 15 min, ≤ 0.1 false/series-day")

    out = {
        "config": {
            "train_seeds": train_seeds,
            "eval_seeds": eval_seeds,
            "models": names,
            "step": STEP,
            "probabilities": probabilities,
            "evaluation": {k: v.model_dump(mode="json") for k, v in replay_configs.items()},
            "nab": None if nab_dir is None else str(nab_dir),
            "targets": {"warned_min_lead": 0.9, "false_per_day": 0.1},
        },
        "scenarios": {**digest, "frozen": frozen, "label": "generated"},
        "generate_seconds": generate_seconds,
        "total_seconds": total,
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(out), indent=2, allow_nan=False) + "\n")
    console.print(f"wrote {path}")
    return 0


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
