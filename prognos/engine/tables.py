"""The shard assignment of `engine: ray`: which worker owns each virtual shard, written by the
daemon's leader when it starts its workers (or changes their number) and read every cycle."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class ShardAssignmentRow(Base):
    __tablename__ = "shard_assignments"

    shard: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    worker: Mapped[int] = mapped_column(sa.Integer)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
