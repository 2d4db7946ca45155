"""Bulk work on Ray: `prognos backtest nab --engine ray` scores each file as a Ray task on the
session's local cluster (loopback) and writes exactly the files of the local process pool; a
task that fails names its error and leaves no task running."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.settings import RaySettings
from prognos.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def nab_folder(root: Path, files: int = 5) -> Path:
    """A NAB-layout folder of `files` generated series (a spike in each), with labels."""
    rng = np.random.default_rng(11)
    labels = {}
    for i in range(files):
        n = 600 + 100 * i
        ts = 1_600_000_000 + np.arange(n, dtype=np.int64) * 300
        values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
        values[n - 100] += 60
        stamps = pd.to_datetime(ts, unit="s").strftime("%Y-%m-%d %H:%M:%S")
        folder = root / "data" / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"timestamp": stamps, "value": values})
        frame.to_csv(folder / f"s{i}.csv", index=False)
        window = [f"{stamps[n - 110]}.000000", f"{stamps[n - 90]}.000000"]
        labels[f"{folder.name}/s{i}.csv"] = [window]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(pd.Series(labels).to_json())
    return root


def backtest(data: Path, out: Path, engine: str) -> None:
    args = ["backtest", "nab", "--data", str(data), "--out", str(out), "--engine", engine]
    result = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert result.exit_code == 0, result.output


def test_ray_tasks_write_the_files_of_the_local_pool(ray_cluster: Any, tmp_path: Path) -> None:
    data = nab_folder(tmp_path / "corpus")
    backtest(data, tmp_path / "local", "local")
    backtest(data, tmp_path / "ray", "ray")
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.csv"))
    ray_files = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.csv"))
    assert len(local) == 5
    assert ray_files == local
    for relative in local:
        assert filecmp.cmp(tmp_path / "local" / relative, tmp_path / "ray" / relative, False)
    labelled = pd.read_csv(tmp_path / "ray" / "prognos" / "even" / "prognos_s0.csv")
    assert labelled["label"].sum() > 0  # the labels were joined in the caller
    assert ray_cluster.is_initialized()  # the session's cluster, joined, not shut down


def _fails(job: Any) -> Any:
    if job == 3:
        raise ValueError("job 3 is bad")
    return job * 2


def test_a_failing_task_is_raised_with_its_cause_and_the_rest_cancelled(ray_cluster: Any) -> None:
    from prognos.engine import batch_mapper

    mapper = batch_mapper("ray", RaySettings())
    got = []
    with pytest.raises(ValueError, match="job 3 is bad"):
        for value in mapper(_fails, list(range(8)), 2):
            got.append(value)
    assert got == [0, 2, 4]  # in the jobs' order, up to the failure
    assert list(mapper(_fails, [0, 1, 2], None)) == [0, 2, 4]  # the cluster's CPUs in flight
