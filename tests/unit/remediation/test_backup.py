"""Backups refuse what they cannot do with a message that says what is wrong and what to do, and
keep the PostgreSQL password off command lines and out of messages."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from core.database import create_engine, migrate
from remediation import backup


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'prognos.db'}"
    engine = create_engine(url)
    migrate(engine)
    engine.dispose()
    return url


def archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_backup_never_overwrites_a_file_unless_told(db: str, tmp_path: Path) -> None:
    target = tmp_path / "b.tar"
    target.write_text("precious")
    with pytest.raises(backup.BackupError, match="already exists: choose another name"):
        backup.backup(db, target, anchor=None)
    assert target.read_text() == "precious"
    manifest = backup.backup(db, target, anchor=None, overwrite=True)
    assert backup.read_manifest(target) == manifest
    assert manifest.chain_head is None and manifest.schema_revision
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".prognos-")]


def test_an_unmigrated_or_missing_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="no database file at"):
        backup.backup(f"sqlite:///{tmp_path / 'nope.db'}", tmp_path / "b.tar", anchor=None)
    create_engine(f"sqlite:///{tmp_path / 'empty.db'}").connect().close()
    with pytest.raises(backup.BackupError, match="holds no Prognos schema"):
        backup.backup(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path / "b.tar", anchor=None)
    assert not (tmp_path / "b.tar").exists()
    with pytest.raises(backup.BackupError, match="in-memory"):
        backup.backup("sqlite://", tmp_path / "b.tar", anchor=None)


def test_restore_refuses_files_that_are_not_prognos_backups(db: str, tmp_path: Path) -> None:
    anchor = tmp_path / "audit-head"
    (tmp_path / "plain.txt").write_text("hello")
    cases = {
        tmp_path / "missing.tar": "no backup file at",
        tmp_path / "plain.txt": "not a readable backup archive",
        archive(tmp_path / "empty.tar", {"x": b"1"}): "has no manifest.json",
        archive(tmp_path / "other.tar", {"manifest.json": b'{"format": "x"}'}): "not a Prognos",
    }
    for path, message in cases.items():
        with pytest.raises(backup.BackupError, match=message):
            backup.restore(db, path, anchor_path=anchor)


def rewrite_manifest(source: Path, target: Path, **database: object) -> Path:
    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])
    manifest["database"].update(database)
    members["manifest.json"] = json.dumps(manifest).encode()
    return archive(target, members)


def test_restore_refuses_another_dialect_or_a_newer_schema(db: str, tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    backup.backup(db, good, anchor=None)
    anchor = tmp_path / "audit-head"
    postgres = rewrite_manifest(good, tmp_path / "pg.tar", dialect="postgresql")
    with pytest.raises(backup.BackupError, match=r"is a postgresql backup; database\.url names a"):
        backup.restore(db, postgres, anchor_path=anchor)
    newer = rewrite_manifest(good, tmp_path / "newer.tar", schema_revision="9999")
    with pytest.raises(backup.BackupError, match="schema revision 9999, which this Prognos"):
        backup.restore(db, newer, anchor_path=anchor, force=True)


def test_a_missing_postgres_tool_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup.shutil, "which", lambda _name: None)
    monkeypatch.setattr(backup, "_PG_TOOL_DIRS", [])
    with pytest.raises(backup.BackupToolMissingError, match="apt-get install postgresql-client"):
        backup._pg_tool("pg_dump")


def test_the_postgres_password_travels_in_the_environment_only() -> None:
    url = "postgresql+psycopg://prognos:s3cr3t-pw@db.example:5433/prognos?sslmode=require"
    conninfo, env = backup._libpq(url)
    assert "s3cr3t-pw" not in conninfo
    assert conninfo == "postgresql://prognos@db.example:5433/prognos?sslmode=require"
    assert env["PGPASSWORD"] == "s3cr3t-pw"
    assert "s3cr3t-pw" not in backup._scrub("FATAL: bad password s3cr3t-pw", url)
