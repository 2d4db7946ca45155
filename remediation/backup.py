"""Backup and restore of the database together with the audit chain's anchor.

A backup is one tar file: a consistent copy of the database (SQLite's online backup API, or
`pg_dump --format=custom` from an exported snapshot) and `manifest.json` with the schema
revision, the audit chain's head inside that copy and the anchor at backup time. A restore
replaces the whole database in one transaction (SQLite's backup API into the file, or `psql
--single-transaction` fed by `pg_restore`), so a failure leaves the old database as it was. The
anchor is never moved by a restore: restoring an older backup leaves the chain behind its anchor,
which `audit verify` reports until an admin re-anchors (`audit.reanchor`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session

from core.database import MIGRATIONS_DIR, create_engine, migrate, safe_url
from core.errors import ErrorKind
from remediation.audit import Checkpoint, VerifyResult, read_checkpoint, verify, write_checkpoint
from remediation.domain import RemediationError
from remediation.tables import AuditRow

FORMAT = "prognos-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite"
POSTGRES_MEMBER = "database.pgdump"
_SQLITE_PAGES_PER_STEP = 1024
_CHUNK = 1 << 20
_PG_TOOL_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)

# (what is being done, done so far, total) — for a progress bar; totals are pages or tables.
Progress = Callable[[str, int, int], None]


class BackupError(RemediationError):
    """A backup or restore could not be made; nothing was changed."""

    code = "backup_failed"
    kind = ErrorKind.INVALID


class BackupToolMissingError(BackupError):
    code = "backup_tool_missing"
    kind = ErrorKind.UNAVAILABLE


class DatabaseNotEmptyError(BackupError):
    code = "database_not_empty"
    kind = ErrorKind.CONFLICT


@dataclass(frozen=True)
class Manifest:
    created_at: datetime
    dialect: str  # sqlite | postgresql
    member: str  # the database's file inside the archive
    sha256: str
    size: int
    schema_revision: str | None
    chain_head: Checkpoint | None  # the newest audit entry inside the copy
    anchor: Checkpoint | None  # the anchor when the backup was taken
    prognos_version: str

    def to_json(self) -> dict[str, Any]:
        def head(c: Checkpoint | None) -> dict[str, Any] | None:
            return None if c is None else {"seq": c.seq, "hash": c.hash}

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "prognos_version": self.prognos_version,
            "database": {
                "dialect": self.dialect,
                "file": self.member,
                "sha256": self.sha256,
                "bytes": self.size,
                "schema_revision": self.schema_revision,
            },
            "audit": {"chain_head": head(self.chain_head), "anchor": head(self.anchor)},
        }

    @classmethod
    def from_json(cls, raw: Any, source: Path) -> Manifest:
        def head(value: Any) -> Checkpoint | None:
            return None if value is None else Checkpoint(int(value["seq"]), str(value["hash"]))

        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupError(f"{source} is not a Prognos backup (its manifest names no format)")
        if raw.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"{source} is a backup of format {raw.get('format_version')!r}; this Prognos "
                f"reads format {FORMAT_VERSION}: restore it with the version that made it"
            )
        try:
            database, chain = raw["database"], raw["audit"]
            return cls(
                created_at=datetime.fromisoformat(raw["created_at"]),
                dialect=str(database["dialect"]),
                member=str(database["file"]),
                sha256=str(database["sha256"]),
                size=int(database["bytes"]),
                schema_revision=database["schema_revision"],
                chain_head=head(chain["chain_head"]),
                anchor=head(chain["anchor"]),
                prognos_version=str(raw.get("prognos_version", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"{source}: the manifest is damaged ({exc!s:.200})") from None


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    audit: VerifyResult  # the restored chain checked against the anchor
    anchor_restored: bool  # the anchor was missing and was set from the manifest


def _prognos_version() -> str:
    try:
        return version("prognos")
    except PackageNotFoundError:
        return "unknown"


def _dialect(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {backend} database: SQLite and PostgreSQL only")
    return backend


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up or restore into")
    return Path(database)


def _chain_head(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        sa.select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
    ).first()
    return None if row is None else Checkpoint(int(row[0]), str(row[1]))


def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _require_schema(conn: Connection, url: str) -> str:
    revision = _revision(conn)
    if revision is None or not sa.inspect(conn).has_table(AuditRow.__tablename__):
        raise BackupError(
            f"the database at {safe_url(url)} holds no Prognos schema: nothing to back up "
            "(is database.url the right one?)"
        )
    return revision


def _known_revision(revision: str | None, source: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is None:
        return
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        ScriptDirectory.from_config(config).get_revision(revision)
    except CommandError:
        raise BackupError(
            f"{source} holds schema revision {revision}, which this Prognos does not know (a "
            "newer version made it): restore it with that version"
        ) from None


@contextmanager
def _spooled(directory: Path, prefix: str) -> Iterator[Path]:
    """A temporary file in `directory` (same file system, so it can be renamed into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(block)
    return sha.hexdigest()


# ----------------------------------------------------------------------------- backup


def backup(
    url: str,
    dest: Path,
    *,
    anchor: Checkpoint | None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    now: datetime | None = None,
) -> Manifest:
    """Write a consistent backup of the database at `url` to `dest` (replaced atomically), with
    `anchor` (the audit anchor read now) in its manifest."""
    dialect = _dialect(url)
    if dest.exists() and not overwrite:
        raise BackupError(f"{dest} already exists: choose another name, or pass --force")
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory: name the backup file")
    progress = on_progress or (lambda _what, _done, _total: None)
    with _spooled(dest.parent, ".prognos-db.") as copy:
        if dialect == "sqlite":
            revision, head = _sqlite_backup(_sqlite_path(url), copy, url, progress)
            member = SQLITE_MEMBER
        else:
            revision, head = _postgres_backup(url, copy, progress)
            member = POSTGRES_MEMBER
        manifest = Manifest(
            created_at=(now or datetime.now(UTC)).astimezone(UTC),
            dialect=dialect,
            member=member,
            sha256=_digest(copy),
            size=copy.stat().st_size,
            schema_revision=revision,
            chain_head=head,
            anchor=anchor,
            prognos_version=_prognos_version(),
        )
        with _spooled(dest.parent, ".prognos-backup.") as archive:
            with tarfile.open(archive, "w") as tar:
                body = json.dumps(manifest.to_json(), indent=2).encode()
                _add_bytes(tar, MANIFEST, body, manifest.created_at)
                tar.add(copy, arcname=member, recursive=False)
            with archive.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(archive, dest)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, when: datetime) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(when.timestamp())
    tar.addfile(info, io.BytesIO(data))


