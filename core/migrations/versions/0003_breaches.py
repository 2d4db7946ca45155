"""Predicted breaches (models).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breaches",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("made_at", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.Float(precision=53), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("probability", sa.Float(precision=53), nullable=False),
        sa.Column("eta", sa.BigInteger(), nullable=True),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("warning", sa.Boolean(), nullable=False),
        sa.Column("warning_since", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(96), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name="fk_breaches_series_id_series", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("series_id", name="pk_breaches"),
    )


def downgrade() -> None:
    op.drop_table("breaches")
