#!/usr/bin/env python
"""Data-parallel training of the global LSTM (`models.train_workers`): fit time with 1 and 2
(or more) processes on the same series, seed and settings.

The series are `sim.fleet`'s (daily cycle + 3 % noise, levels 5 to 5,000, 60 s step), `--days`
of history each; the model is the default settings' LSTM (`models.config`: context 120,
horizon 30, hidden 32, 8,192 windows per epoch, batch 256) with `--epochs` epochs and no early
stop, so every run does the same number of optimiser steps. Runs are interleaved (1, 2, 1, 2,
...) so the machine's load falls on each alike; the median of `--repeats`. `wall s` is the
whole `fit_parallel` call (process start, rendezvous, data sent to the workers included);
`epoch s` is rank 0's training loop per epoch; `val loss` is rank 0's best validation loss.
PyTorch threads per process: `--threads`, by default the cores divided among the processes
(as `fit_parallel` does; one process keeps PyTorch's default, one thread per core).
`--launcher spawn ray` also times ranks 1..N-1 as Ray actors (`engine: ray`) on a local
cluster of this machine's cores (loopback, started before the timed runs), one CPU each.

    .venv/bin/python bench/train.py [--series 200] [--days 3] [--epochs 3] [--workers 1 2]
        [--repeats 3] [--threads N] [--launcher spawn [ray]] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.settings import ModelSettings  # noqa: E402
from models.domain import History  # noqa: E402
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig  # noqa: E402
from models.forecasters.parallel import Launcher, fit_parallel  # noqa: E402
from sim.fleet import START, fleet_keys, values_at  # noqa: E402


def fleet(series: int, days: int) -> list[History]:
    ts = START + np.arange(days * 1440, dtype=np.int64) * 60
    values = values_at(series, ts, np.random.default_rng(0))
    return [
        History(key, 60, START, row)
        for key, row in zip(fleet_keys("cpu", series), values, strict=True)
    ]


def run(
    histories: list[History], config: LSTMConfig, workers: int, launcher: Launcher | None
) -> dict[str, float]:
    forecaster = GlobalLSTMForecaster(config)
    started = time.perf_counter()
    report = fit_parallel(forecaster, histories, workers, launcher=launcher)
    return {
        "wall": time.perf_counter() - started,
        "epoch": report.seconds / report.epochs,
        "val_loss": report.best_val_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, help="PyTorch threads per process (default: cores / processes)"
    )
    parser.add_argument("--launcher", nargs="+", choices=["spawn", "ray"], default=["spawn"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    launchers = {name: ray_launcher() if name == "ray" else None for name in args.launcher}
    histories = fleet(args.series, args.days)
    config = LSTMConfig(
        **{
            **ModelSettings().config,
            "max_epochs": args.epochs,
            "patience": args.epochs + 1,
            "num_threads": args.threads,
        }
    )
    # One process starts nothing: it is timed once, whatever the launchers.
    cases = [
        (name, workers)
        for workers in args.workers
        for name in (args.launcher if workers > 1 else args.launcher[:1])
    ]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for name, workers in cases:
            runs[name, workers].append(run(histories, config, workers, launchers[name]))
    rows = []
    base = statistics.median(r["wall"] for r in runs[cases[0]])
    threads = args.threads or "cores / processes"
    print(
        f"{args.series} series x {args.days} days, {args.epochs} epochs, {os.cpu_count()} cores, "
        f"threads per process: {threads}"
    )
    print("| processes | ranks 1..N-1 | wall s | epoch s | speed-up | val loss |")
    print("|---:|---|---:|---:|---:|---:|")
    for (name, workers), results in runs.items():
        row = {
            "workers": workers,
            "launcher": name if workers > 1 else None,
            "wall_seconds": statistics.median(r["wall"] for r in results),
            "epoch_seconds": statistics.median(r["epoch"] for r in results),
            "val_loss": statistics.median(r["val_loss"] for r in results),
        }
        rows.append(row)
        print(
            f"| {workers} | {row['launcher'] or ''} | {row['wall_seconds']:.1f} "
            f"| {row['epoch_seconds']:.2f} "
            f"| {base / row['wall_seconds']:.2f}x | {row['val_loss']:.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def ray_launcher() -> Launcher:
    """Ranks as Ray actors on a local cluster of this machine's cores, started now."""
    from core.settings import RaySettings
    from prognos.engine import LOOPBACK_RAY_ENV

    os.environ.update(LOOPBACK_RAY_ENV)
    from prognos.engine.ray_engine import join_cluster
    from prognos.engine.ray_train import RayLauncher

    settings = RaySettings(address="local", cpus_per_worker=1)
    join_cluster(settings)
    return RayLauncher(settings)


if __name__ == "__main__":
    main()
