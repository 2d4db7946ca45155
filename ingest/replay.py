"""A folder of recorded series played back through the same interface as Prometheus.

Layout: one CSV (`timestamp,value`) or Parquet file per series, plus `series.yaml`:

    step: 60s                    # optional; else inferred per file (the median spacing)
    series:
      - file: checkout_cpu.csv
        target: cpu
        labels: {service: checkout, instance: "10.0.0.7:9100"}
    limits:                      # optional: predicted-breach limits per target
      memory: {threshold: 950e6, direction: above}

Reads follow Prometheus' (2.x) range semantics: the value at a grid timestamp t is the newest
sample in [t - lookback_delta, t]; a longer gap stays missing. With `loop`, the timeline
repeats forever so a demo always has "current" data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from core.durations import parse_duration
from core.settings import BreachSettings, TargetSettings
from ingest.domain import FloatArray, IntArray, PullResult, SeriesData, SeriesKey
from ingest.errors import ReplayDataError

LOOKBACK_DELTA = 300
INDEX_FILE = "series.yaml"


@dataclass(slots=True)
class _ReplaySeries:
    key: SeriesKey
    timestamps: IntArray
    values: FloatArray
    step: int


class ReplaySource:
    kind = "replay"

    def __init__(self, folder: Path, *, loop: bool = False, max_points: int = 11_000) -> None:
        self.folder = folder
        self.loop = loop
        self._max_points = max_points
        self._series = _load_folder(folder)
        self._limits = _load_limits(folder)
        starts = [int(s.timestamps[0]) for s in self._series if len(s.timestamps)]
        ends = [int(s.timestamps[-1]) for s in self._series if len(s.timestamps)]
        self.first = min(starts)
        self.last = max(ends)
        step = min(s.step for s in self._series)
        self.period = self.last - self.first + step

    @property
    def max_points_per_request(self) -> int:
        return self._max_points

    def describe(self) -> str:
        mode = "looping" if self.loop else "once"
        return f"replay of {self.folder} ({len(self._series)} series, {mode})"

    def check(self) -> None:
        if not (self.folder / INDEX_FILE).is_file():
            raise ReplayDataError(f"replay folder {self.folder} has lost its {INDEX_FILE}")

    def targets(self, defaults: dict[str, Any] | None = None) -> list[TargetSettings]:
        """One target per distinct `target` name in series.yaml, at the finest step of its files."""
        steps: dict[str, int] = {}
        for series in self._series:
            name = series.key.target
            steps[name] = min(steps.get(name, series.step), series.step)
        targets = []
        for name, step in sorted(steps.items()):
            extra = dict(defaults or {})
            if name in self._limits:
                extra.setdefault("breach", self._limits[name])
            targets.append(
                TargetSettings(
                    name=name, query=f"replay:{name}", step=timedelta(seconds=step), **extra
                )
            )
        return targets

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        grid = np.arange(start, end + 1, step, dtype=np.int64)
        result = PullResult()
        for series in self._series:
            if series.key.target != target.name:
                continue
            file_time = self._file_time(grid)
            idx = np.searchsorted(series.timestamps, file_time, side="right") - 1
            valid = idx >= 0
            safe = np.where(valid, idx, 0)
            age = file_time - series.timestamps[safe]
            valid &= (age >= 0) & (age <= LOOKBACK_DELTA)
            if not valid.any():
                continue  # this series does not exist in this window
            result.series.append(
                SeriesData(series.key, grid[valid], series.values[safe[valid]].astype(np.float64))
            )
        return result

    def _file_time(self, grid: IntArray) -> IntArray:
        if not self.loop:
            return grid
        return self.first + np.mod(grid - self.first, self.period)


def _load_folder(folder: Path) -> list[_ReplaySeries]:
    index = folder / INDEX_FILE
    if not index.is_file():
        raise ReplayDataError(
            f"replay folder {folder} has no {INDEX_FILE}; it lists each file with its target and "
            "labels (see deploy/prognos.example.yaml)"
        )
    try:
        spec = yaml.safe_load(index.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReplayDataError(f"{index}: not valid YAML: {exc}") from None
    entries = spec.get("series") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReplayDataError(f"{index}: needs a non-empty `series:` list")
    default_step = spec.get("step")
    loaded = []
    for number, entry in enumerate(entries):
        where = f"{index}: series[{number}]"
        if not isinstance(entry, dict) or "file" not in entry or "target" not in entry:
            raise ReplayDataError(f"{where}: each entry needs `file` and `target`")
        labels = entry.get("labels") or {}
        if not isinstance(labels, dict):
            raise ReplayDataError(f"{where}: `labels` must be a mapping")
        ts, values = _read_file(folder / str(entry["file"]), where)
        step_value = entry.get("step", default_step)
        try:
            step = (
                int(parse_duration(step_value).total_seconds())
                if step_value is not None
                else _infer_step(ts)
            )
        except ValueError as exc:
            raise ReplayDataError(f"{where}: step: {exc}") from None
        if step < 1:
            raise ReplayDataError(f"{where}: step must be at least 1s")
        key = SeriesKey.of(str(entry["target"]), {str(k): str(v) for k, v in labels.items()})
        loaded.append(_ReplaySeries(key, ts, values, step))
    return loaded


def _load_limits(folder: Path) -> dict[str, BreachSettings]:
    """The optional `limits:` mapping of series.yaml: target name -> breach limit."""
    index = folder / INDEX_FILE
    spec = yaml.safe_load(index.read_text(encoding="utf-8")) or {}
    limits = spec.get("limits") or {}
    if not isinstance(limits, dict):
        raise ReplayDataError(f"{index}: `limits` must map target names to limits")
    out = {}
    for name, limit in limits.items():
        try:
            out[str(name)] = BreachSettings.model_validate(limit)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'limit'}: {e['msg']}" for e in exc.errors()
            )
            raise ReplayDataError(f"{index}: limits.{name}: {problems}") from None
    return out


def _read_file(path: Path, where: str) -> tuple[IntArray, FloatArray]:
    if not path.is_file():
        raise ReplayDataError(f"{where}: file {path.name} does not exist in {path.parent}")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise ReplayDataError(f"{where}: cannot read {path.name}: {exc}") from None
    missing = {"timestamp", "value"} - set(frame.columns)
    if missing:
        raise ReplayDataError(f"{where}: {path.name} lacks column(s) {', '.join(sorted(missing))}")
    ts = _to_epoch(frame["timestamp"], f"{where}: {path.name}")
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(values)
    ts, values = ts[keep], values[keep]
    if ts.size == 0:
        raise ReplayDataError(f"{where}: {path.name} has no numeric values")
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    # A repeated timestamp keeps its last row, as a scrape that overwrote the sample would.
    last = np.ones(ts.size, dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    return ts[last], values[last]


def _to_epoch(column: pd.Series, where: str) -> IntArray:
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64).round().astype(np.int64)
    try:
        parsed = pd.to_datetime(column, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise ReplayDataError(f"{where}: unreadable timestamp ({exc})") from None
    # Resolution-independent (pandas may hold s, ms, us or ns): whole seconds since the epoch.
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def _infer_step(ts: IntArray) -> int:
    if ts.size < 2:
        return 60
    return max(1, int(np.median(np.diff(ts))))
