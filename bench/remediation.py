#!/usr/bin/env python
"""Approval → first step latency of the executor woken by the approval, against a tick-based
executor polling at a fixed interval, measured in the same run; then proposals handled per
second in a burst.

Protocol: a fresh SQLite database (WAL) per mode; `--n` proposals of a one-step playbook (a
trivial registered Python action that records when it starts), each on its own target so no
guard interferes. Approvals arrive one by one at random intervals (uniform 0..2x`--gap`), each
reaching the quorum of 1, in the benchmark's thread while the executor runs in its own thread.
Latency = the action's start minus the moment the approve call began (so it includes the approving
transaction itself). The tick-based executor is the same code with no wake-up, polling every
`--tick` seconds (the daemon's scheduler runs every `ingest.interval`, 60 s by default; the
default 1 s here keeps the run short and flatters the baseline). Throughput: `--n` proposals
approved back-to-back with the woken executor, from the first approval to the last execution
finished.

    .venv/bin/python bench/remediation.py [--n 200] [--tick 1.0] [--gap 0.05]
        [--out bench/results/remediation.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from core.database import create_engine, migrate, session_factory  # noqa: E402
from core.settings import RemediationSettings  # noqa: E402
from remediation import service  # noqa: E402
from remediation.executor import Executor  # noqa: E402
from remediation.playbooks import Playbook  # noqa: E402
from remediation.tables import ExecutionRow  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "remediation.json"
TARGET_P99_S = 1.0
FINISHED = ("succeeded", "failed", "rolled_back", "interrupted")

console = Console(width=None if sys.stdout.isatty() else 140)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Approval → first step latency (woken executor vs polling executor) and "
        "proposals handled per second.",
    )
    parser.add_argument("--n", type=int, default=200, help="proposals per mode (200)")
    parser.add_argument(
        "--tick", type=float, default=1.0, help="poll interval of the baseline, seconds (1.0)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.05, help="mean seconds between approvals (0.05)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    return parser.parse_args(argv)


def playbook() -> Playbook:
    return Playbook.model_validate(
        {
            "name": "bench-noop",
            "version": 1,
            "steps": [
                {
                    "kind": "python",
                    "name": "mark",
                    "action": "mark",
                    "args": {"target": "{{ target }}"},
                    "timeout": "30s",
                }
            ],
            "guards": {"cooldown": "0s", "breaker_max_runs": 1000, "breaker_window": "1h"},
            "approval": {"quorum": 1, "expires_after": "1h"},
        }
    )


class Marks:
    """When each target's first step started (perf_counter, a system-wide monotonic clock),
    and a way to wait for all. Python actions run in a child process of the executor: the
    mark comes back through a queue the child inherits."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._cond = threading.Condition()
        self._queue = multiprocessing.get_context("fork").SimpleQueue()
        threading.Thread(target=self._drain, daemon=True).start()

    def mark(self, args: Mapping[str, Any], env: Mapping[str, str]) -> str:
        self._queue.put((str(args["target"]), time.perf_counter()))
        return "marked"

    def _drain(self) -> None:
        while True:
            target, at = self._queue.get()
            with self._cond:
                self.at[target] = at
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.at) >= count, timeout)


