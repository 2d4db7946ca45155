"""Generic top-level names (core, models, api...) come from this project, not another install."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "ingest", "models", "rca", "sim", "remediation", "api", "prognos"]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_imported_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None, f"{name} is a namespace package, not ours"
    location = Path(module.__file__).resolve()
    assert location == ROOT / name / "__init__.py", (
        f"`import {name}` resolved to {location}, not to this project's {ROOT / name}"
    )
