"""The training notebook runs top to bottom on small settings, using the library."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_and_evaluate.ipynb"


@pytest.mark.timeout(300)
def test_training_notebook_runs_and_registers_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PROGNOS_NOTEBOOK_DATA_DIR", str(tmp_path))
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    text = "\n".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "epochs in" in text
    assert "lstm" in text and "median_band" in text
    assert "alarms over" in text and "scored steps" in text
    assert "TrainingOutcome(family='step60s'" in text
    assert (tmp_path / "models" / "step60s" / "v1" / "weights.pt").is_file()
