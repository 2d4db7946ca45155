"""Self-metrics the service exposes on /metrics: the daemon's cycle stages (run totals and
duration buckets), OTLP intake totals, the newest result of the daemon's checks (audit chain,
Vault) and high-water marks that keep counters from going down when rows are pruned.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cycle_stages",
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(precision=53), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("last_success_at", TZ, nullable=True),
        sa.Column("last_run_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("stage", name="pk_cycle_stages"),
    )
    op.create_table(
        "cycle_stage_buckets",
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("le", sa.Float(precision=53), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stage", "le", name="pk_cycle_stage_buckets"),
    )
    op.create_table(
        "otlp_totals",
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("spans", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", name="pk_otlp_totals"),
    )
    op.create_table(
        "service_checks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("checked_at", TZ, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_service_checks"),
    )
    op.create_table(
        "high_water_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_high_water_marks"),
    )


def downgrade() -> None:
    for table in (
        "high_water_marks",
        "service_checks",
        "otlp_totals",
        "cycle_stage_buckets",
        "cycle_stages",
    ):
        op.drop_table(table)
