"""Ingest run totals: what pruned ingest runs counted, per target and outcome, so the
`prognos_ingest_runs` / `prognos_ingest_points` counters never go down when runs are pruned.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_run_totals",
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("target", "status", name="pk_ingest_run_totals"),
    )


def downgrade() -> None:
    op.drop_table("ingest_run_totals")
