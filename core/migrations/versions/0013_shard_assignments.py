"""Shard assignments of `engine: ray`: the worker owning each virtual shard.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_assignments",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("worker", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("shard", name="pk_shard_assignments"),
    )


def downgrade() -> None:
    op.drop_table("shard_assignments")
