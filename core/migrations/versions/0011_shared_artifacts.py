"""Model artifacts shared between hosts (`model_artifacts`: a version's files, for
`models.artifact_store: database`) and who leads the scheduler (`leaders`: host, pid, since).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config_json", sa.LargeBinary(), nullable=False),
        sa.Column("weights_pt", sa.LargeBinary(), nullable=True),
        sa.Column("metadata_json", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("family", "version", name="pk_model_artifacts"),
    )
    op.create_table(
        "leaders",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("since", TZ, nullable=False),
        sa.Column("checked_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leaders"),
    )


def downgrade() -> None:
    op.drop_table("leaders")
    op.drop_table("model_artifacts")
