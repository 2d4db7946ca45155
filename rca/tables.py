"""Tables owned by rca."""

from __future__ import annotations

from core.database import Base  # noqa: F401
