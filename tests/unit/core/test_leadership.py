"""Leadership on SQLite: a file lock beside the database; a second process stands by."""

from __future__ import annotations

from pathlib import Path

from core.database import create_engine, migrate
from core.leadership import LeaderLock


def test_one_leads_a_sqlite_file_the_other_waits_and_takes_over_on_release(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    first, second = LeaderLock(engine), LeaderLock(engine)
    try:
        assert first.try_acquire() and first.holds()
        assert not second.try_acquire()  # same file: its lock is taken
        leader = second.current()
        assert leader is not None and (leader.host, leader.pid) == (first.host, first.pid)
        assert leader.checked_at >= leader.since

        first.release()
        assert second.current() is None  # let go: no record of a leader left behind
        assert second.try_acquire() and second.holds()
        assert not first.holds()
    finally:
        first.release()
        second.release()
        engine.dispose()
