"""Model artifacts (models/artifacts.py): round trips, no pickle, refusals, interrupted saves."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import models.artifacts as artifacts
from ingest.domain import SeriesKey
from models.artifacts import ArtifactMetadata, load_model, save_model
from models.domain import ContextBatch, History
from models.errors import ModelArtifactError, ModelNotFittedError
from models.forecasters.baselines import NaiveConfig, NaiveForecaster
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig

STEP = 60
START = 1_700_000_040  # a multiple of STEP
LENGTH = 300
TINY = LSTMConfig(
    hidden_size=8,
    context_length=12,
    horizon=4,
    max_epochs=1,
    windows_per_epoch=128,
    batch_size=32,
)


def sine_histories() -> list[History]:
    t = np.arange(LENGTH)
    out = []
    for i, (level, amplitude, period) in enumerate([(10, 2, 24), (50, 10, 36), (0.5, 0.1, 48)]):
        values = level + amplitude * np.sin(2 * np.pi * t / period + i)
        values[100 + 7 * i : 104 + 7 * i] = np.nan  # a gap, as real series have
        key = SeriesKey.of("node_cpu_seconds", {"instance": f"host-{i}"})
        out.append(History(key, STEP, START, values))
    return out


@pytest.fixture(scope="module")
def histories() -> list[History]:
    return sine_histories()


@pytest.fixture(scope="module")
def lstm(histories: list[History]) -> GlobalLSTMForecaster:
    model = GlobalLSTMForecaster(TINY)
    model.fit(histories)
    return model


@pytest.fixture(scope="module")
def batch(histories: list[History]) -> ContextBatch:
    values = np.stack([h.values[-TINY.context_length :] for h in histories]).astype(np.float32)
    end = np.array([h.timestamps[-1] for h in histories], dtype=np.int64)
    return ContextBatch(values, end, STEP)


def make_metadata(version: str = "2024-06-01.1") -> ArtifactMetadata:
    return ArtifactMetadata(
        name="node-cpu",
        version=version,
        train_start=START,  # epoch seconds
        train_end=datetime.fromtimestamp(START + (LENGTH - 1) * STEP, UTC),
        series_count=3,
        targets=("node_cpu_seconds",),
        metrics={"pinball": 0.125, "coverage_80": 0.79, "mase": math.nan},
    )


@pytest.fixture
def saved(tmp_path: Path, lstm: GlobalLSTMForecaster) -> Path:
    return save_model(lstm, tmp_path / "models" / "node-cpu", metadata=make_metadata())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def reseal_weights(folder: Path) -> None:
    """Make metadata.json agree with whatever weights.pt now holds (a consistent forgery)."""
    edit_json(
        folder / "metadata.json",
        lambda m: m.update(weights_sha256=sha256(folder / "weights.pt")),
    )


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------- round trips


def test_loaded_lstm_predicts_identically(
    saved: Path, lstm: GlobalLSTMForecaster, batch: ContextBatch
) -> None:
    loaded, _ = load_model(saved)

    assert isinstance(loaded, GlobalLSTMForecaster)
    assert loaded.config == lstm.config
    assert loaded.step == STEP
    np.testing.assert_array_equal(loaded.predict(batch).values, lstm.predict(batch).values)


def test_metadata_round_trips_with_versions_and_checksums(saved: Path) -> None:
    _, metadata = load_model(saved)
    given = make_metadata()

    assert metadata.model_dump(exclude={"created_at", "metrics"}) == given.model_dump(
        exclude={
            "created_at",
            "metrics",
            "config_sha256",
            "weights_sha256",
            "prognos_version",
            "torch_version",
            "python_version",
        }
    ) | {
        "config_sha256": sha256(saved / "config.json"),
        "weights_sha256": sha256(saved / "weights.pt"),
        "prognos_version": package_version("prognos"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    assert metadata.created_at.tzinfo == UTC
    assert metadata.created_at <= given.created_at  # stamped when saved, before `given`
    assert metadata.train_start == datetime.fromtimestamp(START, UTC)
    assert metadata.metrics["pinball"] == 0.125
    assert math.isnan(metadata.metrics["mase"])  # NaN survives (as the JSON string "NaN")
    json.loads((saved / "metadata.json").read_text())  # and the file stays strict JSON


def test_artifact_is_data_only(saved: Path) -> None:
    assert sorted(os.listdir(saved)) == ["config.json", "metadata.json", "weights.pt"]
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == 1
    assert config["forecaster"] == "lstm"
    assert config["step"] == STEP
    assert config["config"]["hidden_size"] == 8
    state = torch.load(saved / "weights.pt", weights_only=True, map_location="cpu")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "lstm.weight_ih_l0" in state


def test_baseline_artifact_has_no_weights(
    tmp_path: Path, histories: list[History], batch: ContextBatch
) -> None:
    naive = NaiveForecaster(NaiveConfig(context_length=12, horizon=4))
    naive.fit(histories)
    folder = save_model(naive, tmp_path / "naive", metadata=make_metadata())

    assert sorted(os.listdir(folder)) == ["config.json", "metadata.json"]
    loaded, metadata = load_model(folder)
    assert isinstance(loaded, NaiveForecaster)
    assert metadata.weights_sha256 is None
    np.testing.assert_array_equal(loaded.predict(batch).values, naive.predict(batch).values)

    (folder / "weights.pt").write_bytes(b"\0")
    with pytest.raises(ModelArtifactError, match="naive forecaster has none"):
        load_model(folder)


def test_overwrite_replaces_the_previous_artifact(saved: Path, lstm: GlobalLSTMForecaster) -> None:
    save_model(lstm, saved, metadata=make_metadata("v2"))

    assert load_model(saved)[1].version == "v2"
    assert leftovers(saved.parent) == []


def test_loading_leaves_torch_random_state_alone(saved: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(saved)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- refusals


class _Boom:
    """Unpickling this would run code; a weights-only load must refuse it first."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


