"""The database layer: SQLite in WAL mode, passwords masked, a clear error when it is down."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.database import (
    among,
    check_database,
    create_engine,
    fetch_tuples,
    json_dumps,
    migrate,
    safe_url,
    session_scope,
    upsert,
)
from core.errors import DatabaseUnavailableError
from ingest.tables import IngestRunRow, SeriesRow
from models.tables import AnomalyScoreRow, DetectorStateRow, ForecastRow
from tests.support.servers import free_port

PASSWORD = "s3cr3t-Pa55"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'prognos.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 30000
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert (tmp_path / "nested" / "dir" / "prognos.db").is_file()  # parent created
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://prognos:{PASSWORD}@db.example.com:5432/prognos",
        f"postgresql+psycopg://prognos:{PASSWORD}@db/prognos?sslmode=require",
    ],
)
def test_safe_url_masks_the_password(url: str) -> None:
    masked = safe_url(url)
    assert PASSWORD not in masked
    assert "prognos:***@" in masked
    assert "db" in masked


def test_safe_url_keeps_urls_without_password() -> None:
    assert safe_url("sqlite:///var/prognos.db") == "sqlite:///var/prognos.db"


def test_safe_url_does_not_echo_an_unparseable_url() -> None:
    assert PASSWORD not in safe_url(f"not a url {PASSWORD}")


def test_unreachable_postgres_is_reported_without_the_password() -> None:
    url = f"postgresql://prognos:{PASSWORD}@127.0.0.1:{free_port()}/prognos"
    engine = create_engine(url)
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            check_database(engine)
        with pytest.raises(DatabaseUnavailableError) as migrating:
            migrate(engine)
    finally:
        engine.dispose()
    for exc in (info.value, migrating.value):
        assert "127.0.0.1" in exc.message
        assert PASSWORD not in exc.message
        assert PASSWORD not in str(exc)
        assert exc.__cause__ is None and exc.__suppress_context__  # no chained driver text
    assert info.value.code == "database_unavailable"


def test_check_database_passes_on_a_migrated_database(engine: Engine) -> None:
    check_database(engine)


def test_datetimes_come_back_aware_in_utc(sessions: sessionmaker[Session]) -> None:
    """SQLite hands back naive values; the column type makes both backends return UTC."""
    local = datetime(2026, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    with sessions() as session:
        session.add(
            IngestRunRow(
                target="cpu",
                kind="cycle",
                status="ok",
                started_at=local,
                finished_at=local,
                series_count=0,
                new_series=0,
                points=0,
                dropped_non_finite=0,
            )
        )
        session.commit()
    with sessions() as session:
        row = session.scalars(sa.select(IngestRunRow)).one()
        assert row.started_at == datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
        assert row.started_at.utcoffset() == timedelta(0)


def test_session_scope_rolls_back_on_error(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), session_scope(sessions) as session:
        session.add(
            IngestRunRow(
                target="cpu",
                kind="cycle",
                status="ok",
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
                series_count=0,
                new_series=0,
                points=0,
                dropped_non_finite=0,
            )
        )
        session.flush()
        raise RuntimeError("boom")
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(IngestRunRow)) == 0


def test_migrate_is_safe_to_run_again(engine: Engine) -> None:
    migrate(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"series", "samples", "ingest_watermarks", "ingest_runs", "api_tokens"} <= tables


def test_json_dumps_writes_a_float_array_as_the_standard_library_writes_its_list() -> None:
    """A forecast's values go to the JSON column as a float64 array (orjson): the text may
    differ (no spaces, `1e-7` for `1e-07`), the numbers read back must not."""
    rng = np.random.default_rng(7)
    arrays = [
        rng.normal(size=(30, 9)).round(9),
        (rng.normal(size=(4, 3)) * 10.0 ** rng.integers(-12, 12, size=(4, 3))),
        np.array([[0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]]),
        rng.normal(size=(6, 4)).astype(np.float32).round(9).astype(np.float64),
        rng.normal(size=(8, 6))[:, ::2],  # not contiguous
    ]
    for array in arrays:
        written = json_dumps(array)
        back = json.loads(written)
        assert back == array.tolist()
        assert [[math.copysign(1, v) for v in row] for row in back] == [
            [math.copysign(1, v) for v in row] for row in array.tolist()
        ]


def test_json_dumps_leaves_everything_else_to_the_standard_library() -> None:
    # Non-finite values: orjson would write null; the standard library's NaN reads back as NaN.
    with_gap = np.array([1.5, np.nan, np.inf])
    assert json_dumps(with_gap) == json.dumps([1.5, math.nan, math.inf])
    narrow = np.array([0.1], dtype=np.float32)  # widened by tolist, as before
    assert json_dumps(narrow) == json.dumps(narrow.tolist())
    for value in ({"a": [1, 2.5, None], "b": "ü"}, [0.1, 0.2], "text", 3):
        assert json_dumps(value) == json.dumps(value)


def test_forecast_values_stored_as_an_array_read_back_equal(
    sessions: sessionmaker[Session],
) -> None:
    values = np.random.default_rng(3).normal(size=(30, 9)).astype(np.float32).round(9)
    with session_scope(sessions) as session:
        session.add(
            SeriesRow(
                id=1,
                target="t",
                key="k" * 64,
                labels={},
                service=None,
                first_seen=NOW,
                last_seen=NOW,
            )
        )
        session.flush()
        session.execute(
            sa.insert(ForecastRow),
            [
                {
                    "series_id": 1,
                    "made_at": 60,
                    "step": 60,
                    "model": "m",
                    "quantiles": [0.1, 0.5, 0.9] * 3,
                    "values": values.astype(np.float64),
                    "created_at": NOW,
                }
            ],
        )
        session.commit()
    with session_scope(sessions) as session:
        row = session.get(ForecastRow, 1)
        assert row is not None
        assert row.values == values.tolist()  # each float32 value widened exactly


def test_upsert_inserts_updates_and_skips_as_on_conflict_does(
    sessions: sessionmaker[Session],
) -> None:
    """One statement on PostgreSQL (column arrays), executemany on SQLite: the same rows."""
    series = [
        {
            "id": i,
            "target": "t",
            "key": f"{i:064d}",
            "labels": {"i": str(i)},
            "service": None,
            "first_seen": NOW,
            "last_seen": NOW,
        }
        for i in (1, 2, 3)
    ]
    state = {"config": "c", "updated_at": NOW, "last_score": 0.5, "last_alarm": False}
    later = NOW + timedelta(minutes=1)
    with session_scope(sessions) as session:
        upsert(session, SeriesRow.__table__, series, key=("id",))
        upsert(session, SeriesRow.__table__, [], key=("id",))  # nothing to do
        upsert(
            session,
            DetectorStateRow.__table__,
            [
                {"series_id": 1, "state": "a", "last_ts": 60, **state},
                {"series_id": 2, "state": "b", "last_ts": 60, **state},
            ],
            key=("series_id",),
            update=("state", "last_ts", "updated_at"),
        )
        session.commit()
    with session_scope(sessions) as session:
        upsert(  # stored key 1 updated, key 3 new and given twice: the last one is written
            session,
            DetectorStateRow.__table__,
            [
                {"series_id": 1, "state": "a2", "last_ts": 120, **state, "updated_at": later},
                {"series_id": 3, "state": "c1", "last_ts": 60, **state},
                {"series_id": 3, "state": "c2", "last_ts": 120, **state, "last_score": 0.75},
            ],
            key=("series_id",),
            update=("state", "config", "updated_at", "last_ts", "last_score", "last_alarm"),
        )
        upsert(  # do nothing: stored (1, 60) kept, of the two new (2, 60) the first
            session,
            AnomalyScoreRow.__table__,
            [
                {
                    "series_id": 1,
                    "ts": 60,
                    "z": 1.0,
                    "magnitude": 1.0,
                    "score": None,
                    "model": "m",
                    "alarm": False,
                    "evidence": None,
                },
                {
                    "series_id": 2,
                    "ts": 60,
                    "z": 2.0,
                    "magnitude": 2.0,
                    "score": 0.25,
                    "model": "m",
                    "alarm": True,
                    "evidence": {"rule": "spike"},
                },
                {
                    "series_id": 2,
                    "ts": 60,
                    "z": 9.0,
                    "magnitude": 9.0,
                    "score": 0.9,
                    "model": "m",
                    "alarm": False,
                    "evidence": None,
                },
            ],
            key=("series_id", "ts"),
        )
        session.commit()
    with session_scope(sessions) as session:
        upsert(
            session,
            AnomalyScoreRow.__table__,
            [
                {
                    "series_id": 1,
                    "ts": 60,
                    "z": 7.0,
                    "magnitude": 7.0,
                    "score": 1.0,
                    "model": "x",
                    "alarm": True,
                    "evidence": None,
                }
            ],
            key=("series_id", "ts"),
        )
        session.commit()
        states = {
            r.series_id: (r.state, r.last_ts, r.updated_at, r.last_score)
            for r in session.scalars(sa.select(DetectorStateRow))
        }
        scores = {
            (r.series_id, r.ts): (r.z, r.score, r.alarm, r.evidence)
            for r in session.scalars(sa.select(AnomalyScoreRow))
        }
        labels = {r.id: r.labels for r in session.scalars(sa.select(SeriesRow))}
    assert states[1] == ("a2", 120, later, 0.5)
    assert states[2] == ("b", 60, NOW, 0.5)
    assert states[3] == ("c2", 120, NOW, 0.75)
    assert scores == {
        (1, 60): (1.0, None, False, None),
        (2, 60): (2.0, 0.25, True, {"rule": "spike"}),
    }
    assert labels == {1: {"i": "1"}, 2: {"i": "2"}, 3: {"i": "3"}}


def test_among_selects_the_rows_an_in_list_selects(sessions: sessionmaker[Session]) -> None:
    series = [
        {
            "id": i,
            "target": "t",
            "key": f"{i:064d}",
            "labels": {},
            "service": None,
            "first_seen": NOW,
            "last_seen": NOW,
        }
        for i in range(1, 6)
    ]
    with session_scope(sessions) as session:
        upsert(session, SeriesRow.__table__, series, key=("id",))
        session.commit()
        for ids in ([2, 4, 99], [], list(range(1, 6)), (3,)):
            query = sa.select(SeriesRow.id).where(among(session, SeriesRow.id, ids))
            want = {i for i in ids if 1 <= i <= 5}
            assert {r[0] for r in fetch_tuples(session, query)} == want
            assert set(session.scalars(query)) == want
