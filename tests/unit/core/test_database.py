"""The database layer: SQLite in WAL mode, passwords masked, a clear error when it is down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.database import (
    check_database,
    create_engine,
    migrate,
    safe_url,
    session_scope,
)
from core.errors import DatabaseUnavailableError
from ingest.tables import IngestRunRow
from tests.support.servers import free_port

PASSWORD = "s3cr3t-Pa55"


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
