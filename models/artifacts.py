"""Model artifacts as data: config.json, weights.pt (a weights-only state_dict) and
metadata.json with the others' checksums; a folder written atomically (or the same files kept
elsewhere, e.g. in the database), validated on load so a bad artifact is refused, not run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from torch import nn

from models.errors import ModelArtifactError, ModelInputError, ModelNotFittedError
from models.forecasters.base import Forecaster
from models.forecasters.registry import build

FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "metadata.json"
ARTIFACT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE})
SHA256 = r"^[0-9a-f]{64}$"

Fail = Callable[[str], ModelArtifactError]


def _now() -> datetime:
    return datetime.now(UTC)


def _prognos_version() -> str:
    try:
        return package_version("prognos")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


class ArtifactMetadata(BaseModel):
    """What a model is and how it was made. The caller fills in the training facts; `save_model`
    stamps the versions of this environment and the checksums of the files it writes."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    created_at: AwareDatetime = Field(default_factory=_now)
    train_start: AwareDatetime  # epoch seconds are accepted and read as UTC
    train_end: AwareDatetime
    series_count: int = Field(ge=0)
    targets: tuple[str, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    prognos_version: str = Field(default_factory=_prognos_version)
    torch_version: str = Field(default_factory=lambda: str(torch.__version__))
    python_version: str = Field(default_factory=platform.python_version)
    config_sha256: str | None = Field(default=None, pattern=SHA256)
    weights_sha256: str | None = Field(
        default=None, pattern=SHA256
    )  # None: the forecaster has no weights (a baseline)
    #: The anomaly detector's settings served with this version (models.detector); None in
    #: artifacts made before detectors were saved with their model: those serve the defaults.
    detector: dict[str, Any] | None = None

    @field_validator("created_at", "train_start", "train_end")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("train_end")
    @classmethod
    def _window_in_order(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("train_start")
        if start is not None and value < start:
            raise ValueError("train_end is before train_start")
        return value


class _ConfigFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    forecaster: str
    step: int = Field(gt=0)
    config: dict[str, Any]


# ---------------------------------------------------------------------------------------- save


def save_model(forecaster: Forecaster, folder: Path, *, metadata: ArtifactMetadata) -> Path:
    """Write `forecaster` to `folder` atomically and return the folder.

    Files go to a hidden sibling folder, are fsynced, and the folder is renamed into place, so
    the final name holds either the previous artifact or the complete new one, never a part.
    An existing folder is replaced only if it holds nothing but artifact files.
    """
    folder = Path(os.path.abspath(folder))  # normalised, but a symlink stays a symlink
    if not folder.name:
        raise ModelArtifactError(f"cannot save a model as {folder}", detail={"folder": str(folder)})
    files = artifact_files(forecaster, metadata=metadata)
    _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex}"
    os.mkdir(temp)  # not mkdtemp: that would make the artifact readable by its owner only
    try:
        for name, data in files.items():
            _write(temp / name, data)
        _fsync_dir(temp)
        _publish(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def artifact_files(forecaster: Forecaster, *, metadata: ArtifactMetadata) -> dict[str, bytes]:
    """The artifact's files by name, as `save_model` writes them and `load_files` reads them:
    config.json, weights.pt (if the forecaster has weights) and metadata.json, stamped with
    this environment's versions and the other files' checksums (metadata last)."""
    if forecaster.step is None or not forecaster.fitted:
        raise ModelNotFittedError(f"{forecaster.name} must be fitted before it is saved")
    files = {
        CONFIG_FILE: _json_bytes(
            {
                "format": FORMAT,
                "forecaster": forecaster.name,
                "step": forecaster.step,
                "config": forecaster.config.model_dump(mode="json"),
            }
        )
    }
    net = _network(forecaster)
    if net is not None:
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        files[WEIGHTS_FILE] = buffer.getvalue()
    stamped = metadata.model_copy(
        update={
            "prognos_version": _prognos_version(),
            "torch_version": str(torch.__version__),
            "python_version": platform.python_version(),
            "config_sha256": _sha256(files[CONFIG_FILE]),
            "weights_sha256": _sha256(files[WEIGHTS_FILE]) if net is not None else None,
        }
    )
    files[METADATA_FILE] = stamped.model_dump_json(indent=2).encode() + b"\n"
    return files


def _network(forecaster: Forecaster) -> nn.Module | None:
    net = getattr(forecaster, "net", None)
    return net if isinstance(net, nn.Module) else None


def _json_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, allow_nan=False).encode() + b"\n"


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace anything that is not (or might hold more than) a model artifact."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ModelArtifactError(
            f"refusing to save a model to {folder}: it exists and is not a folder",
            detail={"folder": str(folder)},
        )
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in ARTIFACT_FILES)
        if foreign:
            raise ModelArtifactError(
                f"refusing to replace {folder}: it holds files that are not part of a model "
                f"artifact ({', '.join(foreign[:5])})",
                detail={"folder": str(folder)},
            )


