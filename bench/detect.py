#!/usr/bin/env python
"""Anomaly detection quality by a protocol that cannot over-tune, and its speed.

Runs the service's detector (`models.detector.Detector` through `models.evaluation.backtest.detect`,
the code behind `prognos backtest nab`) over every file of the dev corpora (default: nab-dev and
cmd-dev), each file a fresh deployment, then `models.evaluation.protocol.leave_one_folder_out`:
for each held-out folder, the detector setting (a small grid around the defaults) and the
threshold are chosen on the other folders and applied unchanged to the held-out one. The dev
figure is the pooled held-out NAB score (standard, reward-low-FP, reward-low-FN) and the pooled
held-out point-adjusted F1 (files with expert point labels: cmd-dev). A rolling z-score and the
median band run through the same protocol in the same run. Folders with fewer than 5 windows are
pooled by domain; folders without windows count by false alarms per series-day.

In-sample figures (threshold optimised on the very files scored, NAB's own way) are printed after,
labelled as such: they are optimistic.

    .venv/bin/python bench/detect.py [--data DIR --data DIR] [--out bench/results/detect.json]

(default: --data ../shared/datasets/nab-dev --data ../shared/datasets/cmd-dev)

About 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.detector import DetectorConfig, threshold_from_unit  # noqa: E402
from models.evaluation.backtest import detect  # noqa: E402
from models.evaluation.baselines import median_band, rolling_zscore  # noqa: E402
from models.evaluation.nab import PROFILES  # noqa: E402
from models.evaluation.protocol import (  # noqa: E402
    DevFile,
    LofoResult,
    best_f1,
    in_sample,
    leave_one_folder_out,
    load_dev_corpora,
)

DEFAULT_DATA = [ROOT.parent / "shared" / "datasets" / n for n in ("nab-dev", "cmd-dev")]
#: The settings the protocol may choose among for the detector (the defaults are one of them).
GRID = [
    {"long_weight": weight, "novelty_rows": rows}
    for weight in (0.4, 0.6, 0.8)
    for rows in (6, 12, 24)
]


def _name(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


def _scores(files: list[DevFile], config: DetectorConfig) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    out = [detect(f.seconds, f.values, config) for f in files]
    return out, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="a NAB-layout corpus")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "detect.json")
    args = parser.parse_args(argv)
    roots = args.data or DEFAULT_DATA
    missing = [r for r in roots if not (r / "data").is_dir()]
    if missing:
        print(f"no NAB-layout data at {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    console = Console(width=150)
    started = time.perf_counter()
    files = load_dev_corpora(roots)
    rows = sum(len(f.values) for f in files)
    console.print(
        f"{len(files)} files, {rows:,} rows, loaded in {time.perf_counter() - started:.1f}s"
    )

    default = DetectorConfig()
    detector_candidates: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for settings in GRID:
        config = default.model_copy(update=settings)
        scores, took = _scores(files, config)
        detector_candidates[_name(settings)] = scores
        seconds[_name(settings)] = took
    default_name = _name({"long_weight": default.long_weight, "novelty_rows": default.novelty_rows})
    baselines: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, fn in (
        ("rolling z-score (288 rows)", rolling_zscore),
        ("median band (1500 rows)", median_band),
    ):
        t0 = time.perf_counter()
        baselines[name] = {name: [fn(f.values) for f in files]}
        seconds[name] = time.perf_counter() - t0

    methods: dict[str, dict[str, list[np.ndarray]]] = {
        "prognos (setting chosen per fold)": detector_candidates,
        "prognos (defaults as shipped)": {default_name: detector_candidates[default_name]},
        **baselines,
    }
    results: dict[str, dict[str, LofoResult]] = {
        method: {p: leave_one_folder_out(files, cands, PROFILES[p]) for p in PROFILES}
        for method, cands in methods.items()
    }

    table = Table(title="Held-out folds, pooled (leave-one-folder-out; the dev figure)")
    for col in ("method", "NAB std", "low FP", "low FN", "F1", "P", "R"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, by_profile in results.items():
        std = by_profile["standard"]
        table.add_row(
            method,
            f"{std.pooled:.1f}",
            f"{by_profile['reward_low_fp'].pooled:.1f}",
            f"{by_profile['reward_low_fn'].pooled:.1f}",
            f"{std.f1:.3f}",
            f"{std.precision:.3f}",
            f"{std.recall:.3f}",
        )
    console.print(table)

    ours = results["prognos (setting chosen per fold)"]["standard"]
    rz = results["rolling z-score (288 rows)"]["standard"]
    folds = Table(title="Per held-out fold, NAB standard (prognos vs rolling z-score)")
    for col in (
        "fold",
        "files",
        "windows",
        "chosen on the other folds",
        "θ",
        "prognos",
        "rolling z",
    ):
        folds.add_column(
            col, justify="left" if col in ("fold", "chosen on the other folds") else "right"
        )
    for ours_fold, rz_fold in zip(ours.folds, rz.folds, strict=True):

        def cell(f: Any) -> str:
            if f.windows:
                return f"{f.score:.1f}"
            return f"{f.false_alarms_per_day:.3f} FA/day"

        folds.add_row(
            ours_fold.fold,
            str(ours_fold.files),
            str(ours_fold.windows),
            ours_fold.choice,
            f"{ours_fold.threshold:.4f}",
            cell(ours_fold),
            cell(rz_fold),
        )
    console.print(folds)
    unit = ours.all_folds_threshold
    console.print(
        f"all folds together would choose {ours.all_folds_choice} at θ = {unit:.4f} "
        f"(z ≥ {threshold_from_unit(unit):.2f}); shipped defaults: {default_name}, "
        f"z ≥ {default.threshold}"
    )

    insample = Table(title="In-sample (threshold optimised on the files scored: optimistic)")
    for col in (
        "corpus",
        "prognos defaults",
        "rolling z-score",
        "median band",
        "F1 prognos",
        "F1 rolling z",
    ):
        insample.add_column(col, justify="left" if col == "corpus" else "right")
    in_json: dict[str, Any] = {}
    for corpus in sorted({f.corpus for f in files}):
        idx = [i for i, f in enumerate(files) if f.corpus == corpus]
        sub = [files[i] for i in idx]
        row = {}
        for label, scores in (
            ("prognos", detector_candidates[default_name]),
            ("rolling_z", baselines["rolling z-score (288 rows)"]["rolling z-score (288 rows)"]),
            ("median_band", baselines["median band (1500 rows)"]["median band (1500 rows)"]),
        ):
            picked = [scores[i] for i in idx]
            row[label] = in_sample(sub, picked, PROFILES["standard"])
            row[f"f1_{label}"] = best_f1(sub, picked)[1]
        in_json[corpus] = row

        def f1(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.3f}"

        insample.add_row(
            corpus,
            f"{row['prognos']:.1f}",
            f"{row['rolling_z']:.1f}",
            f"{row['median_band']:.1f}",
            f1(row["f1_prognos"]),
            f1(row["f1_rolling_z"]),
        )
    console.print(insample)
    took = seconds[default_name]
    console.print(
        f"speed: the detector scored {rows:,} rows in {took:.2f}s ({rows / took:,.0f} rows/s, one "
        f"process); rolling z-score {seconds['rolling z-score (288 rows)']:.2f}s "
        f"(ratio {took / seconds['rolling z-score (288 rows)']:.1f}x)"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "corpora": [r.name for r in roots],
                "files": len(files),
                "rows": rows,
                "machine": platform.platform(),
                "defaults": default.model_dump(),
                "grid": GRID,
                "heldout": {
                    m: {p: r.to_json() for p, r in by.items()} for m, by in results.items()
                },
                "in_sample": in_json,
                "seconds": seconds,
            },
            indent=2,
            default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o),
        )
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
