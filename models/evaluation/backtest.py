"""NAB backtest: each data file is a fresh deployment scored row by row, using only its own past.

Each file goes through `models.detector.Detector`, the object the daemon's cycle scores with,
with the same configuration; one output row per input row, in the input's order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.detector import Detector, DetectorConfig, DetectorOutput, unit_score
from models.evaluation.nab import (
    FloatArray,
    label_rows,
    load_windows,
    read_data_file,
    write_results,
)

EPOCH = np.datetime64("1970-01-01")


@dataclass(frozen=True, slots=True)
class FileResult:
    relpath: str
    rows: int
    seconds: float
    path: Path


def regular_grid(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray]:
    """(grid values with NaN gaps, step, start, bucket of each row); the last row wins a bucket."""
    unique = np.unique(ts)
    step = int(np.median(np.diff(unique))) if len(unique) > 1 else 60
    step = max(step, 1)
    start = int(ts[0])
    bucket = np.rint((ts - start) / step).astype(np.int64)
    bucket = np.maximum.accumulate(np.maximum(bucket, 0))  # never step back in time
    grid = np.full(int(bucket[-1]) + 1, np.nan)
    grid[bucket] = values  # later rows overwrite earlier ones in the same bucket
    return grid, step, start, bucket


def run_detector(
    ts: np.ndarray, values: np.ndarray, config: DetectorConfig | None = None
) -> DetectorOutput:
    """The service's detector over a whole file as one catch-up (finite rows only). A timestamp
    that repeats or steps back is moved to one second after the row before it: the detector is
    row-ordered, and its time-decayed memories (fatigue, range) keep their meaning."""
    ts = np.asarray(ts, dtype=np.int64)
    if len(ts) > 1 and (np.diff(ts) <= 0).any():
        rows = np.arange(len(ts), dtype=np.int64)
        ts = np.maximum.accumulate(ts - rows) + rows
    return Detector(config).update(None, ts, np.asarray(values, dtype=np.float64))


def detect(ts: np.ndarray, values: np.ndarray, config: DetectorConfig | None = None) -> np.ndarray:
    """NAB anomaly scores in [0, 1], one per row, each from the rows up to and including it: the
    service's detector run over the file as one catch-up, its new-high scores squashed."""
    return row_scores(values, run_detector(ts, values, config).novel())


def row_scores(values: np.ndarray, novel: np.ndarray) -> np.ndarray:
    """One NAB score per row from z-like scores of the finite rows (0 where a value is missing)."""
    values = np.asarray(values, dtype=np.float64)
    scores = np.zeros(len(values))
    scores[np.isfinite(values)] = unit_score(novel)
    return scores


def _score_file(
    args: tuple[str, npt.NDArray[np.int64], FloatArray, dict[str, Any]],
) -> tuple[str, FloatArray, float]:
    """One file's scores: pure computation on the arrays it is given (no file read or
    written), so that it runs in any process of any host."""
    import time

    relpath, ts, values, config_dict = args
    started = time.perf_counter()
    scores = detect(ts, values, DetectorConfig.model_validate(config_dict))
    return relpath, scores, time.perf_counter() - started


#: Maps a function over jobs in worker processes, yielding the results in the jobs' order:
#: `(function, jobs, processes) -> results`, `processes` None for every CPU there is. The
#: default is a local process pool; `engine: ray` passes one that runs each job as a Ray task
#: on any node of the cluster (prognos/engine/ray_tasks.py).
Mapper = Callable[[Callable[[Any], Any], Sequence[Any], int | None], Iterable[Any]]


def local_mapper(
    function: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None
) -> Iterator[Any]:
    with ProcessPoolExecutor(max_workers=processes or os.cpu_count() or 1) as pool:
        yield from pool.map(function, jobs)


def run_nab_backtest(
    root: Path,
    out_dir: Path,
    *,
    config: DetectorConfig | None = None,
    detector: str = "prognos",
    folders: Sequence[str] | None = None,
    workers: int | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    mapper: Mapper = local_mapper,
) -> list[FileResult]:
    """Run the detector over every `<root>/data/<folder>/<file>.csv`; write NAB results files.
    This process reads the files and writes the results; the scoring runs in `workers`
    processes (default: every CPU there is) through `mapper`."""
    config = config or DetectorConfig()
    data_dir = root / "data"
    relpaths = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if folders:
        relpaths = [r for r in relpaths if r.split("/", 1)[0] in set(folders)]
    labels = root / "labels"
    windows = load_windows(labels) if labels.exists() else {}
    files = {r: read_data_file(data_dir / r) for r in relpaths}
    config_dict = config.model_dump(mode="json")
    jobs = [
        (r, np.asarray((t - EPOCH) // np.timedelta64(1, "s"), dtype=np.int64), v, config_dict)
        for r, (t, v) in files.items()
    ]
    results: list[FileResult] = []
    for relpath, scores, seconds in mapper(_score_file, jobs, workers):
        timestamps, values = files[relpath]
        path = write_results(
            out_dir,
            detector,
            relpath,
            timestamps,
            values,
            scores,
            label_rows(timestamps, windows.get(relpath, [])),
        )
        result = FileResult(relpath, len(values), seconds, path)
        results.append(result)
        if on_file is not None:
            on_file(result)
    return results