def _publish(temp: Path, folder: Path) -> None:
    """Rename the finished folder into place; an old artifact is moved aside, then removed."""
    _check_replaceable(folder)
    if not folder.exists():
        os.rename(temp, folder)
    else:
        # POSIX cannot rename a folder over a non-empty one, so the old one steps aside first;
        # if the second rename fails the old artifact goes back under its name.
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex}"
        os.rename(folder, old)
        try:
            os.rename(temp, folder)
        except BaseException:
            os.rename(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(folder.parent)


# ---------------------------------------------------------------------------------------- load


def load_model(folder: Path) -> tuple[Forecaster, ArtifactMetadata]:
    """Read an artifact folder back into a fitted forecaster and its metadata.

    Raises ModelArtifactError, naming the folder and the problem, for a missing or corrupt
    file, an unknown format or forecaster, an invalid config, weights that fail their checksum
    or do not fit the network the config describes, or a config.json edited after saving.
    """
    folder = Path(folder)
    fail = _failure(f"model artifact {folder}", {"folder": str(folder)})
    if not folder.exists():
        raise fail("no such folder")
    if not folder.is_dir():
        raise fail("not a folder")
    return _load(lambda name: _read(folder, name, fail), (folder / WEIGHTS_FILE).exists(), fail)


def load_files(files: Mapping[str, bytes], *, where: str) -> tuple[Forecaster, ArtifactMetadata]:
    """`load_model` over an artifact's files held elsewhere (e.g. in the database), by name;
    the same checks, with errors naming `where`."""
    fail = _failure(f"model artifact {where}", {"artifact": where})

    def read(name: str) -> bytes:
        if name not in files:
            raise fail(f"{name} is missing")
        return files[name]

    return _load(read, WEIGHTS_FILE in files, fail)


def _failure(what: str, detail: dict[str, object]) -> Fail:
    def fail(problem: str) -> ModelArtifactError:
        return ModelArtifactError(f"{what}: {problem}", detail=detail)

    return fail


def _load(
    read: Callable[[str], bytes], has_weights: bool, fail: Fail
) -> tuple[Forecaster, ArtifactMetadata]:
    config_bytes = read(CONFIG_FILE)
    raw_config = _parse_json(CONFIG_FILE, config_bytes, fail)
    if raw_config.get("format") != FORMAT:
        raise fail(
            f"{CONFIG_FILE} has format {raw_config.get('format')!r}; "
            f"this version of prognos reads format {FORMAT}"
        )
    try:
        envelope = _ConfigFile.model_validate(raw_config)
    except ValidationError as exc:
        raise fail(f"{CONFIG_FILE} is invalid: {_summary(exc)}") from None

    raw_metadata = _parse_json(METADATA_FILE, read(METADATA_FILE), fail)
    try:
        metadata = ArtifactMetadata.model_validate(raw_metadata)
    except ValidationError as exc:
        raise fail(f"{METADATA_FILE} is invalid: {_summary(exc)}") from None

    try:
        # Building a network seeds torch's global generator; loading must not change it.
        with torch.random.fork_rng(devices=[]):
            forecaster = build(envelope.forecaster, envelope.config)
    except ModelInputError as exc:  # unknown forecaster, or a config it does not accept
        raise fail(f"{CONFIG_FILE}: {exc.message}") from None

    net = _network(forecaster)
    if net is None:
        if has_weights or metadata.weights_sha256 is not None:
            raise fail(f"has weights, but a {forecaster.name} forecaster has none to load")
    else:
        _load_weights(net, read(WEIGHTS_FILE), metadata, fail)

    # Checked last so that an edit which breaks the weights is reported as that (more useful);
    # any other edit still makes the metadata (metrics, window) describe a different model.
    if metadata.config_sha256 != _sha256(config_bytes):
        raise fail(
            f"{CONFIG_FILE} does not match the checksum in {METADATA_FILE} (changed after saving)"
        )

    forecaster.mark_fitted(envelope.step)
    return forecaster, metadata


def _read(folder: Path, name: str, fail: Fail) -> bytes:
    path = folder / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise fail(f"{name} is missing") from None
    except OSError as exc:
        raise fail(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None


def _parse_json(name: str, data: bytes, fail: Fail) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise fail(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise fail(f"{name} is not valid JSON (not UTF-8 text)") from None
    if not isinstance(document, dict):
        raise fail(f"{name} must hold a JSON object, not {type(document).__name__}")
    return document


def _load_weights(net: nn.Module, data: bytes, metadata: ArtifactMetadata, fail: Fail) -> None:
    if metadata.weights_sha256 is None:
        raise fail(f"{METADATA_FILE} has no checksum for {WEIGHTS_FILE}")
    if _sha256(data) != metadata.weights_sha256:
        raise fail(
            f"{WEIGHTS_FILE} does not match the checksum in {METADATA_FILE} "
            "(truncated, corrupted or changed after saving)"
        )
    try:
        # The bytes just checked are the bytes loaded: no second read of the file.
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        # torch's own message advises weights_only=False, which must never be followed here.
        raise fail(
            f"{WEIGHTS_FILE} is not a readable weights-only state_dict ({type(exc).__name__})"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise fail(f"{WEIGHTS_FILE} does not hold a state_dict of named tensors")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise fail(
            f"{WEIGHTS_FILE} does not fit the network {CONFIG_FILE} describes: "
            + _state_mismatch(net.state_dict(), state)
        ) from None
    net.eval()


def _state_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any]) -> str:
    parts = [
        f"{key} has shape {list(got[key].shape)}, expected {list(expected[key].shape)}"
        for key in sorted(expected.keys() & got.keys())
        if got[key].shape != expected[key].shape
    ]
    missing = sorted(expected.keys() - got.keys())
    unexpected = sorted(got.keys() - expected.keys())
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:5])}")
    if len(parts) > 5:
        parts = [*parts[:5], f"and {len(parts) - 5} more"]
    return "; ".join(parts) or "tensors that cannot be copied into it"


def _summary(exc: ValidationError) -> str:
    """Pydantic's errors as `field: message; ...`, without the offending values."""
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or 'document'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return "; ".join(parts[:5])
