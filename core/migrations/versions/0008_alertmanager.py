"""Alertmanager both ways: the alerts Prognos posts (re-sent, then resolved) and the alerts its
webhook delivered (repeats ignored by fingerprint and start) (rca.alertmanager).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alertmanager_sent",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("ends_at", TZ, nullable=True),
        sa.Column("sent_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_alertmanager_sent"),
    )
    op.create_table(
        "alertmanager_received",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("alertname", sa.String(255), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("seen_at", TZ, nullable=False),
        sa.Column("ends_at", TZ, nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alertmanager_received"),
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_alertmanager_received_alert"),
    )
    op.create_index(
        "ix_alertmanager_received_status", "alertmanager_received", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_alertmanager_received_status", table_name="alertmanager_received")
    op.drop_table("alertmanager_received")
    op.drop_table("alertmanager_sent")
