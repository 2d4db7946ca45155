#!/usr/bin/env python
"""Rolling-origin forecast accuracy on NAB-style CSVs: the global LSTM against naive, seasonal
naive (1 day) and ETS (additive damped trend, no season), all measured in the same run.

Protocol (models.evaluation.forecast): each series on its regular grid; origins every
`--origin-every` steps after the first 15 % (at most `--max-origins` per series, evenly spread);
at each origin every model forecasts 1..H steps from data before the origin only. MASE of the
p50 is scaled by the series' in-sample one-step naive MAE (data before the first origin);
coverage is the share of actuals inside p10-p90. Every model is scored on the same targets
(observed, and forecast by every model of the run).

Series are grouped by step into families (`models.registry.family_for`, one global LSTM per
family as the service keeps them), and each family is evaluated and reported on its own; all
settings are in grid steps of the family.

The headline is the LSTM's mean MASE at 15 minutes divided by the better of seasonal naive and
ETS at 15 minutes (target <= 0.9), per family whose horizon reaches 15 minutes. Seconds per
forecast are amortised (total fit + predict time of a model / forecasts made); compare them
within one run only.

    .venv/bin/python bench/forecast.py [DIR | --data DIR] [--folder auto]
        [--models lstm,naive,seasonal_naive,ets] [--max-origins 500]
        [--out bench/results/forecast.json]
"""

from __future__ import annotations

import os

# ETS fits are tiny: multi-threaded BLAS only adds overhead (several times slower on 2 cores).
# Must be set before numpy loads; torch gets its own thread count below.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.evaluation.forecast import (  # noqa: E402
    MODELS,
    ForecastEvalConfig,
    ForecastEvaluation,
    evaluate,
    load_folder,
    step_families,
)

DEFAULT_DIR = ROOT.parent / "shared" / "datasets" / "nab-dev"
DEFAULT_OUT = ROOT / "bench" / "results" / "forecast.json"
TARGET_RATIO = 0.9
MAX_ORIGINS = 500
# README of the datasets: measured on the 17 realAWSCloudwatch series, 15 min, mean / median.
README_15MIN = {"ets": (1.03, 0.84), "naive": (1.14, 0.95), "seasonal_naive": (1.99, 1.56)}

console = Console(width=None if sys.stdout.isatty() else 140)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Rolling-origin forecast accuracy (MASE, p10-p90 coverage) of the global "
        "LSTM against naive, seasonal naive and ETS, measured in the same run.",
    )
    parser.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help="NAB-style root (data/<folder>/*.csv) or a CSV folder (../shared/datasets/nab-dev)",
    )
    parser.add_argument("--data", type=Path, default=None, help="the same as DIR")
    parser.add_argument(
        "--folder",
        default="auto",
        help="a folder under DIR/data; 'all': every folder; 'auto' (default): realAWSCloudwatch "
        "where DIR has it, else every folder",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated ({','.join(MODELS)})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--horizon", type=int, default=6, help="forecast steps (6)")
    parser.add_argument("--origin-every", type=int, default=12, help="steps between origins (12)")
    parser.add_argument(
        "--max-origins",
        type=int,
        default=MAX_ORIGINS,
        help=f"at most N origins per series, evenly spread (0: every one; {MAX_ORIGINS}: thins "
        "only the 1-minute cmd-dev series, about 1,430 each; realAWSCloudwatch has at most 336)",
    )
    parser.add_argument("--retrain-every", type=int, default=288, help="LSTM refit cadence (288)")
    parser.add_argument(
        "--train-window", type=int, default=2016, help="LSTM: newest steps per series (2016)"
    )
    parser.add_argument("--no-warm-start", action="store_true", help="LSTM: every refit cold")
    parser.add_argument(
        "--warm-epochs", type=int, default=3, help="LSTM: max epochs of a warm refit (3)"
    )
    parser.add_argument(
        "--lstm",
        default="{}",
        help="JSON overrides of the LSTM config, e.g. '{\"hidden_size\": 64}'",
    )
    parser.add_argument("--ets-window", type=int, default=500, help="ETS: newest steps (500)")
    parser.add_argument(
        "--ratio-minutes", type=float, default=15.0, help="horizon of the headline ratio (15)"
    )
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per CPU)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: a small LSTM is fastest single-threaded; with 2 OpenMP threads on "
        "a busy 2-core box it ran 10-100x slower)",
    )
    parser.add_argument("--limit", type=int, default=0, help="first N series only (smoke test)")
    return parser.parse_args(argv)


def fmt(x: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}f}"