EXPLODED: list[bool] = []


def _explode() -> None:
    EXPLODED.append(True)


def _set_config(**fields: Any) -> Callable[[Path], None]:
    return lambda f: edit_json(f / "config.json", lambda c: c["config"].update(fields))


def _flip_bytes(folder: Path) -> None:
    data = bytearray((folder / "weights.pt").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    (folder / "weights.pt").write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    data = (folder / "weights.pt").read_bytes()
    (folder / "weights.pt").write_bytes(data[: len(data) // 2])


def _garbage_resealed(folder: Path) -> None:
    (folder / "weights.pt").write_bytes(b"not a torch file at all")
    reseal_weights(folder)


def _pickle_resealed(folder: Path) -> None:
    torch.save({"lstm.weight_ih_l0": torch.zeros(1), "payload": _Boom()}, folder / "weights.pt")
    reseal_weights(folder)


def _list_resealed(folder: Path) -> None:
    torch.save([torch.zeros(1)], folder / "weights.pt")
    reseal_weights(folder)


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "folder missing": (shutil.rmtree, "no such folder"),
    "config missing": (lambda f: (f / "config.json").unlink(), "config.json is missing"),
    "metadata missing": (lambda f: (f / "metadata.json").unlink(), "metadata.json is missing"),
    "weights missing": (lambda f: (f / "weights.pt").unlink(), "weights.pt is missing"),
    "config bad json": (
        lambda f: (f / "config.json").write_text('{"format": 1,'),
        "config.json is not valid JSON",
    ),
    "metadata bad json": (
        lambda f: (f / "metadata.json").write_bytes(b"\xff\xfe"),
        "metadata.json is not valid JSON",
    ),
    "config not an object": (
        lambda f: (f / "config.json").write_text("[1]"),
        "config.json must hold a JSON object",
    ),
    "format 99": (
        lambda f: edit_json(f / "config.json", lambda c: c.update(format=99)),
        "format 99; this version of prognos reads format 1",
    ),
    "unknown forecaster": (
        lambda f: edit_json(f / "config.json", lambda c: c.update(forecaster="prophet")),
        "unknown forecaster 'prophet'",
    ),
    "config invalid": (_set_config(hidden_size="wide"), "invalid lstm config: hidden_size"),
    "config unknown field": (_set_config(colour="red"), "invalid lstm config: colour"),
    "step invalid": (
        lambda f: edit_json(f / "config.json", lambda c: c.update(step=0)),
        "config.json is invalid: step",
    ),
    "metadata invalid": (
        lambda f: edit_json(f / "metadata.json", lambda m: m.update(series_count=-1)),
        "metadata.json is invalid: series_count",
    ),
    "weights truncated": (_truncate, "weights.pt does not match the checksum"),
    "weights bytes flipped": (_flip_bytes, "weights.pt does not match the checksum"),
    "weights not torch": (_garbage_resealed, "not a readable weights-only state_dict"),
    "weights pickle payload": (_pickle_resealed, "not a readable weights-only state_dict"),
    "weights not a state_dict": (_list_resealed, "does not hold a state_dict"),
    "hidden_size edited": (
        _set_config(hidden_size=16),
        "does not fit the network config.json describes: head.0.bias has shape [8], expected [16]",
    ),
    "config edited": (
        _set_config(predict_batch_size=64),
        "config.json does not match the checksum in metadata.json",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damaged_artifact_is_refused_with_a_clear_message(saved: Path, case: str) -> None:
    corrupt, problem = CORRUPTIONS[case]
    corrupt(saved)

    with pytest.raises(ModelArtifactError) as caught:
        load_model(saved)

    message = str(caught.value)
    assert message.startswith(f"model artifact {saved}: ")
    assert problem in message
    assert "\n" not in message and "Traceback" not in message
    assert "weights_only=False" not in message  # torch's advice, never to be followed here
    error = caught.value  # no chained library traceback behind the message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert error.code == "model_artifact_invalid"
    assert not EXPLODED


def test_shape_mismatch_names_the_tensors_that_differ(saved: Path) -> None:
    _set_config(hidden_size=16)(saved)
    with pytest.raises(ModelArtifactError) as caught:
        load_model(saved)
    # Seven tensors change shape with hidden_size; the message names five and counts the rest.
    assert "head.2.weight has shape [12, 8], expected [12, 16]" in str(caught.value)
    assert str(caught.value).endswith("and 2 more")


def test_a_folder_that_is_not_an_artifact_is_never_replaced(
    tmp_path: Path, lstm: GlobalLSTMForecaster
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")

    with pytest.raises(ModelArtifactError, match=r"refusing to replace .*notes\.txt"):
        save_model(lstm, folder, metadata=make_metadata())
    assert (folder / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_an_unfitted_model_is_not_saved(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFittedError):
        save_model(GlobalLSTMForecaster(TINY), tmp_path / "m", metadata=make_metadata())
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- interrupted


def _failing_save(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full")


def test_interrupted_save_leaves_nothing_under_the_final_name(
    tmp_path: Path, lstm: GlobalLSTMForecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "save", _failing_save)

    with pytest.raises(OSError, match="disk full"):
        save_model(lstm, tmp_path / "node-cpu", metadata=make_metadata())
    assert list(tmp_path.iterdir()) == []  # no final folder and no temporary one


def test_interrupted_overwrite_keeps_the_previous_artifact(
    saved: Path, lstm: GlobalLSTMForecaster, batch: ContextBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {name: (saved / name).read_bytes() for name in os.listdir(saved)}
    monkeypatch.setattr(torch, "save", _failing_save)

    with pytest.raises(OSError, match="disk full"):
        save_model(lstm, saved, metadata=make_metadata("v2"))

    assert {name: (saved / name).read_bytes() for name in os.listdir(saved)} == before
    assert leftovers(saved.parent) == []
    loaded, metadata = load_model(saved)
    assert metadata.version == "2024-06-01.1"
    np.testing.assert_array_equal(loaded.predict(batch).values, lstm.predict(batch).values)


def test_failed_swap_puts_the_previous_artifact_back(
    saved: Path, lstm: GlobalLSTMForecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    rename = os.rename

    def rename_failing_into_place(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(f".{saved.name}.tmp-"):
            raise OSError("interrupted")
        rename(src, dst)

    monkeypatch.setattr(artifacts.os, "rename", rename_failing_into_place)

    with pytest.raises(OSError, match="interrupted"):
        save_model(lstm, saved, metadata=make_metadata("v2"))

    monkeypatch.undo()
    assert load_model(saved)[1].version == "2024-06-01.1"
    assert leftovers(saved.parent) == []


# ------------------------------------------------------------------------------- metadata


def test_metadata_requires_an_ordered_timezone_aware_window() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        ArtifactMetadata(
            name="m",
            version="1",
            train_start=datetime(2024, 1, 1),
            train_end=START,
            series_count=1,
        )
    with pytest.raises(ValidationError, match="train_end is before train_start"):
        ArtifactMetadata(
            name="m", version="1", train_start=START, train_end=START - 60, series_count=1
        )
