#!/usr/bin/env python
"""Scale-out of the forecast/score stage: cycle time and series/s for N generated series with
`engine: local` and `engine: ray` with 1, 2 and 4 shard workers, on one machine and one
PostgreSQL, plus the memory each takes per 10,000 series.

Setup (not timed): a fresh PostgreSQL database per N (`--db-url` names an existing server's
database to copy the URL from; default: a temporary server, as the tests start it), N series
of the fleet (`sim.fleet`: daily cycle + noise, 60 s step) with `context + 2` steps stored as an
ingest cycle stores them, and an untrained LSTM of the default settings made the active model
(registry + artifact, so every worker loads it as it would a trained one; a forward pass costs
the same whatever the weights). A local Ray cluster on loopback (usage stats off).

Timed: each round stores one new step for every series (not timed: ingest), then runs one
cycle per engine, engines interleaved within the round so that the machine's load (shared,
noisy) falls on all alike; one untimed warm-up round first (model loads). Median over
`--repeats` rounds. Ratios are against the local engine in the same run.

`equivalent`: on a separate replay (`--check-series` series, six cycles with a missed one
caught up, spikes, climbs and late series), each engine's forecasts, scores, detector states,
breaches and kept forecasts equal, row for row, those of the stage as it ran before engines.

Memory (`cycle MB / 10k`): what a cycle adds to a warm process (models loaded, one cycle run):
the peak RSS during the timed cycles over the RSS before them (the peak is reset first), for
the bench process (local) and summed over the Ray workers; `peak_rss_mb` is each process' peak.

`rows fetched / cycle` (local engine only): the rows its cycle fetched from the database (context
windows, new samples, detector states, forecasts' times), median over the timed cycles;
`buffer MB / 10k`: its workers' window buffers. `--reread`: the local engine without its window
buffer, re-reading every context window each cycle (as before the buffer), to compare.

    .venv/bin/python bench/scale.py [--series 10000 100000] [--workers 1 2 4] [--repeats 2]
        [--reread] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

from prognos.engine import LOOPBACK_RAY_ENV  # noqa: E402

for _name, _value in LOOPBACK_RAY_ENV.items():  # before Ray is imported
    os.environ.setdefault(_name, _value)
# Ray runs its workers at nice 15; the local engine runs at 0 in this process. On a machine
# other processes share, that alone would slow the workers: compare them on equal terms.
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import models.service as model_service  # noqa: E402
import prognos.engine.window as engine_window  # noqa: E402
from core.clock import from_epoch  # noqa: E402
from core.database import create_engine, migrate, session_factory  # noqa: E402
from core.settings import Settings, TargetSettings  # noqa: E402
from models.detector import DetectorConfig  # noqa: E402
from models.service import ServingModels  # noqa: E402
from prognos.engine import LocalEngine  # noqa: E402
from prognos.engine.shards import assign  # noqa: E402
from prognos.engine.worker import ShardWorker, process_memory  # noqa: E402
from sim.fleet import (  # noqa: E402
    START,
    activate_untrained,
    fleet_keys,
    fleet_target,
    store_steps,
    values_at,
)

STEP = 60
DEFAULT_OUT = ROOT / "bench" / "results" / "scale.json"
console = Console()


class FetchCounter:
    """Rows the forecast/score stage fetches from the database in this process (the local
    engine's reads: windows, new samples, detector states, forecasts' times)."""

    def __init__(self) -> None:
        self.rows = 0
        real = model_service.fetch_tuples

        def counted(db_session: Any, query: Any) -> list[tuple[Any, ...]]:
            out = real(db_session, query)
            self.rows += len(out)
            return out

        model_service.fetch_tuples = counted
        engine_window.fetch_tuples = counted


FETCHED = FetchCounter()


def models_for(settings: Settings) -> ServingModels:
    shape = {k: v for k, v in settings.models.config.items() if k in ("context_length", "horizon")}
    return ServingModels(cold_start=settings.models.cold_start, cold_config=shape)


def start_engines(
    url: str, sessions: Any, workers: list[int], batch_series: int, reread: bool = False
) -> list[tuple[str, int, Any]]:
    """(label, workers, engine) for local and each Ray worker count."""
    engines: list[tuple[str, int, Any]] = []
    base = Settings(database={"url": url}, shards={"batch_series": batch_series})
    worker = ShardWorker(sessions, models_for(base), batch_series, keep_windows=not reread)
    engines.append(("local", 1, LocalEngine(worker)))
    if workers:
        from prognos.engine.ray_engine import RayEngine

        for count in workers:
            settings = Settings(
                database={"url": url},
                engine="ray",
                shards={"batch_series": batch_series},
                ray={"workers": count, "cpus_per_worker": 0.1},
            )
            engine = RayEngine.start(
                settings=settings, sessions=sessions, models=models_for(settings)
            )
            engines.append(("ray", count, engine))
    return engines


def measure(args: argparse.Namespace, server: Any, n: int) -> list[dict[str, Any]]:
    settings = Settings()
    lstm = dict(settings.models.config)
    context = int(lstm["context_length"])
    name = f"scale_{n}_{os.getpid()}"
    url = server.create_database(name)
    engine = create_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    target = fleet_target("bench")
    keys = fleet_keys("bench", n)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    ts = START + STEP * np.arange(context + 2)
    for first in range(0, n, 20_000):  # bounded memory while storing
        part = keys[first : first + 20_000]
        store_steps(sessions, target, part, ts, values_at(len(part), ts, rng))
    console.print(
        f"  {n:,} series: stored {n * len(ts):,} samples in {time.perf_counter() - started:.0f}s"
    )
    with tempfile.TemporaryDirectory(prefix="prognos-scale-") as folder:
        activate_untrained(
            sessions, Path(folder), forecaster=settings.models.forecaster, config=lstm, step=STEP
        )
        engines = start_engines(url, sessions, args.workers, args.batch_series, args.reread)
        try:
            rows = run_rounds(args, sessions, target, keys, rng, engines, int(ts[-1]))
        finally:
            for _, _, eng in engines:
                eng.close()
    engine.dispose()
    server.drop_database(name)
    return rows


def run_rounds(
    args: argparse.Namespace,
    sessions: Any,
    target: TargetSettings,
    keys: list[Any],
    rng: np.random.Generator,
    engines: list[tuple[str, int, Any]],
    end: int,
) -> list[dict[str, Any]]:
    n = len(keys)
    detector = DetectorConfig()
    timings: dict[int, list[float]] = {i: [] for i in range(len(engines))}
    fetched: list[int] = []  #: rows the local engine fetched, per timed cycle
    base_ray: dict[int, list[dict[str, int]]] = {}
    local_before = 0
    for round_no in range(args.repeats + 1):
        for i, (kind, count, eng) in enumerate(engines):
            end += STEP
            step_ts = np.array([end])
            for first in range(0, n, 20_000):
                part = keys[first : first + 20_000]
                store_steps(sessions, target, part, step_ts, values_at(len(part), step_ts, rng))
            if round_no == 1:  # memory from the first timed cycle on: models loaded, warm
                if kind == "local":
                    local_before = process_memory(reset=True)["VmRSS"]
                else:
                    base_ray[i] = eng.memory(reset=True)
            if kind == "ray":  # the assignment of this engine's leader (one per database)
                from prognos.engine.ray_engine import write_assignment

                write_assignment(sessions, assign(count), now=from_epoch(end))
            rows_before = FETCHED.rows
            t0 = time.perf_counter()
            summary = eng.forecast(target, detector=detector, now=from_epoch(end), max_catchup=1440)
            seconds = time.perf_counter() - t0
            if round_no and kind == "local":
                fetched.append(FETCHED.rows - rows_before)
            if summary.status != "ok" or summary.series != n:
                raise SystemExit(f"{kind} x{count}: cycle failed: {summary}")
            if round_no:
                timings[i].append(seconds)
            console.print(f"    round {round_no} {kind} x{count}: {seconds:.1f}s")
    rows = []
    local_rate = n / statistics.median(timings[0])
    for i, (kind, count, eng) in enumerate(engines):
        med = statistics.median(timings[i])
        rows_read: float | None = None
        buffer_bytes: int | None = None
        if kind == "local":
            grown = process_memory()["VmHWM"] - local_before
            peak = [process_memory()["VmHWM"]]
            rows_read = statistics.median(fetched)
            if eng.worker.keep_windows:
                buffer_bytes = sum(b.nbytes for b in eng.worker.buffers.values())
        else:
            now = eng.memory()
            grown = sum(m["VmHWM"] - b["VmRSS"] for m, b in zip(now, base_ray[i], strict=True))
            peak = [m["VmHWM"] for m in now]
        rows.append(
            {
                "engine": kind,
                "workers": count,
                "series": n,
                "cycle_seconds": med,
                "series_per_second": n / med,
                "ratio_vs_local": (n / med) / local_rate,
                "efficiency_per_worker": (n / med) / local_rate / count,
                "cycle_memory_mb_per_10k": grown / 2**20 / (n / 10_000),
                "peak_rss_mb": [p / 2**20 for p in peak],
                "rounds": timings[i],
                "windows": "re-read" if args.reread and kind == "local" else "buffer",
                "rows_fetched_per_cycle": rows_read,
                "window_buffer_mb_per_10k": None
                if buffer_bytes is None
                else buffer_bytes / 2**20 / (n / 10_000),
            }
        )
    return rows


def check_equivalence(server: Any, workers: list[int], series: int) -> dict[int, bool]:
    """Workers -> whether `engine: ray` with that many wrote the stage's rows exactly (0: the
    local engine), on the tests' replayed fleet."""
    from tests.support.fleet import (
        FLOAT32_TOLERANCE,
        activate_untrained_lstm,
        differences,
        replay,
        serving,
        stage_rows,
        today,
    )

    def fresh(label: str) -> tuple[str, Any, Any]:
        db = f"scale_check_{label}_{os.getpid()}"
        url = server.create_database(db)
        eng = create_engine(url)
        migrate(eng)
        sessions = session_factory(eng)
        activate_untrained_lstm(sessions, Path(tmp.name) / db)
        made.append((db, eng))
        return url, sessions, eng

    made: list[tuple[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="prognos-scale-check-")
    _, reference, _ = fresh("reference")
    replay(reference, today(reference), series=series)
    expected = stage_rows(reference)
    out = {}
    from tests.support.fleet import DETECTOR

    for count in [0, *workers]:
        url, sessions, _ = fresh(f"w{count}")
        if count == 0:
            runner: Any = LocalEngine(ShardWorker(sessions, serving(), 50_000))
        else:
            from prognos.engine.ray_engine import RayEngine

            settings = Settings(
                database={"url": url},
                engine="ray",
                shards={"batch_series": max(1, series // 7)},
                ray={"workers": count, "cpus_per_worker": 0.1},
            )
            runner = RayEngine.start(settings=settings, sessions=sessions, models=serving())
        try:
            replay(
                sessions,
                lambda t, e, r=runner: r.forecast(
                    t, detector=DETECTOR, now=from_epoch(e), max_catchup=1440
                ),
                series=series,
            )
        finally:
            runner.close()
        problems = differences(stage_rows(sessions), expected, rel=FLOAT32_TOLERANCE)
        for line in problems[:5]:
            console.print(f"  [red]{'local' if count == 0 else f'ray x{count}'}: {line}[/]")
        out[count] = not problems
    for db, eng in made:
        eng.dispose()
        server.drop_database(db)
    tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (2)")
    parser.add_argument("--batch-series", type=int, default=Settings().shards.batch_series)
    parser.add_argument("--check-series", type=int, default=500)
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="JSON rows")
    parser.add_argument(
        "--reread",
        action="store_true",
        help="the local engine re-reads every context window each cycle (no window buffer)",
    )
    args = parser.parse_args(argv)

    import torch

    from tests.support.servers import start_postgres

    server = start_postgres()
    try:
        if args.workers:
            import ray

            ray.init(address="local", include_dashboard=False, logging_level="ERROR")
        load = os.getloadavg()
        console.print(
            f"scale bench: {os.cpu_count()} cpus, load {load[0]:.1f}, torch {torch.__version__}, "
            f"engines local + ray x {args.workers}"
        )
        equivalent = check_equivalence(server, args.workers, args.check_series)
        console.print(f"  equivalence on {args.check_series} series: {equivalent}")
        rows = []
        for n in args.series:
            for row in measure(args, server, n):
                row["equivalent"] = equivalent[0 if row["engine"] == "local" else row["workers"]]
                rows.append(row)
    finally:
        server.stop()
    table = Table(title=f"forecast/score cycle (median of {args.repeats} rounds; shared machine)")
    for column in (
        "series",
        "engine",
        "workers",
        "cycle s",
        "series/s",
        "vs local",
        "per worker",
        "cycle MB / 10k",
        "windows",
        "rows fetched / cycle",
        "buffer MB / 10k",
        "equivalent",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['series']:,}",
            r["engine"],
            str(r["workers"]),
            f"{r['cycle_seconds']:.2f}",
            f"{r['series_per_second']:,.0f}",
            f"{r['ratio_vs_local']:.2f}x",
            f"{r['efficiency_per_worker']:.2f}",
            f"{r['cycle_memory_mb_per_10k']:.0f}",
            r["windows"],
            "" if r["rows_fetched_per_cycle"] is None else f"{r['rows_fetched_per_cycle']:,.0f}",
            "" if r["window_buffer_mb_per_10k"] is None else f"{r['window_buffer_mb_per_10k']:.1f}",
            "yes" if r["equivalent"] else "NO",
        )
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_at_end": os.getloadavg()[0],
                },
                "rows": rows,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.json}")
    return 0 if all(r["equivalent"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
