#!/usr/bin/env python
"""Anomaly detection quality by a protocol that cannot over-tune, and its speed.

Runs the service's detector (`models.detector.Detector` through `models.evaluation.backtest`, the
code behind `prognos backtest nab`) over every file of the dev corpora (default: nab-dev and
cmd-dev), each file a fresh deployment, then `models.evaluation.protocol.leave_one_folder_out`:
for each held-out folder, the detector setting (`GRID`: the level z's settings and the fatigue's
and spatial rule's around the defaults) and the threshold are chosen on the other folders and
applied unchanged to the held-out one. The dev figure is the pooled held-out NAB score (standard,
reward-low-FP, reward-low-FN) and the pooled held-out point-adjusted F1 (files with expert point
labels: cmd-dev). Each component (level z, fatigue, the spatial rule, and the pattern memory of
`models.evaluation.candidates`, not in the service) is measured alone and together, and a rolling
z-score and the median band run through the same protocol in the same run. Folders with fewer
than 5 windows are pooled by domain; folders without windows count by false alarms per
series-day.

In-sample figures (threshold optimised on the very files scored, NAB's own way) are printed after,
labelled as such: they are optimistic.

    .venv/bin/python bench/detect.py [--data DIR --data DIR] [--out bench/results/detect.json]

(default: --data ../shared/datasets/nab-dev --data ../shared/datasets/cmd-dev)

About 80 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.detector import Z_CAP, DetectorConfig, DetectorOutput, threshold_from_unit  # noqa: E402
from models.evaluation.backtest import row_scores, run_detector  # noqa: E402
from models.evaluation.baselines import median_band, rolling_zscore  # noqa: E402
from models.evaluation.candidates import lstm_residual_z, new_highs, phase_memory  # noqa: E402
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
HOUR = 3600.0
#: The settings the protocol may choose among for the detector on each held-out fold (the dev
#: figure): the level z's weights and novelty, and the fatigue's; the defaults are one of them.
DAY = 86400.0
_DEFAULTS = DetectorConfig()
GRID: list[dict[str, Any]] = [
    {"long_weight": weight, "novelty_rows": rows}
    for weight in (0.4, 0.6, 0.8)
    for rows in (6, 12, 24)
] + [
    settings
    for settings in [
        {"fatigue_free": free, "fatigue_gain": gain, "fatigue_halflife_s": halflife}
        for free in (1.0, 2.0)
        for gain in (0.5, 1.0, 2.0)
        for halflife in (3 * HOUR, 6 * HOUR, 12 * HOUR)
    ]
    + [{"spatial_margin": 0.1}, {"spatial_halflife_s": 7 * DAY}, {"spatial_halflife_s": 30 * DAY}]
    # the defaults are in the level grid already
    if _DEFAULTS.model_copy(update=settings) != _DEFAULTS
]
#: The same level grid without fatigue and the spatial rule: the detector before them.
LEVEL_ONLY = {"fatigue_gain": 0.0, "spatial_margin": 0.0}
#: Each component alone and together, each a method of its own: fixed settings, the threshold
#: chosen per held-out fold. Scores come from the detector's output, post-processed where the
#: component is not in the service (`models.evaluation.candidates`).
COMPONENTS: dict[str, tuple[dict[str, Any], Callable[[DetectorOutput], np.ndarray]]] = {
    "level only": (LEVEL_ONLY, lambda out: out.novel()),
    "level + pattern memory": (
        LEVEL_ONLY,
        lambda out: np.where(out.eligible, phase_memory(out), 0.0),
    ),
    "spatial alone": ({}, lambda out: np.where(out.spatial, Z_CAP, 0.0)),
    "level + spatial": ({"fatigue_gain": 0.0}, lambda out: out.novel()),
    "level + fatigue": ({"spatial_margin": 0.0}, lambda out: out.novel()),
    "level + fatigue + spatial (defaults)": ({}, lambda out: out.novel()),
    "level + fatigue + spatial + pattern memory": (
        {},
        lambda out: np.where(out.spatial, Z_CAP, np.where(out.eligible, phase_memory(out), 0.0)),
    ),
}


def _fused(
    out: DetectorOutput, z: np.ndarray, combine: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """The level z and the LSTM's combined, as new highs, divided by the detector's fatigue; the
    spatial rule's alarms as the detector gives them."""
    fused = combine(out.raw, z)
    return np.where(out.spatial, Z_CAP, np.where(new_highs(fused), fused / out.fatigue, 0.0))


#: `--lstm`: the LSTM's one-step residual z alone and fused with the level z (the detector's
#: defaults otherwise).
LSTM_FUSIONS: dict[str, Callable[[DetectorOutput, np.ndarray], np.ndarray]] = {
    "LSTM residual alone": lambda out, z: np.where(new_highs(z), z, 0.0),
    "√(level·LSTM) + fatigue + spatial": lambda out, z: _fused(out, z, lambda a, b: np.sqrt(a * b)),
    "max(level, LSTM) + fatigue + spatial": lambda out, z: _fused(out, z, np.maximum),
}


