"""The hand-written migrations build exactly the tables the code declares, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

import api.tables  # noqa: F401  (registers its tables on Base.metadata)
import core.leadership
import core.selfmetrics.tables  # noqa: F401
import ingest.tables  # noqa: F401
import models.tables  # noqa: F401
import rca.alertmanager.tables
import rca.tables  # noqa: F401
import remediation.tables  # noqa: F401
from core.database import Base, create_engine, downgrade, head_revision, migrate

pytestmark = pytest.mark.timeout(60)


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def table_names(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_migrations_match_the_declared_tables_and_reverse_cleanly(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrate(engine)
        assert table_names(engine) == {*Base.metadata.tables, "alembic_version"}
        assert schema_differences(engine) == []

        migrate(engine)  # at every start: a no-op on a current schema
        assert schema_differences(engine) == []

        downgrade(engine, "base")
        assert table_names(engine) == {"alembic_version"}

        migrate(engine)
        assert table_names(engine) == {*Base.metadata.tables, "alembic_version"}
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == head_revision()
    finally:
        engine.dispose()


def test_migrated_schema_enforces_its_constraints(engine: Engine) -> None:
    """The keys that keep ingest idempotent exist in the database, not only in the models."""
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("samples")["constrained_columns"] == ["series_id", "ts"]
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("series")}
    assert ("key",) in uniques
    # No foreign key on samples (migration 0014: it made PostgreSQL's COPY 5x slower); the
    # other tables that name a series keep theirs.
    assert inspector.get_foreign_keys("samples") == []
    (fk,) = inspector.get_foreign_keys("forecasts")
    assert fk["referred_table"] == "series"
    assert (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"


def test_dropping_the_samples_key_keeps_every_sample_both_ways(db_url: str) -> None:
    """Migration 0014 rebuilds `samples` on SQLite: the rows stay, and so does WITHOUT ROWID;
    its downgrade puts the key back, rows kept."""
    engine = create_engine(db_url)
    insert_series = sa.text(
        "INSERT INTO series (id, target, key, labels, first_seen, last_seen) "
        "VALUES (1, 't', 'k', '{}', :at, :at)"
    )
    insert_samples = sa.text("INSERT INTO samples (series_id, ts, value) VALUES (1, :ts, :v)")
    count = sa.text("SELECT count(*), sum(value) FROM samples")
    try:
        migrate(engine, "0013")
        with engine.begin() as connection:
            connection.execute(insert_series, {"at": "2026-11-30 00:00:00+00:00"})
            connection.execute(insert_samples, [{"ts": 60 * i, "v": i / 2} for i in range(100)])
        migrate(engine)
        with engine.connect() as connection:
            assert tuple(connection.execute(count).one()) == (100, 2475.0)
        assert sa.inspect(engine).get_foreign_keys("samples") == []
        assert schema_differences(engine) == []
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                ddl = connection.execute(
                    sa.text("SELECT sql FROM sqlite_master WHERE name = 'samples'")
                ).scalar_one()
            assert "WITHOUT ROWID" in ddl
        downgrade(engine, "0013")
        with engine.connect() as connection:
            assert tuple(connection.execute(count).one()) == (100, 2475.0)
        (fk,) = sa.inspect(engine).get_foreign_keys("samples")
        assert fk["referred_table"] == "series"
    finally:
        engine.dispose()
