"""The `prognos` command line as a user types it, in an empty folder with built-in defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import prognos.composition
from api.app import create_app
from core.errors import ConfigError
from core.settings import load_settings
from ingest.errors import SourceUnavailableError
from prognos.cli import app
from prognos.composition import build_context
from tests.unit.fakes import FakeSeries, FakeSource, make_target

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "tok-ab12cd34ef56"
PASSWORD = "basic-pw-9z8y7x"
DB_PASSWORD = "db-pw-1q2w3e"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def prognos_command() -> list[str]:
    script = ROOT / ".venv" / "bin" / "prognos"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prognos.cli"]


def run_prognos(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGNOS_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [*prognos_command(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "serve", "daemon", "ingest", "backfill", "series", "token", "config"):
        assert command in result.stdout
    assert "prognos run" in result.stdout  # says where to start


def test_ingest_once_in_an_empty_folder_uses_the_bundled_sample(workdir: Path) -> None:
    out = ok("ingest", "--once")
    assert (workdir / "var" / "sample" / "series.yaml").is_file()
    assert (workdir / "var" / "prognos.db").is_file()
    rows = [line for line in out.splitlines() if line.startswith("│")]
    by_target = {row.split("│")[1].strip(): row for row in rows if row.split("│")[1].strip()}
    assert set(by_target) == {"cpu", "memory", "latency_p99", "requests"}
    for row in by_target.values():
        cells = [c.strip() for c in row.split("│")[1:-1]]
        assert cells[1] == "ok"
        assert int(cells[3]) >= 3  # series found (checkout-1 exists only part of the time)
        assert int(cells[5]) > 0  # points stored

    # The series command shows what was stored, per service.
    listing = ok("series", "--limit", "100")
    for service in ("frontend", "checkout", "cart"):
        assert service in listing
    assert "pod=cart-0" in listing
    cart_only = ok("series", "--service", "cart")
    assert "cart" in cart_only and "frontend" not in cart_only and "checkout" not in cart_only

    # A second cycle right away finds no new series and at most the newest step.
    again = [line for line in ok("ingest", "--once").splitlines() if line.startswith("│")]
    for row in again:
        cells = [c.strip() for c in row.split("│")[1:-1]]
        if cells[0]:
            assert cells[1] in ("ok", "noop")
            assert cells[4] == "0"
            assert int(cells[5]) <= int(cells[3]) * 2


def test_ingest_once_exits_1_when_a_target_fails(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource([FakeSeries("cpu", {"service": "a"})])
    source.fail_with = SourceUnavailableError("Prometheus at http://prom:9090 is unreachable")
    monkeypatch.setattr(
        prognos.composition, "build_source", lambda settings: (source, [make_target("cpu")])
    )
    result = CliRunner().invoke(app, ["ingest", "--once"])
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert "unreachable" in result.stdout


def test_token_create_prints_a_token_that_authenticates(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["token", "create", "--role", "viewer", "--name", "grafana"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("pgn_")
    assert "shown only this once" in result.stderr

    context = build_context(load_settings())
    try:
        with TestClient(create_app(context)) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/v1/series", headers=headers).status_code == 200
            assert client.get("/v1/series").status_code == 401

            listing = ok("token", "list")
            token_id = token.split("_")[1]
            assert token_id in listing and "grafana" in listing and "viewer" in listing
            assert token.split("_", 2)[2] not in listing  # never the secret

            revoked = CliRunner().invoke(app, ["token", "revoke", token_id])
            assert revoked.exit_code == 0
            assert client.get("/v1/series", headers=headers).status_code == 401
    finally:
        context.engine.dispose()


def test_unknown_role_is_a_clear_error_with_exit_2(tmp_path: Path) -> None:
    result = run_prognos(tmp_path, "token", "create", "--role", "superuser")
    assert result.returncode == 2
    assert "unknown role 'superuser'" in result.stderr
    assert "viewer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "var").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api:\n  port: 8080\ningest:\n  intervall: 5m\n", "prognos.yaml:4: ingest.intervall"),
        (
            "targets:\n  - {name: cpu, query: up}\n  - name: mem\n    query: m\n    step: 1x\n",
            "prognos.yaml:5: targets[1].step",
        ),
        ("ingest:\n  interval: 60s\n lag: 5s\n", "prognos.yaml:3"),
    ],
)
def test_a_bad_config_file_is_one_clear_message_and_exit_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "prognos.yaml").write_text(text)
    result = run_prognos(tmp_path, "config", "check")
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 3


def test_config_check_says_where_the_config_came_from(workdir: Path) -> None:
    assert "built-in defaults" in ok("config", "check")
    assert "source: replay" in ok("config", "check")
    (workdir / "mine.yaml").write_text(
        "prometheus:\n  url: http://127.0.0.1:9090\ntargets:\n  - {name: up, query: up}\n"
    )
    out = ok("--config", "mine.yaml", "config", "check")
    assert "mine.yaml" in out and "source: prometheus" in out and "1 target" in out


def test_config_show_masks_secrets(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "prognos.yaml").write_text(
        "prometheus:\n"
        "  url: https://prom.example.com\n"
        "  auth:\n"
        "    type: basic\n"
        "    username: scraper\n"
        f"    password: {PASSWORD}\n"
        "targets:\n"
        "  - {name: cpu, query: up, step: 30s}\n"
    )
    monkeypatch.setenv("PROGNOS_DATABASE__URL", f"postgresql://prognos:{DB_PASSWORD}@db/prognos")
    out = ok("config", "show")
    assert PASSWORD not in out
    assert DB_PASSWORD not in out
    shown = yaml.safe_load(out)
    assert shown["prometheus"]["auth"]["username"] == "scraper"
    assert shown["prometheus"]["auth"]["password"] == "**********"
    assert shown["database"]["url"] == "**********"
    assert shown["targets"][0]["step"] == "30s"  # durations shown as written


def test_config_show_masks_a_bearer_token(workdir: Path) -> None:
    (workdir / "prognos.yaml").write_text(
        "prometheus:\n  url: http://p:9090\n  auth:\n    type: bearer\n"
        f"    token: {TOKEN}\ntargets:\n  - {{name: up, query: up}}\n"
    )
    out = ok("config", "show")
    assert TOKEN not in out
    assert yaml.safe_load(out)["prometheus"]["auth"]["token"] == "**********"


def test_db_upgrade_does_not_print_the_password(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_DATA_DIR", str(workdir / "state"))
    out = ok("db", "upgrade")
    assert "up to date" in out
    assert (workdir / "state" / "prognos.db").is_file()


def test_backfill_fills_the_cache_and_a_second_run_reads_it(workdir: Path) -> None:
    first = ok("backfill", "--days", "1", "--target", "cpu")
    rows = [r for r in first.splitlines() if r.startswith("│")]
    assert len(rows) == 1 and "cpu" in rows[0]
    cells = [c.strip() for c in rows[0].split("│")[1:-1]]
    blocks, from_cache = int(cells[3]), int(cells[4])
    # A day back from now spans two UTC days: yesterday (complete) and today (still growing).
    assert (blocks, from_cache) == (2, 0)
    assert len(list((workdir / "var" / "cache" / "cpu").rglob("*.parquet"))) == 1

    again = ok("backfill", "--days", "1", "--target", "cpu")
    cells = [c.strip() for c in next(r for r in again.splitlines() if "cpu" in r).split("│")[1:-1]]
    assert int(cells[4]) == 1  # yesterday from the cache; only today was read again


def test_backfill_of_an_unknown_target_names_the_known_ones(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["backfill", "--days", "1", "--target", "cpuu"])
    assert isinstance(result.exception, ConfigError)  # main() turns it into exit code 2
    message = result.exception.message
    assert "unknown target(s): cpuu" in message
    assert "cpu" in message and "memory" in message
    assert not (workdir / "var" / "cache" / "cpuu").exists()
