"""Storing samples on both databases (multi-row INSERT on SQLite, binary COPY on PostgreSQL):
every value back bit-exact, and nothing stored twice however the writes overlap."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ingest import service
from ingest.domain import SeriesData, SeriesKey
from ingest.tables import SampleRow, SeriesRow
from tests.unit.fakes import make_target

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TARGET = make_target("mem")
T0 = 1_767_571_200


def series(pod: str, start: int, count: int, seed: int = 0) -> SeriesData:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, count) * 10.0 ** rng.integers(-12, 12, count)
    return SeriesData(
        SeriesKey.of("mem", {"service": "cart", "pod": pod}),
        T0 + 60 * np.arange(start, start + count, dtype=np.int64),
        values,
    )


def stored(sessions: sessionmaker[Session]) -> dict[str, list[tuple[int, float]]]:
    with sessions() as session:
        rows = session.scalars(sa.select(SeriesRow)).all()
        return {row.labels["pod"]: service.read_samples(session, series_id=row.id) for row in rows}


def points(data: SeriesData) -> list[tuple[int, float]]:
    return list(zip(data.timestamps.tolist(), data.values.tolist(), strict=True))


def store(sessions: sessionmaker[Session], *batches: list[SeriesData]) -> None:
    """Each batch stored in turn, all in one transaction."""
    with sessions() as session:
        for batch in batches:
            service.store(session, target=TARGET, series=batch, seen_at=NOW)
        session.commit()


def test_every_value_comes_back_bit_exact(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small statements and batches, so that full ones, a remainder and several batches occur.
    monkeypatch.setattr(service, "_ROWS_PER_STATEMENT", 7)
    monkeypatch.setattr(service, "_ROWS_PER_BATCH", 50)
    data = [series("a", 0, 120, seed=1), series("b", 3, 1, seed=2), series("c", 0, 0)]
    store(sessions, data)
    got = stored(sessions)
    assert set(got) == {"a", "b", "c"} and got["c"] == []
    for item in data[:2]:
        pod = item.key.label_dict["pod"]
        assert [t for t, _ in got[pod]] == item.timestamps.tolist()
        assert np.array([v for _, v in got[pod]]).view(np.uint64).tolist() == (
            item.values.view(np.uint64).tolist()
        )


def test_overlapping_writes_store_each_sample_once(sessions: sessionmaker[Session]) -> None:
    first = [series("a", 0, 50, seed=1), series("b", 0, 10, seed=2)]
    store(sessions, first)
    # Again, overlapping and extending, twice in one transaction: only the new steps are added
    # and the stored values are kept.
    store(sessions, [series("a", 40, 20, seed=3)], [series("a", 40, 20, seed=3)], first)
    got = stored(sessions)
    later = series("a", 40, 20, seed=3)
    assert got["a"] == points(first[0]) + points(later)[10:]
    assert got["b"] == points(first[1])
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SampleRow)) == 70