def _name(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


def _scores(
    files: list[DevFile],
    config: DetectorConfig,
    post: Callable[[DetectorOutput], np.ndarray] = lambda out: out.novel(),
) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    out = [row_scores(f.values, post(run_detector(f.seconds, f.values, config))) for f in files]
    return out, time.perf_counter() - started


def _short(choice: str) -> str:
    """A chosen setting in few characters: each key by its initials."""
    return ",".join(
        "".join(w[0] for w in key.split("_")) + "=" + value
        for key, value in (part.split("=") for part in choice.split(","))
    )


def _fold_cell(f: Any) -> str:
    if f.windows:
        return f"{f.score:.1f}"
    return f"{f.false_alarms_per_day:.3f}/d"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="a NAB-layout corpus")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "detect.json")
    parser.add_argument(
        "--lstm",
        action="store_true",
        help="also the LSTM's one-step residual as a component (trains on generated data, ~30 s)",
    )
    args = parser.parse_args(argv)
    roots = args.data or DEFAULT_DATA
    missing = [r for r in roots if not (r / "data").is_dir()]
    if missing:
        print(f"no NAB-layout data at {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    console = Console(width=240)
    started = time.perf_counter()
    files = load_dev_corpora(roots)
    rows = sum(len(f.values) for f in files)
    console.print(
        f"{len(files)} files, {rows:,} rows, loaded in {time.perf_counter() - started:.1f}s"
    )

    default = DetectorConfig()
    seconds: dict[str, float] = {}
    chosen: dict[str, list[np.ndarray]] = {}
    level_grid: dict[str, list[np.ndarray]] = {}
    for settings in GRID:
        chosen[_name(settings)], seconds[_name(settings)] = _scores(
            files, default.model_copy(update=settings)
        )
        if "long_weight" in settings:
            level_grid[_name(settings)], _ = _scores(
                files, default.model_copy(update={**settings, **LEVEL_ONLY})
            )
    default_name = _name({"long_weight": default.long_weight, "novelty_rows": default.novelty_rows})
    components: dict[str, dict[str, list[np.ndarray]]] = {}
    for label, (settings, post) in COMPONENTS.items():
        scores, seconds[label] = _scores(files, default.model_copy(update=settings), post)
        components[label] = {label: scores}
    if args.lstm:
        t0 = time.perf_counter()
        lstm_z = lstm_residual_z([(f.seconds, f.values) for f in files])
        outputs = [run_detector(f.seconds, f.values, default) for f in files]
        seconds["lstm residual"] = time.perf_counter() - t0
        for label, fuse in LSTM_FUSIONS.items():
            components[label] = {
                label: [
                    row_scores(f.values, fuse(out, z))
                    for f, out, z in zip(files, outputs, lstm_z, strict=True)
                ]
            }
    baselines: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, fn in (
        ("rolling z-score (288 rows)", rolling_zscore),
        ("median band (1500 rows)", median_band),
    ):
        t0 = time.perf_counter()
        baselines[name] = {name: [fn(f.values) for f in files]}
        seconds[name] = time.perf_counter() - t0

    methods: dict[str, dict[str, list[np.ndarray]]] = {
        "prognos (setting chosen per fold)": chosen,
        "prognos (defaults as shipped)": {default_name: chosen[default_name]},
        "level only, setting chosen per fold (before)": level_grid,
        **{f"component: {label}": scores for label, scores in components.items()},
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
    before = results["level only, setting chosen per fold (before)"]["standard"]
    folds = Table(title="Per held-out fold, NAB standard (quiet folds: false alarms per day)")
    short = {
        "prognos (setting chosen per fold)": "prognos",
        "level only, setting chosen per fold (before)": "before",
        **{f"component: {label}": label.replace("level + ", "+") for label in components},
        "rolling z-score (288 rows)": "rolling z",
    }
    for col in ("fold", "files", "win", "chosen on the other folds", "θ", *short.values()):
        folds.add_column(
            col,
            justify="left" if col in ("fold", "chosen on the other folds") else "right",
            no_wrap=col == "fold",
        )
    for k, fold in enumerate(ours.folds):
        cells = [_fold_cell(results[m]["standard"].folds[k]) for m in short]
        folds.add_row(
            fold.fold.split("/", 1)[1],
            str(fold.files),
            str(fold.windows),
            _short(fold.choice),
            f"{fold.threshold:.4f}",
            *cells,
        )
    console.print(folds)
    drops = [
        f"{o.fold}: {o.score - b.score:+.1f}"
        for o, b in zip(ours.folds, before.folds, strict=True)
        if o.windows and o.score < b.score - 3
    ]
    console.print(
        f"dev figure {ours.pooled:.1f} against {before.pooled:.1f} before; folds dropping by more "
        f"than 3 points: {', '.join(drops) or 'none'}"
    )
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
        "level only",
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
            ("prognos", chosen[default_name]),
            ("level_only", level_grid[default_name]),
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
            f"{row['level_only']:.1f}",
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
        f"(ratio {took / seconds['rolling z-score (288 rows)']:.1f}x); whole bench "
        f"{time.perf_counter() - started:.0f}s"
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
                "components": {label: settings for label, (settings, _) in COMPONENTS.items()},
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