def _sqlite_backup(
    path: Path, copy: Path, url: str, progress: Progress
) -> tuple[str, Checkpoint | None]:
    if not path.is_file():
        raise BackupError(f"no database file at {path} (is data_dir or database.url right?)")
    # A write by another process during the copy restarts it, so what lands in `copy` is one
    # consistent state of the database.
    _sqlite_copy(path, copy, "copying the database", progress, self_contained=True)
    engine = sa.create_engine(f"sqlite:///{copy}")
    try:
        with engine.connect() as conn:
            return _require_schema(conn, url), _chain_head(conn)
    finally:
        engine.dispose()


def _postgres_backup(url: str, copy: Path, progress: Progress) -> tuple[str, Checkpoint | None]:
    pg_dump = _pg_tool("pg_dump")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # pg_dump reads the snapshot this transaction exported, so the chain head and
                # revision read here are exactly those of the dump.
                snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
                revision = _require_schema(conn, url)
                head = _chain_head(conn)
                tables = _count_tables(conn)
                _run_pg(
                    [
                        pg_dump,
                        "--format=custom",
                        f"--snapshot={snapshot}",
                        "--no-owner",
                        "--no-privileges",
                        "--verbose",
                        f"--file={copy}",
                    ],
                    url,
                    progress=_table_progress("dumping", tables, progress),
                )
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"cannot read the database at {safe_url(url)}: {exc!s:.300}") from None
    finally:
        engine.dispose()
    return revision, head


def _count_tables(conn: Connection) -> int:
    return int(
        conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        ).scalar_one()
    )


