"""A bounded history of forecasts: per series, what each cycle forecast for the step about
15 minutes ahead (p10, p50, p90), for the page's chart (models).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forecast_history",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("target_ts", sa.BigInteger(), nullable=False),
        sa.Column("made_at", sa.BigInteger(), nullable=False),
        sa.Column("p10", sa.Float(precision=53), nullable=False),
        sa.Column("p50", sa.Float(precision=53), nullable=False),
        sa.Column("p90", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name="fk_forecast_history_series_id_series",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", "target_ts", name="pk_forecast_history"),
    )


def downgrade() -> None:
    op.drop_table("forecast_history")
