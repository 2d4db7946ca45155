"""Models: registry, latest forecasts, anomaly scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
F53 = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("forecaster", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("activated_at", TZ, nullable=True),
        sa.Column("train_start", TZ, nullable=False),
        sa.Column("train_end", TZ, nullable=False),
        sa.Column("series_count", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("family", "version", name="uq_models_family_version"),
    )
    op.create_index("ix_models_family", "models", ["family"])
    op.create_table(
        "forecasts",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("made_at", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(96), nullable=False),
        sa.Column("quantiles", sa.JSON(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name="fk_forecasts_series_id_series", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("series_id", name="pk_forecasts"),
    )
    op.create_table(
        "anomaly_scores",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("z", F53, nullable=False),
        sa.Column("magnitude", F53, nullable=False),
        sa.Column("score", F53, nullable=True),
        sa.Column("model", sa.String(96), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name="fk_anomaly_scores_series_id_series",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", "ts", name="pk_anomaly_scores"),
    )


def downgrade() -> None:
    op.drop_table("anomaly_scores")
    op.drop_table("forecasts")
    op.drop_index("ix_models_family", table_name="models")
    op.drop_table("models")
