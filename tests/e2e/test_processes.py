"""The service as a user starts it: `prognos run`, and `serve` + `daemon` as separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(120)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prognos.cli", *args]


def _env(db_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PROGNOS_DATABASE__URL": db_url, "PROGNOS_INGEST__INTERVAL": "2s"})
    env.pop("PROGNOS_CONFIG", None)
    return env


def _wait(
    url: str,
    *,
    status: int = 200,
    timeout: float = 60,
    proc: subprocess.Popen[str] | None = None,
) -> requests.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:  # it died: say why, at once
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process serving {url} exited {proc.returncode}:\n{output}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == status:
                return response
            last = response.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status} (last: {last})")


def _token(cwd: Path, env: dict[str, str], role: str = "viewer") -> str:
    result = subprocess.run(
        _cli("token", "create", "--role", role),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(args: list[str], cwd: Path, env: dict[str, str], procs: list) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    procs.append(proc)
    return proc


def _series(base: str, token: str) -> list[dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = requests.get(
            f"{base}/v1/series", headers={"Authorization": f"Bearer {token}"}, timeout=5
        ).json()
        if body["items"]:
            return body["items"]
        time.sleep(0.5)
    raise AssertionError("no series appeared")


def _forecasts(base: str, token: str) -> list[dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = requests.get(
            f"{base}/v1/forecasts", headers={"Authorization": f"Bearer {token}"}, timeout=5
        ).json()
        if len(body["items"]) >= 8:
            return body["items"]
        time.sleep(0.5)
    raise AssertionError("no forecasts appeared")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    # uvicorn re-raises the signal after its clean shutdown, so -SIGTERM is a clean stop too.
    assert proc.returncode in (0, -signal.SIGTERM), output
    return output


def test_run_serves_ingests_and_stops_cleanly(tmp_path: Path, started: list) -> None:
    env = _env(f"sqlite:///{tmp_path / 'var' / 'prognos.db'}")
    port = free_port()
    proc = _start(_cli("run", "--port", str(port)), tmp_path, env, started)
    base = f"http://127.0.0.1:{port}"
    ready = _wait(f"{base}/readyz", proc=proc).json()
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["source"]["status"] == "ok"
    token = _token(tmp_path, env)

    items = _series(base, token)
    assert {item["target"] for item in items} >= {"cpu", "memory"}
    assert all(item["service"] for item in items)
    samples = requests.get(
        f"{base}/v1/series/{items[0]['id']}/samples",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    assert len(samples["points"]) > 100  # the first cycle pulled the lookback window

    forecasts = _forecasts(base, token)
    assert {f["target"] for f in forecasts} >= {"cpu", "memory"}
    assert all(len(f["points"]) == 30 for f in forecasts)  # 30 min ahead at 60 s steps
    first = forecasts[0]["points"][0]["quantiles"]
    assert first["p10"] <= first["p50"] <= first["p90"]

    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert 'horizon="15m"' in metrics
    assert 'prognos_quantile="0.9"' in metrics
    assert 'prognos_series{target="cpu"}' in metrics
    assert "prognos_ingest_runs_total" in metrics
    assert requests.get(f"{base}/docs", timeout=5).status_code == 200
    assert requests.get(f"{base}/v1/series", timeout=5).status_code == 401

    output = _stop(proc)
    assert "Traceback" not in output
    assert "scheduler stopped" in output
    assert "Application shutdown complete" in output


def test_serve_and_daemon_split_on_postgres(tmp_path: Path, started: list, postgres_server) -> None:
    name = f"e2e_{os.getpid()}"
    url = postgres_server.create_database(name)
    try:
        env = _env(url)
        port = free_port()
        daemon = _start(_cli("daemon"), tmp_path, env, started)
        serve = _start(_cli("serve", "--port", str(port)), tmp_path, env, started)
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/readyz", proc=serve)
        token = _token(tmp_path, env)
        items = _series(base, token)
        assert len(items) >= 4
        runs = requests.get(
            f"{base}/v1/ingest/runs", headers={"Authorization": f"Bearer {token}"}, timeout=5
        ).json()
        assert runs and all(run["status"] in ("ok", "noop") for run in runs)
        output = _stop(daemon)
        assert "daemon stopped" in output
        assert "Traceback" not in output
        _stop(serve)
    finally:
        postgres_server.drop_database(name)
