"""Several processes starting at once (serve, daemon, replicas) all migrate the same database."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from core.database import create_engine, head_revision

SCRIPT = (
    "import sys; from core.database import create_engine, migrate; "
    "migrate(create_engine(sys.argv[1]))"
)


def test_simultaneous_migrations_all_succeed(db_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, db_url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            == head_revision()
        )
    engine.dispose()
