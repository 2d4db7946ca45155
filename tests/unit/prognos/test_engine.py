"""The local engine and its shard workers: the same replayed data gives identical rows for
forecasts, scores, detector states, breaches and kept forecasts, whether the stage runs as it
always did (one `forecast_cycle` per target), as the local engine, in small batches, or split
among three workers; and a worker that fails mid-cycle neither loses nor doubles a step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import from_epoch
from core.settings import TargetSettings
from ingest.tables import SeriesRow
from models import service as model_service
from models.detector import DetectorState
from models.service import CycleSummary
from prognos.engine import LocalEngine
from prognos.engine.shards import SHARDS, assign, batches, series_filter, shard_of
from prognos.engine.worker import ShardWorker, merge
from tests.support.fleet import (
    DETECTOR,
    FLOAT32_TOLERANCE,
    activate_untrained_lstm,
    differences,
    replay,
    serving,
    stage_rows,
    today,
)

pytestmark = pytest.mark.timeout(300)


def workers(
    sessions: sessionmaker[Session], count: int, batch_series: int = 50_000
) -> Callable[[TargetSettings, int], CycleSummary]:
    """`count` workers, each with its own models, owning `assign(count)`'s shards."""
    owned = [(ShardWorker(sessions, serving(), batch_series), s) for s in assign(count)]

    def run(target: TargetSettings, end: int) -> CycleSummary:
        parts = [
            w.run(target, shards=s, detector=DETECTOR, now=from_epoch(end), max_catchup=1440)
            for w, s in owned
        ]
        return merge(target.name, parts, seconds=0.0)

    return run


def local(sessions: sessionmaker[Session]) -> Callable[[TargetSettings, int], CycleSummary]:
    engine = LocalEngine(ShardWorker(sessions, serving()))

    def run(target: TargetSettings, end: int) -> CycleSummary:
        return engine.forecast(target, detector=DETECTOR, now=from_epoch(end), max_catchup=1440)

    return run


@pytest.fixture
def fresh(db_url: str, tmp_path: Path) -> Callable[[str], sessionmaker[Session]]:
    """Fresh migrated databases of the test's kind, each with the same active LSTM."""
    from core.database import create_engine, migrate, session_factory

    made: list[Any] = []

    def make(name: str) -> sessionmaker[Session]:
        if db_url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / name}.db"
        else:  # one database per run, on the test's server
            url = db_url if not made else _another(db_url, name)
        engine = create_engine(url)
        migrate(engine)
        made.append(engine)
        sessions = session_factory(engine)
        activate_untrained_lstm(sessions, tmp_path / f"model-{name}")
        return sessions

    yield make  # type: ignore[misc]
    for engine in made:
        engine.dispose()


def _another(db_url: str, name: str) -> str:
    base, _, db = db_url.rpartition("/")
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}_{name}"'))
    engine.dispose()
    return f"{base}/{db}_{name}"


def test_every_engine_writes_the_rows_the_stage_always_wrote(
    fresh: Callable[[str], sessionmaker[Session]],
) -> None:
    reference = fresh("today")
    summaries = replay(reference, today(reference))
    expected = stage_rows(reference)
    # Not vacuous: the fleet spikes and climbs, so alarms and breach warnings are among them.
    assert any(r for r in expected["anomaly_scores"] if r[6] is True)
    assert any(r for r in expected["breaches"] if r[-4] is True)
    assert sum(s.scored for s in summaries) > 35 * 8
    runs = {
        "local engine": local,
        "batches of 7 series": lambda s: workers(s, 1, batch_series=7),
        "three workers": lambda s: workers(s, 3),
    }
    for name, make in runs.items():
        sessions = fresh(name.replace(" ", "_"))
        got = replay(sessions, make(sessions))
        assert [(s.status, s.end, s.scored, s.anomalies, s.warnings) for s in got] == [
            (s.status, s.end, s.scored, s.anomalies, s.warnings) for s in summaries
        ], name
        # The local engine makes the very calls the stage made; other splits of the series
        # batch the LSTM differently (forecasts agree to float32 precision, all else exactly).
        rel = 0.0 if name == "local engine" else FLOAT32_TOLERANCE
        assert differences(stage_rows(sessions), expected, rel=rel) == [], name