_TABLE_LINE = re.compile(r'(?:dumping contents of|processing data for) table "([^"]+)"')


def _table_progress(what: str, total: int, progress: Progress) -> Callable[[str], None]:
    done = [0]
    progress(f"{what} tables", 0, total)

    def line(text: str) -> None:
        match = _TABLE_LINE.search(text)
        if match:
            done[0] += 1
            progress(f"{what} {match.group(1)}", min(done[0], total), total)

    return line


# ----------------------------------------------------------------------------- PostgreSQL tools


def _pg_tool(name: str) -> str:
    """`name` from PATH, else the newest /usr/lib/postgresql/*/bin (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _PG_TOOL_DIRS:
        if (directory / name).is_file():
            return str(directory / name)
    raise BackupToolMissingError(
        f"{name} is not installed: install PostgreSQL's client programs (Debian: apt-get "
        f"install postgresql-client) or put {name} on PATH"
    )


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The connection URI for libpq without the password, and an environment that carries it
    (a password on a command line is visible to every local user)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    conninfo = URL.create(  # URL.set(password=None) would keep the password
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return conninfo.render_as_string(hide_password=False), env


def _scrub(text: str, url: str) -> str:
    password = make_url(url).password
    return text.replace(str(password), "***") if password else text


def _run_pg(
    argv: list[str],
    url: str,
    *,
    progress: Callable[[str], None],
    stdin: IO[bytes] | None = None,
) -> None:
    conninfo, env = _libpq(url)
    tail: list[str] = []
    proc = subprocess.Popen(
        [*argv, f"--dbname={conninfo}"],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    if stdin is not None:
        stdin.close()  # the child holds it now; a reader that dies must break the writer's pipe
    assert proc.stderr is not None
    for raw in proc.stderr:
        text = raw.decode("utf-8", "replace").rstrip()
        progress(text)
        if not _TABLE_LINE.search(text):
            tail = [*tail[-19:], text]
    if proc.wait() != 0:
        detail = "\n".join(line for line in tail if "error" in line.lower()) or "\n".join(tail)
        raise BackupError(
            f"{Path(argv[0]).name} failed for {safe_url(url)}: {_scrub(detail, url)[-1500:]}"
        )


# ----------------------------------------------------------------------------- restore


def read_manifest(source: Path) -> Manifest:
    """The manifest of a backup file, checked for format; the database is not read."""
    with _open_archive(source) as tar:
        return _manifest(tar, source)


@contextmanager
def _open_archive(source: Path) -> Iterator[tarfile.TarFile]:
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    try:
        with tarfile.open(source, "r:") as tar:
            yield tar
    except tarfile.TarError as exc:
        raise BackupError(f"{source} is not a readable backup archive ({exc})") from None


def _manifest(tar: tarfile.TarFile, source: Path) -> Manifest:
    try:
        handle = tar.extractfile(MANIFEST)
    except KeyError:
        handle = None
    if handle is None:
        raise BackupError(f"{source} has no {MANIFEST}: not a Prognos backup")
    try:
        raw = json.loads(handle.read())
    except ValueError:
        raise BackupError(f"{source}: {MANIFEST} is not JSON") from None
    return Manifest.from_json(raw, source)


def _extract(tar: tarfile.TarFile, manifest: Manifest, source: Path, into: Path) -> None:
    """Copy the database member to `into`, checking its size and sha256 against the manifest."""
    try:
        member = tar.getmember(manifest.member)
    except KeyError:
        raise BackupError(f"{source} lacks {manifest.member}: the backup is incomplete") from None
    handle = tar.extractfile(member) if member.isfile() else None
    if handle is None:
        raise BackupError(f"{source}: {manifest.member} is not a regular file")
    sha = hashlib.sha256()
    with into.open("wb") as out:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(block)
            out.write(block)
    if sha.hexdigest() != manifest.sha256 or into.stat().st_size != manifest.size:
        raise BackupError(
            f"{source}: {manifest.member} does not match its manifest's checksum: the backup is "
            "damaged; restore another one"
        )


def restore(
    url: str,
    source: Path,
    *,
    anchor_path: Path,
    force: bool = False,
    on_progress: Progress | None = None,
) -> Restored:
    """Replace the database at `url` with the backup in `source`, migrate it to this version's
    schema and verify its audit chain against the anchor at `anchor_path`. Refused for a
    non-empty database unless `force`; all or nothing. An existing anchor is never moved (an
    older backup leaves the chain behind it); a missing one is set from the manifest when the
    restored chain holds the entry it names."""
    dialect = _dialect(url)
    progress = on_progress or (lambda _what, _done, _total: None)
    with _open_archive(source) as tar:
        manifest = _manifest(tar, source)
        if manifest.dialect != dialect:
            raise BackupError(
                f"{source} is a {manifest.dialect} backup; database.url names a {dialect} "
                "database: restore it into the kind of database it came from"
            )
        _known_revision(manifest.schema_revision, source)
        if dialect == "sqlite":
            path = _sqlite_path(url)
            _refuse_non_empty(url, force, _sqlite_occupied(path))
            with _spooled(path.parent, ".prognos-restore.") as copy:
                _extract(tar, manifest, source, copy)
                _sqlite_restore(copy, path, source, progress)
        else:
            _refuse_non_empty(url, force, _postgres_occupied(url))
            with tempfile.TemporaryDirectory(prefix="prognos-restore-") as tmp:
                copy = Path(tmp) / POSTGRES_MEMBER
                _extract(tar, manifest, source, copy)
                _postgres_restore(copy, url, progress)
    engine = create_engine(url)
    try:
        migrate(engine)
        with Session(engine) as session:
            anchor_restored = _restore_missing_anchor(session, anchor_path, manifest.anchor)
            result = verify(session, anchor_path)
    finally:
        engine.dispose()
    return Restored(manifest=manifest, audit=result, anchor_restored=anchor_restored)


def _restore_missing_anchor(session: Session, path: Path, anchor: Checkpoint | None) -> bool:
    if read_checkpoint(path) is not None or anchor is None or anchor.seq <= 0:
        return False
    stored = session.scalar(sa.select(AuditRow.hash).where(AuditRow.seq == anchor.seq))
    if stored != anchor.hash:
        return False  # verify reports the missing anchor; an admin decides
    write_checkpoint(path, anchor.seq, anchor.hash)
    return True


def _refuse_non_empty(url: str, force: bool, occupied: list[str]) -> None:
    if occupied and not force:
        shown = ", ".join(occupied[:5]) + (", ..." if len(occupied) > 5 else "")
        raise DatabaseNotEmptyError(
            f"the database at {safe_url(url)} is not empty (rows in {shown}): restoring replaces "
            "all of it. Stop prognos serve and daemon, then pass --force to replace it"
        )


def _occupied(conn: Connection) -> list[str]:
    """Tables holding rows (the schema's own version row aside)."""
    out = []
    for table in sorted(sa.inspect(conn).get_table_names()):
        if table == "alembic_version":
            continue
        quoted = conn.dialect.identifier_preparer.quote(table)
        if conn.execute(sa.text(f"SELECT 1 FROM {quoted} LIMIT 1")).first() is not None:  # noqa: S608
            out.append(table)
    return out


def _sqlite_occupied(path: Path) -> list[str]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return _occupied(conn)
    except sa.exc.DatabaseError:
        return ["(not a readable SQLite file)"]
    finally:
        engine.dispose()


def _sqlite_restore(copy: Path, path: Path, source: Path, progress: Progress) -> None:
    check = sqlite3.connect(copy)
    try:
        verdict = [str(r[0]) for r in check.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        verdict = [str(exc)]
    finally:
        check.close()
    if verdict != ["ok"]:
        raise BackupError(f"{source}: the database in it fails its integrity check: {verdict[:3]}")
    try:
        # The backup API writes the target in one transaction: interrupted, the old database
        # stays whole (SQLite rolls the transaction back).
        _sqlite_copy(copy, path, "restoring the database", progress)
    except sqlite3.Error as exc:
        raise BackupError(f"restoring into {path} failed, nothing was changed: {exc}") from None


def _sqlite_copy(
    source: Path, target: Path, what: str, progress: Progress, *, self_contained: bool = False
) -> None:
    """SQLite's online backup API, page steps reported; `self_contained`: no WAL file."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(
            dst,
            pages=_SQLITE_PAGES_PER_STEP,
            progress=lambda _status, remaining, total: progress(what, total - remaining, total),
        )
        if self_contained:
            dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()


def _postgres_occupied(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return _occupied(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"cannot read the database at {safe_url(url)}: {exc!s:.300}") from None
    finally:
        engine.dispose()


def _postgres_clear_sql(url: str) -> str:
    """Statements dropping everything in the current schema, run in the restore's transaction
    (tables of a newer schema than the backup's must not survive beside it)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            prep = conn.dialect.identifier_preparer
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname, c.relkind FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'S') "
                    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid "
                    "AND d.deptype IN ('a', 'i'))"
                )
            ).all()
            types = conn.execute(
                sa.text(
                    "SELECT t.typname FROM pg_type t "
                    "JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd')"
                )
            ).scalars()
            kinds = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
            drops = [
                f"DROP {kinds[kind]} IF EXISTS {prep.quote(name)} CASCADE;" for name, kind in rows
            ]
            drops += [f"DROP TYPE IF EXISTS {prep.quote(name)} CASCADE;" for name in types]
            return "\n".join(drops) + "\n"
    finally:
        engine.dispose()


