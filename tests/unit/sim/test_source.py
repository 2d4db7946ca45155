"""The shop as an ingest Source: the real ingest path stores its series, never past the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.clock import FixedClock, to_epoch
from core.database import create_engine, migrate, session_factory
from ingest import service
from ingest.errors import QueryError
from ingest.tables import SeriesRow
from sim.shop import LATENCY_SLO, MEMORY_LIMIT, TARGETS, Shop
from sim.source import ShopSource
from tests.unit.fakes import make_target

NOW = datetime(2026, 1, 6, 12, 0, 37, tzinfo=UTC)
STEP = 60


def test_reads_never_reach_past_now() -> None:
    clock = FixedClock(NOW)
    source = ShopSource(Shop(1), clock)
    now = to_epoch(NOW)
    result = source.query_range(make_target("memory"), now - 3_600, now + 3_600, STEP)
    assert len(result.series) == 8
    assert max(int(s.timestamps[-1]) for s in result.series) == now - now % STEP
    clock.advance(timedelta(minutes=5))
    later = source.query_range(make_target("memory"), now - 3_600, now + 3_600, STEP)
    assert max(int(s.timestamps[-1]) for s in later.series) == now - now % STEP + 300
    # A window wholly in the future is empty, not an error.
    assert source.query_range(make_target("cpu"), now + 3_600, now + 7_200, STEP).points == 0


def test_a_coarser_step_reads_every_nth_point_and_a_finer_one_is_refused() -> None:
    source = ShopSource(Shop(1), FixedClock(NOW))
    now = to_epoch(NOW) - to_epoch(NOW) % 300
    fine = source.query_range(make_target("cpu"), now - 3_600, now, STEP)
    coarse = source.query_range(make_target("cpu"), now - 3_600, now, 300)
    assert coarse.series[0].timestamps.tolist() == list(range(now - 3_600, now + 1, 300))
    assert coarse.series[0].values.tolist() == fine.series[0].values[::5].tolist()
    with pytest.raises(QueryError):
        source.query_range(make_target("cpu"), now - 3_600, now, 30)
    with pytest.raises(QueryError):
        source.query_range(make_target("disk"), now - 3_600, now, STEP)


def test_targets_carry_the_shop_s_limits() -> None:
    source = ShopSource(Shop(1), FixedClock(NOW))
    targets = {t.name: t for t in source.targets({"lookback": timedelta(hours=2)})}
    assert list(targets) == list(TARGETS)
    assert all(t.query == t.name and t.step_seconds == STEP for t in targets.values())
    assert all(
        t.service_label == "service" and t.lookback == timedelta(hours=2) for t in targets.values()
    )
    memory, latency = targets["memory"].breach, targets["latency_p99"].breach
    assert memory is not None and memory.threshold == MEMORY_LIMIT
    assert latency is not None and latency.threshold == LATENCY_SLO
    assert targets["cpu"].breach is None
    assert "seed 1" in source.describe()
    source.check()


def test_the_ingest_path_stores_the_shop_s_series(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    clock = FixedClock(NOW)
    shop = Shop(2)
    source = ShopSource(shop, clock, max_points=100)  # several chunks per window
    target = next(t for t in source.targets({"lookback": timedelta(hours=6)}) if t.name == "memory")
    for _ in range(2):
        with sessions() as session:
            summary = service.ingest_target(
                session,
                source=source,
                target=target,
                now=clock.now(),
                lag=timedelta(seconds=30),
                max_catchup=timedelta(hours=24),
            )
            session.commit()
        assert summary.status == "ok" and summary.series == 8
        clock.advance(timedelta(minutes=10))
    first = to_epoch(NOW - timedelta(seconds=30))
    first -= first % STEP  # the first cycle's newest step; the second added ten minutes
    expected = {
        s.key.label_dict["pod"]: s
        for s in shop.series("memory", first - 6 * 3_600 + STEP, first + 600)
    }
    with sessions() as session:
        rows = session.scalars(sa.select(SeriesRow).where(SeriesRow.target == "memory")).all()
        assert {r.labels["pod"] for r in rows} == set(expected)
        for row in rows:
            stored = service.read_samples(session, series_id=row.id)
            want = expected[row.labels["pod"]]
            assert [ts for ts, _ in stored] == want.timestamps.tolist()
            assert [v for _, v in stored] == pytest.approx(want.values.tolist())
    engine.dispose()
