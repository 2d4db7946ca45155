"""Backfill: long history for training, read in day-sized blocks and cached as Parquet.

A block that lies wholly in the past is written once (atomically) and served from disk after
that, so a second training run does not touch Prometheus. The cache folder is keyed by the
source, the query and the step: change any of them and the old blocks are not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import TargetSettings
from ingest.chunking import aligned_window, merge_series
from ingest.domain import SeriesData, SeriesKey, Source, Window, query_digest
from ingest.service import pull

log = logging.getLogger(__name__)

BlockCallback = Callable[["BlockDone"], None]
DAY = 86_400


@dataclass(frozen=True, slots=True)
class BlockDone:
    target: str
    window: Window
    points: int
    cached: bool
    index: int
    total: int


@dataclass(frozen=True, slots=True)
class BackfillSummary:
    target: str
    window: Window
    series: list[SeriesData]
    blocks: int
    blocks_from_cache: int

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.series)


def block_seconds(step: int, max_points: int) -> int:
    """A UTC day when it fits one request, else the largest step multiple that does."""
    if DAY % step == 0 and DAY // step <= max_points:
        return DAY
    return step * max_points


def plan_blocks(window: Window, max_points: int) -> list[Window]:
    size = block_seconds(window.step, max_points)
    first = window.start - (window.start % size)
    blocks = []
    start = first
    while start <= window.end:
        blocks.append(Window(start, start + size - window.step, window.step))
        start += size
    return blocks


def cache_folder(cache_dir: Path, source: Source, target: TargetSettings) -> Path:
    fingerprint = hashlib.sha256(
        f"{source.describe()}\x00{query_digest(target)}".encode()
    ).hexdigest()[:16]
    return cache_dir / target.name / fingerprint


def backfill(
    *,
    source: Source,
    target: TargetSettings,
    start: int,
    end: int,
    complete_before: int,
    cache_dir: Path,
    on_block: BlockCallback | None = None,
    refresh: bool = False,
) -> BackfillSummary:
    """History of one target over [start, end]; blocks before `complete_before` are cached."""
    window = aligned_window(start, end, target.step_seconds)
    folder = cache_folder(cache_dir, source, target)
    folder.mkdir(parents=True, exist_ok=True)
    blocks = plan_blocks(window, source.max_points_per_request)
    parts: list[SeriesData] = []
    from_cache = 0
    for index, block in enumerate(blocks):
        path = folder / f"block-{block.start}-{block.end}.parquet"
        cached = None if refresh else _read_block(path)
        if cached is not None:
            from_cache += 1
            series = cached
        else:
            series = pull(source, target, block).series
            if block.end < complete_before:
                _write_block(path, series)
        parts.extend(_clip(s, window) for s in series)
        if on_block is not None:
            points = sum(len(s) for s in series)
            on_block(BlockDone(target.name, block, points, cached is not None, index, len(blocks)))
    merged = [s for s in merge_series(parts) if len(s)]
    return BackfillSummary(target.name, window, merged, len(blocks), from_cache)


def _clip(series: SeriesData, window: Window) -> SeriesData:
    keep = (series.timestamps >= window.start) & (series.timestamps <= window.end)
    return SeriesData(series.key, series.timestamps[keep], series.values[keep])


def _write_block(path: Path, series: list[SeriesData]) -> None:
    # One dictionary entry per series and an index per point: no per-point label text.
    names = pa.array([json.dumps([s.key.target, s.key.labels]) for s in series], pa.string())
    counts = [len(s) for s in series]
    indices = pa.array(np.repeat(np.arange(len(series), dtype=np.int32), counts), pa.int32())
    table = pa.table(
        {
            "series": pa.DictionaryArray.from_arrays(indices, names),
            "ts": pa.array(
                np.concatenate([s.timestamps for s in series]) if series else [], pa.int64()
            ),
            "value": pa.array(
                np.concatenate([s.values for s in series]) if series else [], pa.float64()
            ),
        }
    )
    tmp = path.with_suffix(".tmp")
    # Dictionary pages only for the series column: trying them on timestamps and values (which
    # rarely repeat) doubled the write time; LZ4 writes and reads faster than the default snappy.
    pq.write_table(table, tmp, use_dictionary=["series"], compression="lz4")
    os.replace(tmp, path)  # a reader never sees half a block


def _read_block(path: Path) -> list[SeriesData] | None:
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        column = table.column("series").combine_chunks()
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        codes = column.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = column.dictionary.to_pylist()
        ts = table.column("ts").to_numpy()
        values = table.column("value").to_numpy()
    except Exception as exc:  # a damaged block is fetched again, not trusted
        log.warning("history cache block %s is unreadable (%s); fetching it again", path.name, exc)
        path.unlink(missing_ok=True)
        return None
    if codes.size == 0:
        return []
    # Rows grouped by series, each series' rows in file order (a stable sort).
    order = np.argsort(codes, kind="stable")
    present, starts = np.unique(codes[order], return_index=True)
    series = []
    for code, rows in zip(present.tolist(), np.split(order, starts[1:]), strict=True):
        target, labels = json.loads(names[code])
        key = SeriesKey(target, tuple((k, v) for k, v in labels))
        series.append(SeriesData(key, ts[rows].astype(np.int64), values[rows]))
    return series
