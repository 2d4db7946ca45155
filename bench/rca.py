#!/usr/bin/env python
"""Root-cause ranking: quality on labelled cases and speed on a generated system.

1. Held-out fault types first (rca.evaluation.leave_one_type_out) on a Nezha-layout folder
   (default ../shared/datasets/rca/nezha-ob): for each fault type, the guard band and the fusion
   floor are chosen on the other types' cases and scored on that type's.
2. Quality with the shipped defaults (rca.evaluation, the same code as `prognos rca-eval`):
   AC@1/3/5 and Avg@5 at service level, overall and per fault type, for Prognos and the
   published N-Sigma and BARO (rca.baselines) in the same run on the same windows, on the Nezha
   folder (in-sample: the defaults were chosen on it) and an RCD-layout folder (default
   ../shared/datasets/rca/rcd-sockshop). Folders that are missing are skipped.
3. Speed: a generated 50-service system (sim.traces), 10 minutes of spans (~200,000) with a
   slow operation injected halfway, stored in a SQLite span store and read back for the window,
   then `rca.windows.detect_onset` and `rca.analysis.analyze` on the onset's windows; median of
   `--repeats`, against the N-Sigma baseline on the same system's metrics (ratio), in the same
   run.

    .venv/bin/python bench/rca.py [--nezha DIR] [--sockshop DIR] [--repeats 3]
        [--out bench/results/rca.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from prognos.cli_rca import evaluation_table  # noqa: E402
from rca.analysis import analyze, annotate  # noqa: E402
from rca.baselines import n_sigma  # noqa: E402
from rca.evaluation import (  # noqa: E402
    Evaluation,
    evaluate_nezha,
    evaluate_rcd,
    gather_nezha,
    leave_one_type_out,
)
from rca.windows import detect_onset, onset_windows  # noqa: E402
from sim.traces import Fault, System  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets" / "rca"
DEFAULT_OUT = ROOT / "bench" / "results" / "rca.json"
TARGETS = {"nezha": {"AC@1": 0.75}, "sockshop": {"AC@1": 0.95}}
console = Console()


def quality_table(name: str, evaluation: Evaluation) -> None:
    skipped = f"{len(evaluation.outcomes)} cases ({len(evaluation.skipped)} skipped)"
    console.print(evaluation_table(evaluation, f"{name}: {skipped}"))


def held_out_table(name: str, result: dict[str, Any]) -> None:
    table = Table(title=f"{name}: leave one fault type out (settings chosen without that type)")
    for column in ("fault type", "cases", "AC@1", "AC@3", "Avg@5", "guard s", "floor"):
        table.add_column(column, justify="left" if column == "fault type" else "right")
    for kind, s in result["held_out_by_fault_type"].items():
        table.add_row(
            kind,
            str(s["cases"]),
            f"{s['AC@1']:.3f}",
            f"{s['AC@3']:.3f}",
            f"{s['Avg@5']:.3f}",
            f"{s['guard_s']:g}",
            f"{s['floor']:g}",
        )
    s = result["held_out"]
    table.add_row(
        "all (held out)",
        str(s["cases"]),
        f"{s['AC@1']:.3f}",
        f"{s['AC@3']:.3f}",
        f"{s['Avg@5']:.3f}",
    )
    console.print(table)


def speed(repeats: int, services: int, requests: int) -> dict[str, Any]:
    import tempfile

    from core.database import create_engine, migrate, session_factory
    from ingest.span_store import read_spans, store_spans

    system = System.generate(services, seed=11)
    t0 = 1_700_000_000 * 10**9
    minute = 60 * 10**9
    culprit = system.services[services // 2]
    fault = Fault("slow", culprit, system.operations[culprit][0], start_ns=t0 + 5 * minute)
    spans = system.traces(start_ns=t0, end_ns=t0 + 10 * minute, requests=requests, fault=fault)
    metrics = system.metrics(start_ns=t0, end_ns=t0 + 10 * minute, fault=fault)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/spans.db")
        migrate(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            store_spans(session, spans)
            session.commit()
        read_s, analyze_s, baseline_s = [], [], []
        top = ""
        for _ in range(repeats):
            started = time.perf_counter()
            with sessions() as session:
                window = read_spans(session, t0, t0 + 10 * minute)
            read_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            window = annotate(window)  # once, for the onset and the analysis, as the daemon does
            onset = detect_onset(window, t0 + 5 * minute)
            reference, incident = onset_windows(onset, start_ns=t0, end_ns=t0 + 10 * minute)
            report = analyze(window, baseline=reference, incident=incident)
            analyze_s.append(time.perf_counter() - started)
            top = report.ranking()[0]
            started = time.perf_counter()
            half = metrics.index[len(metrics) // 2]
            n_sigma(metrics[metrics.index < half], metrics[metrics.index >= half])
            baseline_s.append(time.perf_counter() - started)
        engine.dispose()
    read, analysed, base = (statistics.median(x) for x in (read_s, analyze_s, baseline_s))
    return {
        "services": services,
        "spans": len(spans),
        "read_seconds": read,
        "analyze_seconds": analysed,
        "read_plus_analyze_seconds": read + analysed,
        "n_sigma_seconds": base,
        "ratio_ours_vs_n_sigma": (read + analysed) / base if base else None,
        "top_suspect": top,
        "culprit": culprit,
        "target_seconds": 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nezha", type=Path, default=DATASETS / "nezha-ob")
    parser.add_argument("--sockshop", type=Path, default=DATASETS / "rcd-sockshop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument(
        "--requests", type=int, default=8_500, help="traces in 10 minutes (~200,000 spans)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": {"python": platform.python_version()}}
    if args.nezha.is_dir():
        held = leave_one_type_out(gather_nezha(args.nezha))
        held_out_table(f"nezha ({args.nezha})", held)
        results["nezha_held_out"] = held
        got = held["held_out"]["AC@1"]
        goal = TARGETS["nezha"]["AC@1"]
        console.print(
            f"  nezha held-out AC@1 {got:.3f} (target {goal}): {'met' if got >= goal else 'missed'}"
        )
    for name, folder, run in (
        ("nezha", args.nezha, evaluate_nezha),
        ("sockshop", args.sockshop, evaluate_rcd),
    ):
        if not folder.is_dir():
            console.print(f"[yellow]{folder} not found: {name} skipped[/]")
            continue
        evaluation = run(folder)
        sample = " (in-sample: the defaults were chosen on these cases)" if name == "nezha" else ""
        quality_table(f"{name} ({folder}){sample}", evaluation)
        results[name] = evaluation.report()
        if name == "nezha":
            continue  # its target is the held-out figure above
        for key, goal in TARGETS[name].items():
            got = results[name]["overall"][key]
            console.print(
                f"  {name} {key} {got:.3f} (target {goal}): {'met' if got >= goal else 'missed'}"
            )
    fast = speed(args.repeats, args.services, args.requests)
    results["speed"] = fast
    table = Table(title=f"one incident over {fast['spans']:,} spans of {fast['services']} services")
    for column in ("measurement", "seconds (median)"):
        table.add_column(column)
    table.add_row("read the window from the span store (SQLite)", f"{fast['read_seconds']:.3f}")
    table.add_row(
        "find the onset + analyze (rank services + operations)", f"{fast['analyze_seconds']:.3f}"
    )
    table.add_row("read + analyze", f"{fast['read_plus_analyze_seconds']:.3f}")
    table.add_row("baseline: N-Sigma on the metrics", f"{fast['n_sigma_seconds']:.3f}")
    console.print(table)
    console.print(
        f"top suspect {fast['top_suspect']} (injected: {fast['culprit']}); read + analyze "
        f"{fast['read_plus_analyze_seconds']:.2f}s (target < 2 s); "
        f"{fast['ratio_ours_vs_n_sigma']:.0f}x the N-Sigma baseline's time"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
