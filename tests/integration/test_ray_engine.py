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
