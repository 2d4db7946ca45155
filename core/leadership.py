"""Leadership among processes sharing one database: a PostgreSQL session-level advisory lock
(a file lock beside a SQLite file) held on a dedicated connection, and the row that says who
holds it. The lock, not the row, decides: the row is a record for people and /metrics."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from core.clock import Clock, SystemClock
from core.database import Base, UTCDateTime, _short
from core.errors import ConfigError

log = logging.getLogger(__name__)

#: The advisory lock key of the scheduler's leadership ("prognosd"; the migrations use another).
LEADER_LOCK_KEY = 0x70726F676E6F7364


class LeaderRow(Base):
    """Who holds a leadership now: written by the holder when it takes the lead, its
    `checked_at` renewed each time it confirms the lock, removed when it lets go. A holder
    killed outright leaves its row until the next one takes over: a `checked_at` older than a
    few checks means nobody has confirmed the lead since."""

    __tablename__ = "leaders"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class Leader:
    name: str
    host: str
    pid: int
    since: datetime
    checked_at: datetime

    def describe(self) -> str:
        return f"{self.host} (pid {self.pid}) since {self.since:%Y-%m-%d %H:%M:%S} UTC"


def current_leader(db_session: Session, name: str = "daemon") -> Leader | None:
    """The recorded holder of `name` (None: nobody has taken it, or the last one let go)."""
    row = db_session.get(LeaderRow, name)
    if row is None:
        return None
    return Leader(row.name, row.host, row.pid, row.since, row.checked_at)


class LeaderLock:
    """One process's claim to lead: `try_acquire()` without waiting, `holds()` to confirm before
    acting as leader (False once the lock's connection is lost: the lock went with it),
    `release()` on exit. On PostgreSQL the lock lives as long as its connection, so a leader
    killed outright loses it as soon as the server sees the connection close; the connection
    asks the server to probe it (TCP keepalives) every `probe`, so a vanished host's lock is
    freed too. On SQLite the lock is a file lock beside the database, freed by the kernel when
    its holder dies. Thread-safe: the scheduler's jobs and the leadership loop share it."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        name: str = "daemon",
        probe: timedelta = timedelta(seconds=10),
        key: int = LEADER_LOCK_KEY,
    ) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()  # wall time: the record is for people
        self.name = name
        self.key = key
        self.probe = max(1, int(probe.total_seconds()))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._mutex = threading.Lock()
        self._connection: Connection | None = None
        self._file: IO[bytes] | None = None
        self._lock_engine: Engine | None = None
        self._held = False
        self._problem: str | None = None  #: the last failure to take the lock, logged once
        self.kind = engine.dialect.name
        if self.kind not in ("postgresql", "sqlite"):
            raise ConfigError(
                f"leadership needs PostgreSQL or SQLite, not {self.kind}: set database.url"
            )

    @property
    def held(self) -> bool:
        """Whether this process took the lock and has not lost or released it (no check)."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free; record this process as the holder. Never waits."""
        with self._mutex:
            if self._held:
                return True
            try:
                taken = self._take_postgres() if self.kind == "postgresql" else self._take_file()
                if taken:
                    self._held = True
                    self._record()
            except (SQLAlchemyError, OSError) as exc:
                problem = f"cannot take the {self.name} lead: {_describe(exc)}"
                if problem != self._problem:  # once, not at every retry
                    log.warning("%s; trying again", problem)
                self._problem = problem
                self._drop()
                return False
            self._problem = None
            return taken

    def holds(self) -> bool:
        """Confirm the lock is still ours (its connection answers) and renew the record."""
        with self._mutex:
            if not self._held:
                return False
            try:
                self._touch()
            except SQLAlchemyError as exc:
                log.error("lost the %s lead: %s", self.name, _describe(exc))
                self._drop()
                return False
            return True

    def release(self) -> None:
        """Let go: remove the record, unlock, close the connection. Safe to call twice."""
        with self._mutex:
            if self._held:
                try:
                    self._forget()
                    if self._connection is not None:
                        self._connection.execute(
                            sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                        )
                except SQLAlchemyError as exc:  # closing the connection frees the lock anyway
                    log.warning("releasing the %s lead: %s", self.name, _describe(exc))
            self._drop()

    def current(self) -> Leader | None:
        """The recorded holder, read on the service's own connections (None when unreadable)."""
        try:
            with Session(self.engine) as session:
                return current_leader(session, self.name)
        except SQLAlchemyError:
            return None

    # ------------------------------------------------------------------------------ backends

    def _take_postgres(self) -> bool:
        if self._connection is None:
            if self._lock_engine is None:
                # Its own connection, outside the pool: the lock lives and dies with it. The
                # client gives up on a silent server after `probe` x 3 (tcp_user_timeout).
                self._lock_engine = sa.create_engine(
                    self.engine.url,
                    poolclass=NullPool,
                    connect_args={
                        "keepalives": 1,
                        "keepalives_idle": self.probe,
                        "keepalives_interval": self.probe,
                        "keepalives_count": 3,
                        "tcp_user_timeout": self.probe * 3 * 1000,
                        "connect_timeout": max(2, self.probe),
                        "application_name": f"prognos {self.name} lock",
                    },
                )
            self._connection = self._lock_engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            # The server probes the client the same way, so a vanished host's lock is freed.
            for setting in ("tcp_keepalives_idle", "tcp_keepalives_interval"):
                self._connection.execute(sa.text(f"SET {setting} = {self.probe}"))
            self._connection.execute(sa.text("SET tcp_keepalives_count = 3"))
        taken = self._connection.execute(
            sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
        ).scalar_one()
        self._connection.commit()
        return bool(taken)

    def _take_file(self) -> bool:
        database = self.engine.url.database
        if not database or database == ":memory:":
            return True  # a private database: nobody else can lead it
        import fcntl

        if self._file is None:
            self._file = open(f"{database}.{self.name}-lock", "a+b")  # noqa: SIM115
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _record(self) -> None:
        now = self.clock.now()
        self._write(
            lambda conn: (
                conn.execute(sa.delete(LeaderRow).where(LeaderRow.name == self.name)),
                conn.execute(
                    sa.insert(LeaderRow).values(
                        name=self.name, host=self.host, pid=self.pid, since=now, checked_at=now
                    )
                ),
            )
        )

    def _touch(self) -> None:
        now = self.clock.now()
        self._write(
            lambda conn: conn.execute(
                sa.update(LeaderRow)
                .where(LeaderRow.name == self.name, LeaderRow.pid == self.pid)
                .values(checked_at=now)
            )
        )

    def _forget(self) -> None:
        self._write(
            lambda conn: conn.execute(
                sa.delete(LeaderRow).where(
                    LeaderRow.name == self.name,
                    LeaderRow.host == self.host,
                    LeaderRow.pid == self.pid,
                )
            )
        )

    def _write(self, statements: Any) -> None:
        """On PostgreSQL through the lock's own connection, so a write that succeeds also
        proves the lock is still held; on SQLite through the service's engine."""
        if self._connection is not None:
            statements(self._connection)
            self._connection.commit()  # autocommit already: this ends SQLAlchemy's autobegin
            return
        with self.engine.begin() as connection:
            statements(connection)

    def _drop(self) -> None:
        self._held = False
        if self._connection is not None:
            try:
                self._connection.invalidate()  # never back into a pool: NullPool closes it
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the file lock
            self._file = None


def _describe(exc: BaseException) -> str:
    return _short(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
