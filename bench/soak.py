#!/usr/bin/env python
"""Soak: the daemon's cycle for N series over many retention horizons; do the table sizes, the
database file, the process's memory and the /metrics scrape stay flat once retention bites?

Setup: a fresh SQLite file (or `--db-url`, e.g. PostgreSQL) migrated to head and a
`ServiceContext` built by the daemon's composition root (`prognos.composition.build_context`) on a
`FixedClock` that the bench steps as fast as the cycle runs. Settings: the defaults with a
`--step` ingest interval, `models.forecaster: median_band` (the cold-start model: no training,
so no retrain job) and one short `--retention` for samples, spans, anomaly scores, forecast
history, closed incidents and ingest runs (idle series follow the sample retention).

The source is generated inside the bench (the `Source` protocol Prometheus implements): N series
under two targets, a daily cycle + noise + rare spikes (alarms);

- `load` (90 %): a share (`--churn`) of its pods is replaced every 2 x retention (the old series
  stop, new ones start), so idle-series retention has work;
- `memory` (10 %), with a breach limit of 0.95 that a few hot pods cross every afternoon, so
  breach warnings, incidents and proposals (the shipped playbooks) exist.

Spans arrive every step as OTLP intake would store them (`--spans` per step).

Every step: `prognos.jobs.cycle` (ingest, forecast + score, group incidents, expire proposals).
Every simulated hour, as the daemon does: `prognos.jobs.prune_samples`, then the measures: rows of
every table, the database size (SQLite: file + WAL), RSS (/proc/self/status), one /metrics
render as the API does it (`api.metrics`, median of `--scrapes`), and the hour's mean cycle time.

The baseline is measured in the same run: the first full horizon, i.e. the second one (retention
deletes nothing until rows are one horizon old, so the first one only fills the tables). Sizes:
the value at the end vs the value at the end of the first full horizon. Times: the median over
the last horizon vs over the first full horizon. Flat = ratio <= --size-tolerance (sizes) or
--time-tolerance (times). Rows kept by design (the audit chain, proposals and what they name)
are reported, not gated.

    .venv/bin/python bench/soak.py [--series 1000] [--days 2] [--step 300] [--retention 6h]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from api.metrics import build_registry, render  # noqa: E402
from core.clock import FixedClock, to_epoch  # noqa: E402
from core.database import safe_url  # noqa: E402
from core.durations import format_duration, parse_duration  # noqa: E402
from core.settings import BreachSettings, Settings, TargetSettings  # noqa: E402
from ingest.domain import PullResult, SeriesData, SeriesKey  # noqa: E402
from ingest.span_store import store_spans  # noqa: E402
from prognos import jobs  # noqa: E402
from prognos.composition import build_context  # noqa: E402
from prognos.context import ServiceContext  # noqa: E402

DAY = 86_400
HOUR = 3_600
START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # a Monday
DEFAULT_OUT = ROOT / "bench" / "results" / "soak.json"
MEMORY_LIMIT = 0.95  # the memory target's breach limit (share of the pod's limit)
SERVICES = 20
# Rows a proposal, an execution or the audit chain keeps by design (issue 12: "exempt"): reported,
# not gated. Incidents stay while a proposal names them, and every incident here gets one.
KEPT_BY_DESIGN = (
    "audit_log",
    "audit_head",
    "proposals",
    "approvals",
    "executions",
    "execution_steps",
)
KEPT_WHILE_NAMED = ("incidents",)
console = Console(width=160)  # the table has a column per horizon
log = logging.getLogger("soak")


class SoakSource:
    """N generated series (see the module docstring); deterministic per (seed, series, step),
    whatever window asks, and never a point after the clock's now."""

    kind = "bench"

    def __init__(
        self, clock: FixedClock, *, series: int, seed: int, step: int, churn: float, lifetime: int
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.step = step
        self.lifetime = lifetime
        memory = max(1, series // 10)
        load = max(1, series - memory)
        rng = np.random.default_rng(seed)
        hot = max(1, memory // 20)
        self.shape = {
            "load": {
                "level": np.geomspace(5, 5000, load),
                "amplitude": np.full(load, 0.3),
                "phase": rng.uniform(0, 2 * np.pi, load),
                "noise": np.full(load, 0.03),
                "churning": np.arange(load) < round(churn * load),
                "offset": rng.integers(0, lifetime, load) // step * step,
            },
            "memory": {
                # A share of the pod's limit; the hot pods peak above MEMORY_LIMIT every day.
                "level": np.where(np.arange(memory) < hot, 0.82, rng.uniform(0.3, 0.55, memory)),
                "amplitude": np.where(np.arange(memory) < hot, 0.2, 0.15),
                "phase": np.full(memory, -np.pi / 2),  # the peak in the afternoon (UTC)
                "noise": np.full(memory, 0.02),
                "churning": np.zeros(memory, dtype=bool),
                "offset": np.zeros(memory, dtype=np.int64),
            },
        }

    @property
    def max_points_per_request(self) -> int:
        return 11_000

    def describe(self) -> str:
        counts = ", ".join(f"{t} {len(s['level'])}" for t, s in self.shape.items())
        return f"generated soak series ({counts}; seed {self.seed})"

    def check(self) -> None:
        """Always there."""

    def targets(self) -> list[TargetSettings]:
        return [
            TargetSettings(name="load", query="load", step=timedelta(seconds=self.step)),
            TargetSettings(
                name="memory",
                query="memory",
                step=timedelta(seconds=self.step),
                breach=BreachSettings(threshold=MEMORY_LIMIT),
            ),
        ]

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        now = to_epoch(self.clock.now())
        end = min(end, now - now % step)
        start += -start % step
        result = PullResult()
        if end < start:
            return result
        ts = np.arange(start, end + 1, step, dtype=np.int64)
        shape = self.shape[target.name]
        values = self._values(target.name, shape, ts)
        for i in range(len(values)):
            if not shape["churning"][i]:
                key = SeriesKey.of(target.name, _labels(i, None))
                result.series.append(SeriesData(key, ts, values[i]))
                continue
            generation = (ts + shape["offset"][i]) // self.lifetime
            for gen in np.unique(generation):
                keep = generation == gen
                key = SeriesKey.of(target.name, _labels(i, int(gen)))
                result.series.append(SeriesData(key, ts[keep], values[i, keep]))
        return result

    def _values(self, name: str, shape: dict[str, np.ndarray], ts: np.ndarray) -> np.ndarray:
        n = len(shape["level"])
        noise = np.empty((n, len(ts)))
        spikes = np.empty((n, len(ts)))
        for j, t in enumerate(ts):  # per step, so a value never depends on the window asked
            rng = np.random.default_rng((self.seed, len(name), int(t)))
            noise[:, j] = rng.standard_normal(n)
            spikes[:, j] = rng.random(n) < 2e-4
        daily = np.sin(2 * np.pi * (ts[None, :] % DAY) / DAY + shape["phase"][:, None])
        relative = shape["amplitude"][:, None] * daily + shape["noise"][:, None] * noise
        if name == "memory":
            return shape["level"][:, None] + relative + 0.1 * spikes
        return shape["level"][:, None] * (1 + relative + 0.5 * spikes)


def _labels(slot: int, generation: int | None) -> dict[str, str]:
    pod = f"p{slot}" if generation is None else f"p{slot}-g{generation}"
    return {"service": f"svc{slot % SERVICES}", "pod": pod}


def spans_for(step_no: int, *, end_ns: int, step: int, count: int) -> pd.DataFrame:
    """`count` root spans spread over the step before `end_ns`, as an OTLP export stores them."""
    rng = np.random.default_rng(step_no)
    starts = end_ns - rng.integers(1, step * 10**9, count)
    ids = [f"{step_no:016x}{j:016x}" for j in range(count)]
    return pd.DataFrame(
        {
            "trace_id": ids,
            "span_id": [i[16:] for i in ids],
            "parent_id": "",
            "service": [f"svc{j % SERVICES}" for j in range(count)],
            "operation": "GET /",
            "start_ns": starts,
            "end_ns": starts + rng.lognormal(np.log(5e7), 0.5, count).astype(np.int64),
            "error": rng.random(count) < 0.01,
        }
    )


def rss_mb() -> float:
    """Resident memory now (Linux); elsewhere the peak, which can only say 'not more than'."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def database_mb(context: ServiceContext) -> float:
    engine = context.engine
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "")
        files = [path, path.with_name(path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) / 1e6
    with engine.connect() as connection:
        size = connection.execute(sa.text("SELECT pg_database_size(current_database())"))
        return float(size.scalar_one()) / 1e6


def row_counts(context: ServiceContext) -> dict[str, int]:
    names = sorted(
        t for t in sa.inspect(context.engine).get_table_names() if t != "alembic_version"
    )
    with context.engine.connect() as connection:
        return {
            name: int(connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
            for name in names
        }


class _Errors(logging.Handler):
    """Counts what the cycle logs at ERROR: a stage that fails is logged and the rest run on."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()


def build_settings(args: argparse.Namespace, data_dir: Path) -> Settings:
    keep = args.retention
    database: dict[str, Any] = {"url": args.db_url} if args.db_url else {}
    return Settings(
        data_dir=data_dir,
        database=database,
        ingest={
            "interval": timedelta(seconds=args.step),
            "retention": keep,
            "run_retention": keep,
        },
        models={
            "forecaster": "median_band",
            "score_retention": keep,
            "forecast_history_retention": keep,
        },
        rca={"incident_retention": keep},
        spans={"retention": keep},
        remediation={"playbooks_dir": ROOT / "deploy" / "playbooks"},
    )


def measure(
    context: ServiceContext, scrape: Callable[[], bytes], scrapes: int
) -> tuple[dict[str, int], float, float, float, int]:
    counts = row_counts(context)
    seconds = []
    body = b""
    for _ in range(scrapes):
        t0 = time.perf_counter()
        body = scrape()
        seconds.append(time.perf_counter() - t0)
    return counts, database_mb(context), rss_mb(), statistics.median(seconds), len(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000, help="series (1000)")
    parser.add_argument("--days", type=float, default=2.0, help="simulated days (2)")
    parser.add_argument("--step", type=int, default=300, help="step and cycle, seconds (300)")
    parser.add_argument(
        "--retention", default="6h", help="every retention of the run, e.g. 6h, 90m (6h)"
    )
    parser.add_argument("--spans", type=int, default=100, help="spans stored per step (100)")
    parser.add_argument("--churn", type=float, default=0.1, help="share of load pods replaced")
    parser.add_argument("--scrapes", type=int, default=3, help="/metrics renders per hour (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size-tolerance", type=float, default=1.2, help="flat sizes (1.2)")
    parser.add_argument("--time-tolerance", type=float, default=1.5, help="flat times (1.5)")
    parser.add_argument("--db-url", default=None, help="database (default: a temp SQLite file)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)
    args.retention = parse_duration(args.retention)  # "6h", as a settings file says it
    horizon = int(args.retention.total_seconds())
    total = int(args.days * DAY)
    if horizon % HOUR or total < 3 * horizon or args.step <= 0 or HOUR % args.step:
        parser.error("retention: whole hours; days: >= 3 horizons; step: divides an hour")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    tmp = tempfile.TemporaryDirectory(prefix="prognos-soak-")
    clock = FixedClock(START)
    source = SoakSource(
        clock,
        series=args.series,
        seed=args.seed,
        step=args.step,
        churn=args.churn,
        lifetime=2 * horizon,
    )
    settings = build_settings(args, Path(tmp.name))
    context = build_context(settings, clock=clock, source=(source, source.targets()))
    registry = build_registry(context, "soak")
    cycles = total // args.step
    per_hour = HOUR // args.step
    console.print(
        f"soak: {args.series:,} series, {args.days:g} simulated days = {cycles} cycles at "
        f"{args.step}s, every retention {format_duration(args.retention)} "
        f"({total / horizon:.1f} horizons), "
        f"{safe_url(settings.database_url)}; {source.describe()}"
    )
    hours: list[dict[str, Any]] = []
    cycle_seconds: list[float] = []
    wall = time.perf_counter()
    for n in range(1, cycles + 1):
        clock.set(START + timedelta(seconds=n * args.step))
        end_ns = to_epoch(clock.now()) * 10**9
        with context.sessions() as session:
            store_spans(session, spans_for(n, end_ns=end_ns, step=args.step, count=args.spans))
            session.commit()
        t0 = time.perf_counter()
        jobs.cycle(context)
        cycle_seconds.append(time.perf_counter() - t0)
        if n % per_hour:
            continue
        t0 = time.perf_counter()
        jobs.prune_samples(context)
        prune = time.perf_counter() - t0
        counts, db, rss, scrape, scrape_bytes = measure(
            context, lambda: render(registry), args.scrapes
        )
        hour = {
            "hour": n // per_hour,
            "cycle_seconds": statistics.mean(cycle_seconds[-per_hour:]),
            "prune_seconds": prune,
            "scrape_seconds": scrape,
            "scrape_bytes": scrape_bytes,
            "database_mb": db,
            "rss_mb": rss,
            "rows": counts,
            "wall_seconds": time.perf_counter() - wall,
        }
        hours.append(hour)
        console.print(
            f"  h{hour['hour']:>3}: cycle {hour['cycle_seconds']:.2f}s, prune {prune:.2f}s, "
            f"/metrics {scrape:.3f}s, db {db:.1f} MB, rss {rss:.0f} MB, "
            f"samples {counts['samples']:,}, series {counts['series']:,}, "
            f"incidents {counts['incidents']}, wall {hour['wall_seconds']:.0f}s"
        )
    wall_seconds = time.perf_counter() - wall
    summary = summarise(hours, horizon // HOUR, args.size_tolerance, args.time_tolerance)
    show(hours, summary, horizon // HOUR, args)
    gated = [s for s in summary if s["gated"]]
    flat = all(s["flat"] for s in gated)
    console.print(
        f"{'[green]PASS' if flat else '[red]FAIL'}[/]: {sum(s['flat'] for s in gated)} of "
        f"{len(gated)} gated measures flat (sizes <= {args.size_tolerance}x, times <= "
        f"{args.time_tolerance}x); {errors.count} cycle errors; wall {wall_seconds:.0f}s "
        f"({wall_seconds / cycles:.2f}s per cycle)"
    )
    if errors.count:
        console.print(f"[red]first error: {errors.first}[/]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "config": {
                    "series": args.series,
                    "days": args.days,
                    "step": args.step,
                    "retention_seconds": horizon,
                    "spans_per_step": args.spans,
                    "churn": args.churn,
                    "seed": args.seed,
                    "database": context.engine.dialect.name,
                    "size_tolerance": args.size_tolerance,
                    "time_tolerance": args.time_tolerance,
                },
                "hours": hours,
                "summary": summary,
                "flat": flat,
                "cycle_errors": errors.count,
                "wall_seconds": wall_seconds,
                "machine": {"cpus": _cpus(), "python": platform.python_version()},
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")
    context.engine.dispose()
    tmp.cleanup()
    return 0 if flat and not errors.count else 1


SIZES = ("database_mb", "rss_mb")
TIMES = ("cycle_seconds", "prune_seconds", "scrape_seconds")
LABELS = {"database_mb": "database MB", "rss_mb": "RSS MB"} | {
    t: t.replace("_seconds", " s") for t in TIMES
}


def measures(hours: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every measure's hourly values, by its label: rows per table, sizes, then times."""
    out = {f"rows: {n}": [float(h["rows"][n]) for h in hours] for n in hours[-1]["rows"]}
    for key in (*SIZES, *TIMES):
        out[LABELS[key]] = [float(h[key]) for h in hours]
    return out


def summarise(
    hours: list[dict[str, Any]], horizon: int, size_tolerance: float, time_tolerance: float
) -> list[dict[str, Any]]:
    """Per measure: the first full horizon (hours (H, 2H]) against the last one (sizes: the
    value at the end, or the last horizon's peak if higher, vs the value at hour 2H; times: the
    medians of the two horizons' hourly values)."""
    first = [i for i, h in enumerate(hours) if horizon < h["hour"] <= 2 * horizon]
    last = list(range(len(hours)))[-horizon:]
    span_days = (hours[-1]["hour"] - hours[first[-1]]["hour"]) / 24
    out = []
    for name, values in measures(hours).items():
        is_time = name in {LABELS[t] for t in TIMES}
        if is_time:
            base = statistics.median(values[i] for i in first)
            end = statistics.median(values[i] for i in last)
            top = end
        else:
            base, end = values[first[-1]], values[-1]
            top = max(end, *(values[i] for i in last))
        ratio = top / base if base else (1.0 if not top else float("inf"))
        table = name.removeprefix("rows: ")
        kept = table in KEPT_BY_DESIGN or table in KEPT_WHILE_NAMED
        out.append(
            {
                "measure": name,
                "kind": "time" if is_time else "size",
                "baseline": base,
                "end": end,
                "last_horizon_max": max(values[i] for i in last),
                "ratio": ratio,
                "gated": not kept,
                "flat": ratio <= (time_tolerance if is_time else size_tolerance),
                "per_day": None if is_time else (end - base) / span_days if span_days else None,
            }
        )
    return out


def show(
    hours: list[dict[str, Any]], summary: list[dict[str, Any]], horizon: int, args: Any
) -> None:
    marks = [i for i, h in enumerate(hours) if h["hour"] % horizon == 0]
    table = Table(
        title=f"soak: {args.series:,} series, retention {format_duration(args.retention)}: "
        f"the value at the end of each horizon (h = simulated hour); ratio: sizes, the end "
        f"(or the last horizon's peak) / hour {2 * horizon}; times, the last horizon's "
        f"median / hours {horizon + 1}-{2 * horizon}"
    )
    table.add_column("measure")
    for i in marks:
        table.add_column(f"h{hours[i]['hour']}", justify="right")
    for column in ("ratio", "flat", "per day"):
        table.add_column(column, justify="right")
    by_name = {s["measure"]: s for s in summary}
    for name, values in measures(hours).items():
        s = by_name[name]
        integer = name.startswith("rows")
        cells = [f"{values[i]:,.0f}" if integer else f"{values[i]:.3g}" for i in marks]
        verdict = ("yes" if s["flat"] else "[red]NO[/]") if s["gated"] else "kept*"
        per_day = "" if s["per_day"] is None else f"{s['per_day']:+,.4g}"
        table.add_row(name, *cells, f"{s['ratio']:.2f}x", verdict, per_day)
    console.print(table)
    console.print(
        "kept*: not gated: the audit chain, proposals and their executions are kept by design, "
        "and so are the incidents a proposal names. per day: (end - baseline) / simulated days."
    )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
