"""`engine: ray` on a local Ray cluster (loopback only, no usage statistics) and a real
PostgreSQL: the same replayed fleet gives the rows of the stage as it always ran, with one and
three workers; a worker killed mid-cycle is restarted by Ray and the cycle loses and doubles no
step. Bounded: one cluster for the module (about 15 s to start on 2 cores), small fleets."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from core.settings import Settings, TargetSettings
from models.service import CycleSummary
from tests.support.fleet import (
    FLOAT32_TOLERANCE,
    differences,
    on,
    ray_engine,
    replay,
    stage_rows,
    today,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def test_ray_workers_write_the_rows_of_the_local_engine(
    ray_cluster: Any, databases: Callable[[str], tuple[str, sessionmaker[Session]]]
) -> None:
    _, reference = databases("today")
    expected_summaries = replay(reference, today(reference))
    expected = stage_rows(reference)
    for workers in (1, 3):
        url, sessions = databases(f"w{workers}")
        engine = ray_engine(url, sessions, workers)
        try:
            got = replay(sessions, on(engine))
        finally:
            engine.close()
        assert [(s.status, s.end, s.scored, s.anomalies, s.warnings) for s in got] == [
            (s.status, s.end, s.scored, s.anomalies, s.warnings) for s in expected_summaries
        ], workers
        assert differences(stage_rows(sessions), expected, rel=FLOAT32_TOLERANCE) == [], workers


def test_a_worker_killed_mid_cycle_loses_and_doubles_nothing(
    ray_cluster: Any, databases: Callable[[str], tuple[str, sessionmaker[Session]]]
) -> None:
    _, reference = databases("reference")
    replay(reference, today(reference), series=150)
    expected = stage_rows(reference)

    url, sessions = databases("killed")
    engine = ray_engine(url, sessions, 3)
    run = on(engine)
    kills: list[int] = []  #: the pids killed
    delays = iter([None, 0.02, None, 0.2, None, 0.5])  #: into the cycle (None: no kill)

    def killing(target: TargetSettings, end: int) -> CycleSummary:
        """Every other cycle, worker 1's process is SIGKILLed a little later into it."""
        delay = next(delays)
        if delay is None:
            return run(target, end)
        victim = engine.pids()[1]

        def kill() -> None:
            os.kill(victim, signal.SIGKILL)
            kills.append(victim)

        timer = threading.Timer(delay, kill)
        timer.start()
        try:
            return run(target, end)
        finally:
            timer.join()

    try:
        summaries = replay(sessions, killing, series=150)
        restarted = engine.pids()
    finally:
        engine.close()
    assert len(set(kills)) == 3 and all(s.status == "ok" for s in summaries)
    assert restarted[1] not in kills and len(set(restarted)) == 3  # Ray restarted it each time
    assert differences(stage_rows(sessions), expected, rel=FLOAT32_TOLERANCE) == []


def test_a_replacement_with_no_room_waits_and_its_shards_catch_up(
    ray_cluster: Any, databases: Callable[[str], tuple[str, sessionmaker[Session]]]
) -> None:
    """Worker 1 dies for good while another actor takes the CPUs it held: its replacement
    cannot be placed, so the cycle runs without it after the placement wait (not waiting
    without a bound); once CPUs are free it is placed and scores every step its shards missed,
    once each."""
    _, reference = databases("reference_room")
    replay(reference, today(reference), series=60)
    expected = stage_rows(reference)

    url, sessions = databases("no_room")
    engine = ray_engine(url, sessions, 2, max_restarts=0)  # 0.5 CPU each of the cluster's 2
    engine.placement_wait = 2.0
    run = on(engine)
    hog = ray_cluster.remote(num_cpus=1.5)(Hog)
    state: dict[str, Any] = {}
    plan = iter(["run", "kill worker 1, take its CPUs", "run", "free the CPUs", "run", "run"])
    skipped: list[set[int]] = []

    def cycle(target: TargetSettings, end: int) -> CycleSummary:
        step = next(plan)
        if step.startswith("kill"):
            os.kill(engine.pids()[1], signal.SIGKILL)
            state["hog"] = hog.remote()
            ray_cluster.get(state["hog"].ready.remote(), timeout=60)  # placed: 2 of 2 CPUs used
        elif step.startswith("free"):
            ray_cluster.kill(state.pop("hog"))
            ray_cluster.get(engine.actors[1].pid.remote(), timeout=60)  # now placed
        summary = run(target, end)
        skipped.append(set(engine.unplaced))
        return summary

    try:
        summaries = replay(sessions, cycle, series=60)
    finally:
        engine.close()
    assert skipped == [set(), {1}, {1}, set(), set(), set()]
    assert all(s.status == "ok" for s in summaries)
    assert summaries[1].series < 60  # worker 1's shards waited
    got, want = stage_rows(sessions), expected
    # Every step of every series scored exactly once, the newest forecasts the same; the
    # forecasts of the two cycles worker 1's shards missed were never made, and the breach
    # streaks built on them differ accordingly.
    for table in ("anomaly_scores", "forecasts"):
        assert differences({table: got[table]}, {table: want[table]}, rel=FLOAT32_TOLERANCE) == []


class Hog:
    """An actor that only holds CPUs."""

    def ready(self) -> bool:
        return True


def test_the_daemon_cycle_runs_on_ray_when_configured(
    ray_cluster: Any, databases: Callable[[str], tuple[str, sessionmaker[Session]]]
) -> None:
    from core.clock import FixedClock
    from prognos import jobs
    from prognos.context import ServiceContext
    from prognos.engine.ray_engine import RayEngine, read_assignment
    from sim.fleet import fleet_target

    url, sessions = databases("daemon")
    target = fleet_target("fleet", threshold=3000.0, consecutive=2)
    context = ServiceContext(
        settings=Settings(database={"url": url}, engine="ray", ray={"cpus_per_worker": 0.5}),
        engine=sessions.kw["bind"],
        sessions=sessions,
        source=None,  # type: ignore[arg-type]  # the forecast stage reads the database only
        targets=[target],
        clock=FixedClock(from_epoch(0)),
    )
    seen: list[list[CycleSummary]] = []

    def cycle(_: TargetSettings, end: int) -> CycleSummary:
        context.clock = FixedClock(from_epoch(end))
        seen.append(jobs.forecast_cycle(context))
        return seen[-1][0]

    try:
        replay(sessions, cycle, series=20, late=0)
        assert isinstance(context.cycle_engine, RayEngine)
        assert sorted(read_assignment(sessions)) == [0, 1]  # ray.workers: 2 by default
    finally:
        for stop in context.on_stop:
            stop()
    assert [s.status for (s,) in seen] == ["ok"] * 6
    assert all(s.series == 20 for (s,) in seen)
