"""The restore drill, on SQLite and on a real PostgreSQL, through the commands an operator runs:
back up while the audit chain grows, restore the newest backup (the chain verifies), restore an
older one (verify says the chain is behind its anchor), re-anchor (verify passes, and the
re-anchoring is in the chain). Damaged backups change nothing."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from api.tables import ApiTokenRow
from core.database import create_engine, migrate, session_factory
from prognos.cli import app
from remediation import backup
from remediation.tables import AuditRow
from tests.support.servers import PostgresServer
from tests.unit.remediation.helpers import audit_approvals


@pytest.fixture
def site(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, db_url, monkeypatch)


def make_site(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose prognos.yaml names the database and the data_dir."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prognos.yaml").write_text(
        f"data_dir: {tmp_path / 'var'}\ndatabase:\n  url: {db_url}\n"
    )
    engine = create_engine(db_url)
    migrate(engine)
    engine.dispose()
    return tmp_path


def cli(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def activity(db_url: str, site: Path, start: int, count: int) -> None:
    """Audited approvals, and an API token (data outside the chain that a restore brings back)."""
    engine = create_engine(db_url)
    audit_approvals(session_factory(engine), site / "var" / "audit-head", count, start=start)
    engine.dispose()
    cli("token", "create", "--role", "viewer", "--name", f"after-{start + count - 1}")


def state(db_url: str) -> tuple[int, list[str]]:
    """(audit entries, token names) in the database."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        entries = conn.execute(sa.select(sa.func.count()).select_from(AuditRow)).scalar_one()
        names = sorted(conn.execute(sa.select(ApiTokenRow.name)).scalars())
    engine.dispose()
    return entries, names


def test_restore_drill(site: Path, db_url: str) -> None:
    activity(db_url, site, 1, 3)
    cli("db", "backup", "older.tar")
    activity(db_url, site, 4, 2)
    out = cli("db", "backup", "newest.tar").output
    assert "audit chain at entry 5, anchor at entry 5" in out
    manifest = backup.read_manifest(site / "newest.tar")
    assert manifest.chain_head is not None and manifest.chain_head.seq == 5
    assert manifest.anchor == manifest.chain_head and manifest.schema_revision

    refused = cli("db", "restore", "newest.tar", ok=False)
    assert isinstance(refused.exception, backup.DatabaseNotEmptyError)
    assert "pass --force" in refused.exception.message

    out = cli("db", "restore", "newest.tar", "--force").output
    assert "audit chain intact: 5 entries, anchored at seq 5" in out
    assert cli("audit", "verify").exit_code == 0
    assert state(db_url) == (5, ["after-3", "after-5"])

    out = cli("db", "restore", "older.tar", "--force").output
    assert "warning: the restored audit chain does not match its anchor" in out
    assert state(db_url) == (3, ["after-3"])
    verify = cli("audit", "verify", ok=False)
    assert verify.exit_code == 1
    assert "the chain is behind its anchor" in verify.output
    assert "entries 4..5 were removed from the tail, or an older backup was restored" in (
        verify.output.replace("\n", " ")
    )
    assert "prognos audit reanchor --reason TEXT" in verify.output.replace("\n", " ")

    out = cli("audit", "reanchor", "--reason", "restore drill", "--yes", "--actor", "ops").output
    assert "re-anchored: entry 4 (reanchor)" in out
    assert "audit chain intact: 4 entries, anchored at seq 4" in cli("audit", "verify").output
    last = json.loads(cli("audit", "show", "--json", "--after", "3").output.strip())
    assert last["action"] == "reanchor" and last["actor"] == "ops"
    assert last["data"]["reason"] == "restore drill"
    assert last["data"]["old_anchor"] == {"seq": 5, "hash": manifest.chain_head.hash}
    assert last["data"]["new_anchor"]["seq"] == 3

    # New entries follow the new anchor again.
    activity(db_url, site, 6, 1)
    assert "anchored at seq 5" in cli("audit", "verify").output


