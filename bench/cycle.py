#!/usr/bin/env python
"""The whole serving cycle for N series on a real database: read the context windows, forecast,
score every new step with the detector (models.detector, its state read and written in the
same transaction), store forecasts + scores + predicted breaches, then export /metrics.

Setup (not timed): a fresh SQLite file (or `--db-url`, e.g. PostgreSQL) migrated to head, one
target with a breach limit, N generated series (60 s step, daily cycle + noise) with
`context + 2` steps stored through `ingest.service.store`. Each timed round first stores one new
step for every series (not timed: that is ingest, measured by bench/ingest.py), then times

- `cycle`: `models.service.forecast_cycle` in one transaction, commit included;
- `export`: one scrape of /metrics as the API renders it (`api.metrics`), which reads the
  forecasts, newest scores and breaches back from the database.

Models, interleaved within every round: the LSTM of the default settings (untrained: a forward
pass costs the same whatever the weights; served through `ServingModels` as an active model
would be) and the median band (the cold-start model) as the baseline. Ratios are against the
median band's cycle in the same run. Median over `--repeats` rounds.

    .venv/bin/python bench/cycle.py [--series 10000] [--repeats 3] [--db-url URL]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from api.metrics import build_registry, render  # noqa: E402
from core.clock import FixedClock, from_epoch  # noqa: E402
from core.database import create_engine, migrate, safe_url, session_factory  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.detector import DetectorConfig  # noqa: E402
from models.forecasters.registry import build  # noqa: E402
from models.service import ServingModels, forecast_cycle  # noqa: E402
from prognos.context import ServiceContext  # noqa: E402
from sim.fleet import START, fleet_keys, fleet_target, store_steps, values_at  # noqa: E402

STEP = 60
DEFAULT_OUT = ROOT / "bench" / "results" / "cycle.json"
console = Console()


class _NoSource:
    kind = "bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000, help="series (10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per model (3)")
    parser.add_argument("--db-url", default=None, help="database (default: a temp SQLite file)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)

    settings = Settings()
    lstm_config = dict(settings.models.config)
    context = int(lstm_config["context_length"])
    tmp = tempfile.TemporaryDirectory(prefix="prognos-cycle-")
    url = args.db_url or f"sqlite:///{tmp.name}/bench.db"
    engine = create_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    target = fleet_target("bench")
    n = args.series
    keys = fleet_keys("bench", n)
    rng = np.random.default_rng(0)
    console.print(
        f"cycle bench: {n:,} series, context {context}, {safe_url(url)}, "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads"
    )
    started = time.perf_counter()
    history_ts = START + STEP * np.arange(context + 2)
    store_steps(sessions, target, keys, history_ts, values_at(n, history_ts, rng))
    console.print(
        f"  stored {n * len(history_ts):,} samples in {time.perf_counter() - started:.1f}s"
    )

    lstm = build(settings.models.forecaster, lstm_config)
    lstm.mark_fitted(STEP)  # untrained weights: a forward pass costs the same
    servers = {
        "lstm": ServingModels(cold_start="median_band", cold_config={}),
        "median_band": ServingModels(cold_start="median_band", cold_config={}),
    }
    servers["lstm"]._loaded[STEP] = (None, lstm)  # bench shortcut: as if it were the active model
    ctx = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        source=_NoSource(),  # type: ignore[arg-type]  # the exporter reads the database only
        targets=[target],
        clock=FixedClock(datetime.now(UTC)),
    )
    registry = build_registry(ctx, "bench")
    timings: dict[str, list[float]] = {
        f"{m}: {p}": [] for m in servers for p in ("cycle", "export")
    }
    scrape_bytes = 0
    end = int(history_ts[-1])
    # One untimed round per model first: imports, the first forecasts to score against.
    for round_no in range(args.repeats + 1):
        for name, models in servers.items():
            end += STEP
            step_ts = np.array([end])
            store_steps(sessions, target, keys, step_ts, values_at(n, step_ts, rng))
            t0 = time.perf_counter()
            with sessions() as session:
                summary = forecast_cycle(
                    session,
                    target=target,
                    models=models,
                    detector=DetectorConfig(),
                    now=from_epoch(end),
                )
                session.commit()
            t1 = time.perf_counter()
            body = render(registry)
            t2 = time.perf_counter()
            if summary.status != "ok" or summary.series != n:
                console.print(f"[red]cycle failed: {summary}[/]")
                return 1
            if round_no:
                timings[f"{name}: cycle"].append(t1 - t0)
                timings[f"{name}: export"].append(t2 - t1)
                scrape_bytes = len(body)

    with sessions() as session:
        stored = session.execute(sa.text("SELECT count(*) FROM forecasts")).scalar_one()
    base = statistics.median(timings["median_band: cycle"])
    table = Table(title=f"serving cycle for {n:,} series (median of {args.repeats})")
    for column in ("measurement", "seconds", "series/s", "ratio vs median_band cycle"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    rows = []
    for label, values in timings.items():
        med = statistics.median(values)
        rows.append(
            {
                "measurement": label,
                "seconds": med,
                "series_per_s": n / med,
                "ratio_vs_band_cycle": base / med,
            }
        )
        table.add_row(label, f"{med:.3f}", f"{n / med:,.0f}", f"{base / med:.3f}x")
    whole = statistics.median(timings["lstm: cycle"]) + statistics.median(timings["lstm: export"])
    console.print(table)
    console.print(
        f"LSTM cycle + export: {whole:.2f}s for {n:,} series ({n / whole:,.0f} series/s); "
        f"{stored:,} forecasts stored, /metrics {scrape_bytes / 1e6:.1f} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "series": n,
                "repeats": args.repeats,
                "database": engine.dialect.name,
                "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version()},
                "rows": rows,
                "lstm_cycle_plus_export_seconds": whole,
                "metrics_bytes": scrape_bytes,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")
    engine.dispose()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