def test_a_worker_failing_mid_cycle_loses_and_doubles_nothing(
    fresh: Callable[[str], sessionmaker[Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = fresh("reference")
    replay(reference, today(reference))
    expected = stage_rows(reference)

    sessions = fresh("failing")
    worker = workers(sessions, 1, batch_series=10)
    real = model_service.forecast_cycle

    def crash_then_restart(target: TargetSettings, end: int) -> CycleSummary:
        calls = []

        def second_batch_fails(*args: Any, **kwargs: Any) -> CycleSummary:
            calls.append(1)
            if len(calls) == 2:  # the second batch, after the first committed
                raise RuntimeError("worker killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(model_service, "forecast_cycle", second_batch_fails)
        with pytest.raises(RuntimeError):
            worker(target, end)
        monkeypatch.setattr(model_service, "forecast_cycle", real)
        restarted = workers(sessions, 1, batch_series=10)
        restarted(target, end)
        return restarted(target, end)  # a retry after the step committed changes nothing

    replay(sessions, crash_then_restart)
    assert differences(stage_rows(sessions), expected, rel=FLOAT32_TOLERANCE) == []


def test_held_detector_states_are_used_only_while_the_stored_row_is_theirs(
    fresh: Callable[[str], sessionmaker[Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker keeps its series' detector states between cycles and skips reading them; once
    another worker scored the series, or its own cycle rolled back, it reads the stored ones."""
    reference = fresh("reference")
    replay(reference, today(reference))
    expected = stage_rows(reference)

    sessions = fresh("held")
    a, b = ShardWorker(sessions, serving()), ShardWorker(sessions, serving())
    parsed: list[int] = []
    parse = DetectorState.from_json

    def counted(_: type[DetectorState], text: str) -> DetectorState:
        parsed.append(1)
        return parse(text)

    monkeypatch.setattr(DetectorState, "from_json", classmethod(counted))
    breaches = model_service.update_breaches
    cycles = iter(["a", "a", "b", "a fails, then retries", "a", "a"])
    parsed_per_cycle: list[int] = []

    def alternate(target: TargetSettings, end: int) -> CycleSummary:
        plan = next(cycles)
        parsed.clear()
        run = {"detector": DETECTOR, "now": from_epoch(end), "max_catchup": 1440}
        if plan.startswith("a fails"):

            def killed(*args: Any, **kwargs: Any) -> int:
                raise RuntimeError("killed after scoring, before commit")

            monkeypatch.setattr(model_service, "update_breaches", killed)
            with pytest.raises(RuntimeError):
                a.run(target, **run)  # type: ignore[arg-type]
            monkeypatch.setattr(model_service, "update_breaches", breaches)
        summary = (b if plan == "b" else a).run(target, **run)  # type: ignore[arg-type]
        parsed_per_cycle.append(len(parsed))
        return summary

    replay(sessions, alternate)
    assert differences(stage_rows(sessions), expected, rel=0.0) == []
    # First cycle: no state stored. Then a's own states are held (none parsed); b has none
    # and parses all 35; a then finds b's newer rows, and after its rolled-back attempt its
    # held states are ahead of the stored ones: it parses them all, twice; then holds again.
    assert parsed_per_cycle[:2] == [0, 0]
    assert parsed_per_cycle[2] == 35
    assert parsed_per_cycle[3] == 2 * 35
    assert parsed_per_cycle[4] == 0


def test_shards_split_the_series_once_each(engine: Any, sessions: sessionmaker[Session]) -> None:
    from sim.fleet import fleet_keys, store_steps

    target = TargetSettings(name="fleet", query="fleet")
    keys = fleet_keys("fleet", 500)
    import numpy as np

    store_steps(sessions, target, keys, np.array([60]), np.ones((500, 1)))
    with sessions() as session:
        stored = {i: k for i, k in session.execute(sa.select(SeriesRow.id, SeriesRow.key))}
        seen: list[int] = []
        for owned in assign(3):
            condition = series_filter(owned)
            assert condition is not None
            ids = session.scalars(sa.select(SeriesRow.id).where(condition)).all()
            assert all(shard_of(stored[i]) in owned for i in ids)
            seen.extend(ids)
    assert sorted(seen) == sorted(stored)
    assert series_filter(range(SHARDS)) is None  # one worker owning all: today's query


def test_assignment_and_batches_cover_every_shard_in_order() -> None:
    for count in (1, 2, 3, 7, 256):
        owned = assign(count)
        assert [s for part in owned for s in part] == list(range(SHARDS))
        assert max(map(len, owned)) - min(map(len, owned)) <= 1
    counts = {0: 5, 1: 5, 2: 30, 3: 1}
    assert batches([0, 1, 2, 3], counts, limit=10) == [[0, 1], [2], [3]]
    assert batches(range(SHARDS), counts, limit=100) == [list(range(SHARDS))]


def test_a_summary_of_parts_adds_them_up() -> None:
    parts = [
        CycleSummary("t", "ok", 120, 3, 3, 1, 0, "lstm v1", 0.1, 1),
        CycleSummary("t", "noop", 120),
        CycleSummary("t", "ok", 120, 2, 4, 0, 1, "lstm v1", 0.1, 0),
    ]
    merged = merge("t", parts, seconds=1.5)
    assert (merged.series, merged.scored, merged.anomalies, merged.cold_start) == (5, 7, 1, 1)
    assert (merged.warnings, merged.seconds, merged.status) == (1, 1.5, "ok")
    assert merge("t", parts[1:2], seconds=0).status == "noop"


def test_engine_ray_is_refused_without_postgresql() -> None:
    from pydantic import ValidationError

    from core.settings import Settings

    with pytest.raises(ValidationError, match="engine: ray needs PostgreSQL"):
        Settings(engine="ray")
    assert Settings(engine="ray", database={"url": "postgresql://p@127.0.0.1/p"}).ray.workers == 2
