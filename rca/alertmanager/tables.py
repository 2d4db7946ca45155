"""Tables owned by rca.alertmanager: what was posted to Alertmanager (so that it is re-sent and
resolved), and the alerts its webhook delivered (so that a repeat is ignored, even after a
restart)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class SentAlertRow(Base):
    """One alert Prognos posts: firing while its breach warning or incident lasts, then
    resolving until every Alertmanager accepted its `endsAt` (the row then goes)."""

    __tablename__ = "alertmanager_sent"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  #: breach:<id>, incident:<id>
    status: Mapped[str] = mapped_column(sa.String(16))  #: firing | resolved
    labels: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    annotations: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    generator_url: Mapped[str] = mapped_column(sa.Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  #: set once resolved
    #: when every Alertmanager last accepted it (None: not yet, or changed since)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReceivedAlertRow(Base):
    """One alert from Alertmanager's webhook, by fingerprint and start: a repeat of it (HA
    pairs both send, every repeat_interval resends) changes nothing but `seen_at`."""

    __tablename__ = "alertmanager_received"
    __table_args__ = (
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_alertmanager_received_alert"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)  #: firing | resolved
    alertname: Mapped[str] = mapped_column(sa.String(255))
    service: Mapped[str] = mapped_column(sa.String(255))
    summary: Mapped[str] = mapped_column(sa.Text)
    labels: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)  #: the latest delivery, repeats too
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    incident_id: Mapped[int | None] = mapped_column(sa.Integer)