def test_a_lost_anchor_comes_back_from_the_backup(site: Path, db_url: str) -> None:
    """A new host: the database is empty and the anchor file is gone with the old disk."""
    activity(db_url, site, 1, 2)
    cli("db", "backup", "b.tar")
    (site / "var" / "audit-head").unlink()
    out = cli("db", "restore", "b.tar", "--force").output
    assert "was missing: set from the backup's manifest" in out
    assert "audit chain intact: 2 entries, anchored at seq 2" in cli("audit", "verify").output


def rewrite(archive: Path, damage: object) -> None:
    """Replace the database member with damage(bytes), with a manifest that matches it, so the
    damage gets past the checksum and reaches the database tools."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        name = manifest["database"]["file"]
        data = damage(tar.extractfile(name).read())  # type: ignore[operator, union-attr]
    import hashlib

    manifest["database"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    with tarfile.open(archive, "w") as tar:
        for member, body in (("manifest.json", json.dumps(manifest).encode()), (name, data)):
            info = tarfile.TarInfo(member)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def scramble(data: bytes) -> bytes:
    """Garbage two thirds in: SQLite's integrity check or pg_restore refuses it."""
    at = len(data) * 2 // 3
    return data[:at] + bytes(b ^ 0x5A for b in data[at : at + 4096]) + data[at + 4096 :]


def test_a_damaged_backup_changes_nothing(site: Path, db_url: str) -> None:
    activity(db_url, site, 1, 3)
    cli("db", "backup", "good.tar")
    activity(db_url, site, 4, 1)
    before = state(db_url)

    # Bytes flipped in transit: the checksum catches it before the database is touched.
    raw = bytearray((site / "good.tar").read_bytes())
    with tarfile.open(site / "good.tar") as tar:
        member = tar.getmember(backup.read_manifest(site / "good.tar").member)
    raw[member.offset_data + member.size // 2] ^= 0xFF
    (site / "flipped.tar").write_bytes(bytes(raw))
    failed = cli("db", "restore", "flipped.tar", "--force", ok=False)
    assert isinstance(failed.exception, backup.BackupError), failed.output
    assert "damaged" in failed.exception.message or "checksum" in failed.exception.message

    # Garbage that matches its manifest's checksum: the database tools refuse it.
    (site / "cut.tar").write_bytes((site / "good.tar").read_bytes())
    rewrite(site / "cut.tar", scramble)
    failed = cli("db", "restore", "cut.tar", "--force", ok=False)
    assert isinstance(failed.exception, backup.BackupError), failed.output
    assert state(db_url) == before
    assert cli("audit", "verify").exit_code == 0


def test_pg_restore_failing_part_way_rolls_the_whole_restore_back(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_restore's SQL stops half-way and it exits non-zero (a disk error, say): psql must not
    commit the half it received."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    db_url = postgres_server.create_database(name)
    try:
        site = make_site(tmp_path, db_url, monkeypatch)
        activity(db_url, site, 1, 3)
        cli("db", "backup", "good.tar")
        activity(db_url, site, 4, 1)
        before = state(db_url)
        real = backup._pg_tool("pg_restore")
        cut = tmp_path / "pg_restore"
        cut.write_text(
            "#!/bin/sh\n"
            f'case "$1" in --list) exec {real} "$@";; esac\n'
            f'{real} "$@" | head -c 20000\n'
            "exit 1\n"
        )
        cut.chmod(0o755)
        found = backup._pg_tool
        monkeypatch.setattr(
            backup, "_pg_tool", lambda tool: str(cut) if tool == "pg_restore" else found(tool)
        )
        failed = cli("db", "restore", "good.tar", "--force", ok=False)
        assert isinstance(failed.exception, backup.BackupError), failed.output
        assert "nothing restored" in failed.exception.message
        assert state(db_url) == before
        assert cli("audit", "verify").exit_code == 0
    finally:
        postgres_server.drop_database(name)
