"""Database access: one engine per process, sessions from one factory, Alembic migrations at start.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the API and the scheduler
can share the file; PostgreSQL is used as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from core.clock import ensure_utc
from core.errors import DatabaseUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else ensure_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else ensure_utc(value)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def create_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, echo=echo, connect_args={"timeout": 30}, json_serializer=json_dumps
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship in the `postgres` extra.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return sa.create_engine(url, echo=echo, pool_pre_ping=True, json_serializer=json_dumps)


def json_dumps(value: Any) -> str:
    """The JSON columns' writer: the standard library's, except for a finite float64 numpy
    array (a forecast's quantile values, 10,000s of them each cycle), which orjson writes about
    5x faster than `json.dumps(array.tolist())`, with the same numbers (both write the shortest
    text that reads back as the same float)."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.float64 and np.isfinite(value).all():
            return orjson.dumps(
                np.ascontiguousarray(value), option=orjson.OPT_SERIALIZE_NUMPY
            ).decode()
        value = value.tolist()
    return json.dumps(value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that is rolled back if the block fails; the caller commits."""
    session = factory()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailableError(
            f"cannot reach the database at {safe_url(str(engine.url))}: {_short(exc)}"
        ) from None


def integrity_problem(engine: Engine) -> str | None:
    """SQLite's `PRAGMA quick_check` (None when it says ok); None on other databases, whose
    servers check their own files. Run at start: it reads the whole file."""
    if engine.dialect.name != "sqlite":
        return None
    try:
        with engine.connect() as conn:
            rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
    except SQLAlchemyError as exc:
        return f"the database file failed its integrity check: {_short(exc)}"
    if rows == ["ok"]:
        return None
    return f"the database file failed its integrity check: {'; '.join(rows[:3])}"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest). Safe to call at every start."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        # Several processes (serve, daemon, replicas) migrate at start: one at a time.
        with _migration_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot migrate the database at {safe_url(str(engine.url))}: {_short(exc)}"
        ) from None


_MIGRATION_LOCK_KEY = 0x70726F676E6F73  # "prognos"


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock beside a SQLite database (PostgreSQL uses an advisory lock instead)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _short(exc: BaseException) -> str:
    # The driver's first line says what failed; later lines may echo the SQL or parameters.
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def dialect_insert(session: Session, table: Any) -> Any:
    """INSERT with ON CONFLICT support on both SQLite and PostgreSQL."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def upsert(
    session: Session,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """INSERT `rows` (dicts with the same columns); a row whose `key` is stored already updates
    the columns `update` to its values, or is skipped if `update` is empty: the SQLite and
    PostgreSQL ON CONFLICT clauses, with the rows an executemany would leave: of the rows of
    one call with the same key, the last is written if `update` names every other column,
    the first if `update` is empty.

    On PostgreSQL the rows go as one array per column into one statement (`unnest`), not one
    statement per row: for the 10,000s of rows a forecast cycle writes, psycopg's per-row
    executemany costs more than the writes themselves."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        insert = dialect_insert(session, table)
        statement = (
            insert.on_conflict_do_update(
                index_elements=list(key), set_={c: insert.excluded[c] for c in update}
            )
            if update
            else insert.on_conflict_do_nothing(index_elements=list(key))
        )
        session.execute(statement, list(rows))
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    chosen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:  # one row per key: a statement may not update a row twice
        row_key = tuple(row[k] for k in key)
        if update or row_key not in chosen:
            chosen.pop(row_key, None)  # the last update goes where executemany would run it
            chosen[row_key] = row
    quote = dialect.identifier_preparer.quote
    arrays, casts = [], []
    for name in names:
        column = table.c[name]
        column_type = column.type
        values = [row[name] for row in chosen.values()]
        if isinstance(column_type, sa.JSON):
            null = None if column_type.none_as_null else "null"
            values = [null if v is None else json_dumps(v) for v in values]
            casts.append("JSON[]")
        else:
            process = column_type.bind_processor(dialect)
            if process is not None:
                values = [process(v) for v in values]
            casts.append(f"{column_type.compile(dialect=dialect)}[]")
        arrays.append(values)
    columns = ", ".join(quote(n) for n in names)
    unnest = ", ".join(f"%b::{cast}" for cast in casts)
    conflict = ", ".join(quote(k) for k in key)
    action = (
        "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update)
        if update
        else "DO NOTHING"
    )
    statement = (
        f"INSERT INTO {quote(table.name)} ({columns}) "  # noqa: S608 (names from the table)
        f"SELECT * FROM unnest({unnest}) ON CONFLICT ({conflict}) {action}"
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(statement, arrays)


def among(session: Session, column: Any, values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `column = ANY(array)`, one parameter however many the
    values (what PostgreSQL makes of an IN list anyway): an IN list of the 10,000 ids of a
    cycle's batch is 10,000 placeholders for SQLAlchemy to render and the driver to parse."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.literal(list(values), ARRAY(column.type)))
    return column.in_(values)


def fetch_tuples(db_session: Session, query: Any) -> list[tuple[Any, ...]]:
    """Run a SELECT and return the driver's plain tuples: for reads of 100,000s of rows, where
    building SQLAlchemy Row objects costs more than the query itself."""
    connection = db_session.connection()
    compiled = query.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    order = compiled.positiontup
    values = compiled.params  # a property that builds every parameter: read it once
    params = tuple(values[k] for k in order) if order else values
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()