def headline(ev: ForecastEvaluation, minutes: float) -> dict[str, Any]:
    """LSTM mean MASE at `minutes` / the better of seasonal naive and ETS there."""
    step = ev.series[0].step if ev.series else 300
    horizon = round(minutes * 60 / step)
    out: dict[str, Any] = {"minutes": minutes, "horizon": horizon, "target": TARGET_RATIO}
    if not 1 <= horizon <= ev.config.horizon or "lstm" not in ev.runs:
        return {**out, "ratio": None, "met": None, "note": "needs lstm and the horizon"}
    rivals = {m: ev.score(m, horizon).mase_mean for m in ("seasonal_naive", "ets") if m in ev.runs}
    rivals = {m: v for m, v in rivals.items() if math.isfinite(v)}
    lstm = ev.score("lstm", horizon).mase_mean
    if not rivals or not math.isfinite(lstm):
        return {**out, "ratio": None, "met": None, "note": "no seasonal_naive / ets score"}
    best = min(rivals, key=lambda m: rivals[m])
    ratio = lstm / rivals[best]
    return {
        **out,
        "lstm_mase_mean": lstm,
        "baseline": best,
        "baseline_mase_mean": rivals[best],
        "ratio": ratio,
        "met": ratio <= TARGET_RATIO,
    }


def print_tables(ev: ForecastEvaluation, ratio_horizon: int, family: str = "") -> None:
    cfg = ev.config
    step = ev.series[0].step if ev.series else 0
    where = f"{family} ({len(ev.series)} series at {step} s): " if family else ""
    table = Table(
        title=f"{where}forecast accuracy (MASE of p50; coverage of p10-p90, nominal 0.80)"
    )
    for col in ("model", "horizon", "MASE mean", "MASE median", "coverage", "series", "points"):
        table.add_column(col, justify="left" if col == "model" else "right")
    table.add_column("s / forecast", justify="right")
    for model in cfg.models:
        for h in cfg.report_horizons:
            s = ev.score(model, h)
            table.add_row(
                model,
                f"{h} ({s.minutes:g} min)",
                fmt(s.mase_mean),
                fmt(s.mase_median),
                fmt(s.coverage_mean),
                str(s.series),
                f"{s.points:,}",
                f"{ev.seconds_per_forecast(model):.4f}" if h == cfg.report_horizons[0] else "",
            )
        table.add_section()
    console.print(table)

    if 1 <= ratio_horizon <= cfg.horizon:
        per = Table(title=f"{where}MASE per series at horizon {ratio_horizon} (best in bold)")
        per.add_column("series")
        for model in cfg.models:
            per.add_column(model, justify="right")
        for one in ev.series:
            row = {m: float(ev.mase[m][one.name][ratio_horizon - 1]) for m in cfg.models}
            finite = [v for v in row.values() if math.isfinite(v)]
            best = min(finite) if finite else math.nan
            per.add_row(
                one.name,
                *[
                    f"[bold]{fmt(v)}[/]" if v == best else fmt(v)
                    for v in (row[m] for m in cfg.models)
                ],
            )
        console.print(per)


def family_rows(evaluations: dict[str, ForecastEvaluation]) -> list[dict[str, Any]]:
    """Per family and report horizon: each model's mean MASE and coverage, and the LSTM's mean
    MASE over ETS's and over naive's (last value)."""
    rows = []
    for family, ev in evaluations.items():
        for h in ev.config.report_horizons:
            scores = {m: ev.score(m, h) for m in ev.config.models}
            row: dict[str, Any] = {
                "family": family,
                "step": ev.series[0].step,
                "series": len(ev.series),
                "horizon": h,
                "minutes": h * ev.series[0].step / 60.0,
                "mase_mean": {m: v.mase_mean for m, v in scores.items()},
                "mase_median": {m: v.mase_median for m, v in scores.items()},
                "coverage": {m: v.coverage_mean for m, v in scores.items()},
                "points": max((v.points for v in scores.values()), default=0),
            }
            for rival in ("ets", "naive"):
                if "lstm" in scores and rival in scores:
                    lstm, other = scores["lstm"].mase_mean, scores[rival].mase_mean
                    ok = math.isfinite(lstm) and math.isfinite(other) and other > 0
                    row[f"lstm_over_{rival}"] = lstm / other if ok else math.nan
            rows.append(row)
    return rows