def setup(workdir: Path) -> tuple[sa.Engine, sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{workdir / 'bench.db'}")
    migrate(engine)
    return engine, session_factory(engine)


def propose_all(sessions: sessionmaker[Session], book: Playbook, n: int) -> list[Any]:
    now = datetime.now(UTC)
    out = []
    with sessions() as session:
        for i in range(n):
            out.append(
                service.propose(
                    session,
                    playbook=book,
                    params={},
                    target=f"svc-{i:04d}",
                    proposed_by="bench-operator",
                    evidence={},
                    now=now,
                )
            )
        session.commit()
    return out


def approve(sessions: sessionmaker[Session], book: Playbook, proposal: Any, wake: Any) -> None:
    with sessions() as session:
        service.approve(
            session,
            proposal_id=proposal.id,
            principal="bench-approver",
            role="approver",
            digest=proposal.params_digest,
            playbooks={book.name: book},
            now=datetime.now(UTC),
            wake=wake,
        )
        session.commit()


def make_executor(
    sessions: sessionmaker[Session], book: Playbook, marks: Marks, poll: float
) -> Executor:
    return Executor(
        sessions,
        None,
        RemediationSettings(executor_lease=timedelta(seconds=60)),
        owner=f"bench-{os.getpid()}",
        playbooks={book.name: book},
        actions={"mark": marks.mark},
        poll_interval=poll,
    )


def wait_finished(sessions: sessionmaker[Session], count: int, timeout: float) -> float:
    """Poll until `count` executions are finished; returns when (perf_counter)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            done = session.execute(
                sa.select(sa.func.count())
                .select_from(ExecutionRow)
                .where(ExecutionRow.status.in_(FINISHED))
            ).scalar_one()
        if done >= count:
            return time.perf_counter()
        time.sleep(0.005)
    raise RuntimeError(f"only {done} of {count} executions finished in {timeout:g}s")


def latency_run(mode: str, n: int, tick: float, gap: float, seed: int) -> dict[str, Any]:
    book = playbook()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix=f"bench-rem-{mode}-") as tmp:
        engine, sessions = setup(Path(tmp))
        marks = Marks()
        woken = mode == "wake"
        executor = make_executor(sessions, book, marks, 3600.0 if woken else tick)
        proposals = propose_all(sessions, book, n)
        executor.start()
        started: dict[str, float] = {}
        try:
            t_begin = time.perf_counter()
            for proposal in proposals:
                time.sleep(rng.uniform(0, 2 * gap))
                started[proposal.target] = time.perf_counter()
                approve(sessions, book, proposal, executor.wake if woken else None)
            if not marks.wait_for(n, timeout=60 + 2 * tick):
                raise RuntimeError(f"{mode}: only {len(marks.at)} of {n} steps started")
            t_end = wait_finished(sessions, n, 60 + 2 * tick)
        finally:
            executor.stop()
            engine.dispose()
    lat = np.array([marks.at[t] - started[t] for t in started]) * 1000.0
    return {
        "mode": mode,
        "poll_interval_s": None if woken else tick,
        "n": n,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
            "mean": float(lat.mean()),
        },
        "elapsed_s": t_end - t_begin,
    }


def throughput_run(n: int) -> dict[str, Any]:
    book = playbook()
    with tempfile.TemporaryDirectory(prefix="bench-rem-burst-") as tmp:
        engine, sessions = setup(Path(tmp))
        marks = Marks()
        executor = make_executor(sessions, book, marks, 3600.0)
        proposals = propose_all(sessions, book, n)
        executor.start()
        try:
            t0 = time.perf_counter()
            for proposal in proposals:
                approve(sessions, book, proposal, executor.wake)
            t_approved = time.perf_counter()
            t_end = wait_finished(sessions, n, 300)
        finally:
            executor.stop()
            engine.dispose()
    return {
        "n": n,
        "approvals_s": t_approved - t0,
        "elapsed_s": t_end - t0,
        "proposals_per_s": n / (t_end - t0),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console.print(
        f"[bold]remediation bench[/]: n={args.n} per mode, approvals every ~{args.gap:g}s, "
        f"baseline polls every {args.tick:g}s (the daemon ticks every 60 s), SQLite"
    )
    runs = [
        latency_run("wake", args.n, args.tick, args.gap, args.seed),
        latency_run("tick", args.n, args.tick, args.gap, args.seed),
    ]
    burst = throughput_run(args.n)

    table = Table(title="approval → first step starts (ms)")
    for col in ("executor", "n", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col == "executor" else "right")
    for run in runs:
        lat = run["latency_ms"]
        name = (
            "woken by the approval"
            if run["mode"] == "wake"
            else f"polling every {run['poll_interval_s']:g}s"
        )
        table.add_row(
            name,
            str(run["n"]),
            *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")),
        )
    console.print(table)
    wake_p99 = runs[0]["latency_ms"]["p99"] / 1000.0
    ratio = runs[1]["latency_ms"]["p50"] / max(runs[0]["latency_ms"]["p50"], 1e-9)
    met = wake_p99 < TARGET_P99_S
    console.print(
        f"p99 with wake-up: {wake_p99 * 1000:.1f} ms (target < {TARGET_P99_S * 1000:.0f} ms: "
        f"{'[green]met[/]' if met else '[red]missed[/]'}); p50 is {ratio:.0f}x lower than polling"
    )
    console.print(
        f"burst: {burst['n']} proposals approved back-to-back and executed in "
        f"{burst['elapsed_s']:.2f} s → [bold]{burst['proposals_per_s']:.1f} proposals/s[/] "
        f"(approvals alone {burst['approvals_s']:.2f} s)"
    )
    report = {
        "bench": "remediation",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "config": {"n": args.n, "tick_s": args.tick, "gap_s": args.gap, "seed": args.seed},
        "latency": runs,
        "throughput": burst,
        "headline": {
            "wake_p99_s": wake_p99,
            "target_p99_s": TARGET_P99_S,
            "met": met,
            "p50_ratio_tick_over_wake": ratio,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