# Sent to psql when pg_restore fails part-way, so the transaction rolls back instead of
# committing what came through.
_ABORT = b"\n\\.\nDO $$ BEGIN RAISE EXCEPTION 'pg_restore failed; nothing restored'; END $$;\n"


def _postgres_restore(dump: Path, url: str, progress: Progress) -> None:
    pg_restore, psql = _pg_tool("pg_restore"), _pg_tool("psql")
    listing = subprocess.run(
        [pg_restore, "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise BackupError(
            f"{dump.name} is not a readable pg_dump archive: {listing.stderr.strip()[-500:]}"
        )
    tables = sum(1 for line in listing.stdout.splitlines() if " TABLE DATA " in line)
    report = _table_progress("restoring", tables, progress)
    clear = _postgres_clear_sql(url).encode()
    # pg_restore writes SQL; psql runs it after the drops as one transaction that stops at the
    # first error, so the database is either the old one or the backup, never half of each.
    script = subprocess.Popen(
        [
            pg_restore,
            "--no-owner",
            "--no-privileges",
            "--no-comments",
            "--verbose",
            "-f-",
            str(dump),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert script.stdout is not None and script.stderr is not None
    errors: list[str] = []

    def watch(stream: IO[bytes]) -> None:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip()
            report(text)
            if "error" in text.lower():
                errors.append(text)

    def pump(out_fd: int, stream: IO[bytes]) -> None:
        with suppress(BrokenPipeError), os.fdopen(out_fd, "wb") as out:
            out.write(clear)
            shutil.copyfileobj(stream, out, _CHUNK)
            if script.wait() != 0:
                out.write(_ABORT)

    read_fd, write_fd = os.pipe()
    threads = [
        threading.Thread(target=watch, args=(script.stderr,), daemon=True),
        threading.Thread(target=pump, args=(write_fd, script.stdout), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        _run_pg(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-"],
            url,
            progress=lambda _line: None,
            stdin=os.fdopen(read_fd, "rb"),
        )
    except BackupError as exc:
        for thread in threads:
            thread.join(timeout=10)
        if script.poll() not in (None, 0):  # psql stopped at our sentinel, or at the cut
            said = "; ".join(errors)[-1000:] or "no message"
            raise BackupError(
                f"pg_restore failed part-way (exit status {script.returncode}: {said}); the "
                "transaction was rolled back, nothing restored: the database is as it was"
            ) from None
        raise BackupError(
            f"{exc.message}; the transaction was rolled back, nothing restored"
        ) from None
    finally:
        with suppress(ProcessLookupError):
            script.kill()
        script.wait()
        for thread in threads:
            thread.join(timeout=10)
