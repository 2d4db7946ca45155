"""Unit-test isolation: the developer's own PROGNOS_* environment never leaks into a test."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator

import pytest

# Starlette's TestClient announces its move from httpx to httpx2 when first imported; that is
# about the test client, not about Prognos. Importing it once here, quietly, settles it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401


@pytest.fixture(autouse=True)
def _clean_prognos_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROGNOS_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    # CLI commands call configure_logging(), which replaces the root handlers in-process.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
