"""Tables owned by rca: incidents (grouped alarms with their root-cause report)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class IncidentRow(Base):
    """One connected burst of alarms; open until its alarms have been quiet for a while."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)  #: open | closed
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_alarm_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    services: Mapped[list[str]] = mapped_column(sa.JSON)
    series: Mapped[list[int]] = mapped_column(sa.JSON)
    symptom: Mapped[str] = mapped_column(sa.Text)
    top_suspect: Mapped[str | None] = mapped_column(sa.String(255))
    report: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    markdown: Mapped[str | None] = mapped_column(sa.Text)
    html: Mapped[str | None] = mapped_column(sa.Text)
