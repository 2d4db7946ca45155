"""Rows written straight to the tables, for tests that need a table's state, not a flow."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from remediation.tables import ProposalRow


def proposal_row(evidence: dict[str, Any], *, at: datetime) -> ProposalRow:
    """A finished proposal carrying `evidence` (what retention must not take from under it)."""
    return ProposalRow(
        playbook="restart",
        playbook_version=1,
        params={},
        params_digest="0" * 64,
        target="a",
        status="succeeded",
        proposed_by="daemon",
        evidence=evidence,
        created_at=at,
        expires_at=at,
        quorum=1,
        dry_run=False,
    )