def print_families(rows: list[dict[str, Any]], models: Sequence[str]) -> None:
    table = Table(title="per step family: mean MASE of p50 (p10-p90 coverage), LSTM / rival")
    for col in ("family", "series", "horizon", *models, "lstm/ets", "lstm/naive"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for row in rows:
        table.add_row(
            row["family"],
            str(row["series"]),
            f"{row['horizon']} ({_duration(row['minutes'])})",
            *(f"{fmt(row['mase_mean'][m])} ({fmt(row['coverage'][m], 2)})" for m in models),
            fmt(row.get("lstm_over_ets", math.nan)),
            fmt(row.get("lstm_over_naive", math.nan)),
        )
    console.print(table)


def _duration(minutes: float) -> str:
    return f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    cpus = os.cpu_count() or 1
    threads = max(1, args.threads)
    torch.set_num_threads(threads)
    config = ForecastEvalConfig(
        models=models,
        horizon=args.horizon,
        report_horizons=tuple(h for h in (1, 3, 6) if h <= args.horizon),
        origin_every=args.origin_every,
        max_origins=args.max_origins or None,
        retrain_every=args.retrain_every,
        train_window=args.train_window,
        warm_start=not args.no_warm_start,
        warm_epochs=args.warm_epochs,
        lstm=json.loads(args.lstm),
        ets_window=args.ets_window,
        workers=args.workers or cpus,
        num_threads=threads,
    )
    root = args.data if args.data is not None else args.dir
    folder = resolve_folder(root, args.folder)
    started = time.perf_counter()
    series = load_folder(root, folder)
    if args.limit:
        series = series[: args.limit]
    families = step_families(series)
    console.print(
        f"[bold]forecast bench[/]: {len(series)} series from {root} ({folder or 'every folder'}), "
        f"step families {', '.join(f'{f} ({len(m)})' for f, m in families.items())}; "
        f"models {', '.join(models)}; horizon {config.horizon}, origins every "
        f"{config.origin_every} steps after {config.warmup_fraction:.0%}"
        + (f" (at most {config.max_origins} per series)" if config.max_origins else "")
        + f"; {config.workers} worker(s), {threads} torch thread(s)"
    )
    evaluations: dict[str, ForecastEvaluation] = {}
    heads: dict[str, dict[str, Any]] = {}
    for family, members in families.items():
        ev = evaluate_with_progress(members, config, family)
        evaluations[family] = ev
        ratio_horizon = round(args.ratio_minutes * 60 / members[0].step)
        print_tables(ev, ratio_horizon, family if len(families) > 1 else "")
        head = headline(ev, args.ratio_minutes)
        heads[family] = head
        if head.get("ratio") is not None:
            verdict = "[green]met[/]" if head["met"] else "[red]NOT met[/]"
            console.print(
                f"{family}: LSTM {fmt(head['lstm_mase_mean'])} / {head['baseline']} "
                f"{fmt(head['baseline_mase_mean'])} mean MASE at {args.ratio_minutes:g} min = "
                f"[bold]{head['ratio']:.3f}[/] (target <= {TARGET_RATIO}: {verdict})"
            )
        missing = {m: n for m, n in ev.missing.items() if n}
        if missing:
            console.print(f"{family}: observed targets some model did not forecast: {missing}")
        for model, run in ev.runs.items():
            for note in run.notes[:5]:
                console.print(f"{family} {model}: {note}")
        if folder == "realAWSCloudwatch" and ratio_horizon == 3:
            console.print(
                "datasets README at 15 min (mean / median): "
                + ", ".join(f"{m} {a} / {b}" for m, (a, b) in README_15MIN.items())
            )
    rows = family_rows(evaluations)
    print_families(rows, models)
    elapsed = time.perf_counter() - started
    console.print(f"total {elapsed:.1f}s")

    machine = {
        "cpus": cpus,
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }
    report: dict[str, Any] = {
        "dir": str(root),
        "folder": folder,
        "elapsed_seconds": elapsed,
        "per_family": _json_floats(rows),
        "families": {
            family: {"headline": heads[family], **ev.to_json()}
            for family, ev in evaluations.items()
        },
        "readme_15min_mase_mean_median": README_15MIN,
        "machine": machine,
    }
    if len(evaluations) == 1:  # one step: the fields of a one-family run, as before
        (family,) = evaluations
        report.update({"headline": heads[family], **evaluations[family].to_json()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0


def resolve_folder(root: Path, folder: str) -> str | None:
    """'all' -> None (every folder); 'auto' -> realAWSCloudwatch where `root` has it, else None."""
    if folder == "all":
        return None
    if folder == "auto":
        name = "realAWSCloudwatch"
        return name if (root / "data" / name).is_dir() or (root / name).is_dir() else None
    return folder


def _json_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_floats(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_with_progress(
    series: Sequence[Any], config: ForecastEvalConfig, family: str = ""
) -> ForecastEvaluation:
    t0 = time.perf_counter()
    return evaluate(
        series,
        config,
        on_progress=lambda msg: console.print(
            f"  [{time.perf_counter() - t0:6.1f}s] {family + ': ' if family else ''}{msg}"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
