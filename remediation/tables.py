"""Tables owned by remediation."""

from __future__ import annotations

from core.database import Base  # noqa: F401
