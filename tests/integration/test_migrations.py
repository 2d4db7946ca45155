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
    (fk,) = inspector.get_foreign_keys("samples")
    assert fk["referred_table"] == "series"
    assert (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
