"""Samples without a foreign key to series: PostgreSQL checked it row by row in every COPY.

Its per-row check made a binary COPY into `samples` 5x slower on PostgreSQL (7.4 s instead of
1.3-1.5 s for 1.44 M rows, bench/ingest.py's data). What it guarded is kept by the code: ingest
writes a run's series before their samples in the same transaction and re-creates a series the
idle-series prune deleted meanwhile; the prune deletes only series with no sample and re-checks
that in its DELETE (ingest/service.py). SQLite cannot drop a constraint in place: the table is
rebuilt (one copy of its rows, WITHOUT ROWID kept).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FK = "fk_samples_series_id_series"


def _rebuild_sqlite(foreign_key: str) -> None:
    op.execute(
        "CREATE TABLE samples_rebuilt (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
        f"value FLOAT NOT NULL, CONSTRAINT pk_samples PRIMARY KEY (series_id, ts){foreign_key}) "
        "WITHOUT ROWID"
    )
    op.execute("INSERT INTO samples_rebuilt SELECT series_id, ts, value FROM samples")
    op.execute("DROP TABLE samples")
    op.execute("ALTER TABLE samples_rebuilt RENAME TO samples")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("")
    else:
        op.drop_constraint(FK, "samples", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(
            f", CONSTRAINT {FK} FOREIGN KEY(series_id) REFERENCES series (id) ON DELETE CASCADE"
        )
    else:
        op.create_foreign_key(FK, "samples", "series", ["series_id"], ["id"], ondelete="CASCADE")
