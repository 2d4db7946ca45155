"""Storing samples on both databases (multi-row INSERT on SQLite, binary COPY on PostgreSQL):
every value back bit-exact, and nothing stored twice however the writes overlap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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


def orphans(sessions: sessionmaker[Session]) -> int:
    """Samples whose series row is gone (`samples` has no foreign key, migration 0014)."""
    with sessions() as session:
        lost = sa.select(SampleRow.series_id).where(
            ~sa.exists().where(SeriesRow.id == SampleRow.series_id)
        )
        return len(session.execute(lost).all())


def test_a_series_deleted_while_a_run_stores_it_is_created_again(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle-series prune of another process deletes a series after this run read its id:
    the run sees the row gone (its last_seen update finds nothing), creates the series again
    and attaches the samples to the new row; no sample is left without its series."""
    old = [series("a", 0, 0), series("b", 0, 0)]  # stored once, without samples: idle, empty
    store(sessions, old)
    read_ids = service._ids_for
    pruned = []

    def then_pruned(db_session: Session, digests: list[str]) -> dict[str, int]:
        found = read_ids(db_session, digests)
        if not pruned and found:
            pruned.append(sorted(found.values()))
            with sessions() as other:  # another process' prune, committed in between
                other.execute(sa.delete(SeriesRow).where(SeriesRow.id.in_(found.values())))
                other.commit()
        return found

    monkeypatch.setattr(service, "_ids_for", then_pruned)
    data = [series("a", 0, 30, seed=1), series("b", 0, 30, seed=2)]
    with sessions() as session:
        assert service.store(session, target=TARGET, series=data, seen_at=NOW) == 2
        session.commit()
    assert pruned  # not vacuous: the rows were deleted between the read and the update
    got = stored(sessions)
    assert got == {"a": points(data[0]), "b": points(data[1])}
    assert orphans(sessions) == 0


def test_the_prune_spares_a_series_a_run_stored_since_it_chose_it(
    sessions: sessionmaker[Session],
) -> None:
    """The prune chose an idle, empty series; before it deletes, an ingest run stores samples
    for it and commits: the delete checks again and keeps it (and its samples)."""
    from datetime import timedelta

    with sessions() as session:
        service.store(session, target=TARGET, series=[series("a", 0, 0)], seen_at=NOW)
        session.commit()

    class Racing:
        """A session whose choice of series is followed by another process' ingest run."""

        def __init__(self, session: Session) -> None:
            self.session = session

        def scalars(self, query: sa.Select[tuple[int]]) -> list[int]:
            chosen = list(self.session.scalars(query))
            later = NOW + timedelta(days=30)
            with sessions() as other:
                service.store(other, target=TARGET, series=[series("a", 0, 5)], seen_at=later)
                other.commit()
            return chosen

        def execute(self, statement: sa.Executable) -> sa.Result[tuple[int]]:
            return self.session.execute(statement)

    with sessions() as session:
        racing: Any = Racing(session)
        before = NOW + timedelta(days=1)
        assert service.prune_series(racing, before=before, limit=10) == 0
        session.commit()
    assert stored(sessions) == {"a": points(series("a", 0, 5))}
    assert orphans(sessions) == 0
