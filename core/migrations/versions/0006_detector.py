"""One detector: alarms and their evidence on anomaly scores, per-series detector state, and
operators' feedback on alarms (models).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anomaly_scores") as batch:
        batch.add_column(
            sa.Column("alarm", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
    op.create_table(
        "detector_states",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("config", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_score", sa.Float(precision=53), nullable=False),
        sa.Column("last_alarm", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name="fk_detector_states_series_id_series",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", name="pk_detector_states"),
    )
    op.create_table(
        "anomaly_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name="fk_anomaly_feedback_series_id_series",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_anomaly_feedback"),
    )
    op.create_index("ix_anomaly_feedback_series_id", "anomaly_feedback", ["series_id"])


def downgrade() -> None:
    op.drop_index("ix_anomaly_feedback_series_id", table_name="anomaly_feedback")
    op.drop_table("anomaly_feedback")
    op.drop_table("detector_states")
    with op.batch_alter_table("anomaly_scores") as batch:
        batch.drop_column("evidence")
        batch.drop_column("alarm")
