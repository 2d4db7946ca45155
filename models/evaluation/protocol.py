"""A protocol that cannot over-tune: leave-one-folder-out over NAB-layout corpora.

Every candidate setting (a detector configuration, a baseline) gives a score per row of every
file. For each held-out fold, the setting *and* the threshold are chosen on the other folds only
and then applied, unchanged, to the held-out fold; the dev figure pools the held-out folds' NAB
raw scores and normalises them once. Folds with no labelled window count only by their false
alarms per series-day; folders with fewer than `MIN_FOLD_WINDOWS` windows are pooled with the
folders of the same domain (the first dash-separated word of the folder name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.evaluation.nab import (
    PROFILES,
    FloatArray,
    NabFile,
    Profile,
    load_windows,
    normalized,
    optimize_threshold,
    prepare_file,
    read_data_file,
    score_file,
)

MIN_FOLD_WINDOWS = 5


@dataclass(frozen=True, eq=False)
class DevFile:
    """One labelled series of a dev corpus, ready to be scored by any candidate."""

    corpus: str  #: the corpus folder's name, e.g. nab-dev
    relpath: str  #: <folder>/<file>.csv
    fold: str
    timestamps: pd.DatetimeIndex
    values: FloatArray
    nab: NabFile
    point_labels: FloatArray | None  #: experts' 0/1 per row, where the corpus ships them

    @property
    def seconds(self) -> npt.NDArray[np.int64]:
        return np.asarray(
            (self.timestamps - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1),
            dtype=np.int64,
        )

    @property
    def days_scored(self) -> float:
        ts = self.seconds
        return float(ts[-1] - ts[self.nab.probation]) / 86400.0 if len(ts) else 0.0


def load_dev_corpora(roots: Sequence[Path]) -> list[DevFile]:
    """Every `data/<folder>/<file>.csv` of each root with its windows (and point labels when the
    corpus has `labels/point_labels/`), assigned to folds."""
    files: list[DevFile] = []
    window_counts: dict[tuple[str, str], int] = {}
    raw: list[tuple[str, str, pd.DatetimeIndex, FloatArray, NabFile, FloatArray | None]] = []
    for root in roots:
        windows = load_windows(root / "labels")
        for path in sorted((root / "data").glob("*/*.csv")):
            relpath = path.relative_to(root / "data").as_posix()
            timestamps, values = read_data_file(path)
            nab = prepare_file(relpath, timestamps, np.zeros(len(values)), windows.get(relpath, []))
            labels_path = root / "labels" / "point_labels" / relpath
            labels = (
                pd.read_csv(labels_path)["label"].to_numpy(dtype=np.float64)
                if labels_path.exists()
                else None
            )
            folder = relpath.split("/", 1)[0]
            key = (root.name, folder)
            window_counts[key] = window_counts.get(key, 0) + nab.n_windows
            raw.append((root.name, relpath, timestamps, values, nab, labels))
    folds = assign_folds(window_counts)
    for corpus, relpath, timestamps, values, nab, labels in raw:
        fold = folds[(corpus, relpath.split("/", 1)[0])]
        files.append(DevFile(corpus, relpath, fold, timestamps, values, nab, labels))
    return files


def assign_folds(window_counts: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], str]:
    """Fold name per (corpus, folder): the folder itself, or `<corpus>/<domain>*` for folders
    with fewer than `MIN_FOLD_WINDOWS` (but some) windows, pooled with their domain's folders.
    A folder with no window at all stays a fold of its own, scored by false alarms only."""
    out: dict[tuple[str, str], str] = {}
    for (corpus, folder), count in window_counts.items():
        if 0 < count < MIN_FOLD_WINDOWS:
            domain = folder.split("-", 1)[0]
            for (c2, f2), _ in window_counts.items():
                if c2 == corpus and f2.split("-", 1)[0] == domain:
                    out[(c2, f2)] = f"{corpus}/{domain}*"
    for key in window_counts:
        out.setdefault(key, f"{key[0]}/{key[1]}")
    return out


# --------------------------------------------------------------------------- point-adjusted F1


@dataclass(frozen=True)
class F1Parts:
    """What point-adjusted F1 needs of one file at any threshold: each labelled event's best
    score among its first K + 1 grid points and its length, and the scores of label-0 points."""

    event_max: FloatArray
    event_len: npt.NDArray[np.int64]
    normal_scores: FloatArray

    @classmethod
    def merge(cls, parts: Sequence[F1Parts]) -> F1Parts:
        return cls(
            np.concatenate([p.event_max for p in parts]) if parts else np.zeros(0),
            np.concatenate([p.event_len for p in parts]) if parts else np.zeros(0, np.int64),
            np.sort(np.concatenate([p.normal_scores for p in parts])) if parts else np.zeros(0),
        )

    def counts(self, threshold: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(tp, fp, fn) at each threshold (alarm: score >= threshold)."""
        th = np.asarray(threshold, dtype=np.float64).reshape(-1)
        detected = self.event_max[None, :] >= th[:, None]
        tp = (detected * self.event_len[None, :]).sum(axis=1).astype(np.float64)
        fn = float(self.event_len.sum()) - tp
        normal = np.sort(self.normal_scores)
        fp = (len(normal) - np.searchsorted(normal, th, side="left")).astype(np.float64)
        return tp, fp, fn


def f1_parts(f: DevFile, scores: FloatArray) -> F1Parts | None:
    """The KPI literature's point-adjusted rule with a delay K (7 steps below 1 h, else 3), on
    the file's regular grid (a missing point: label 0, no alarm), probation rows left out; None
    for a file without point labels."""
    if f.point_labels is None:
        return None
    ts = f.seconds
    step = max(int(np.min(np.diff(ts))), 1) if len(ts) > 1 else 60
    k_delay = 7 if step < 3600 else 3
    pos = ((ts - ts[0]) // step).astype(np.int64)
    n = int(pos[-1]) + 1
    label = np.zeros(n, dtype=bool)
    grid = np.full(n, -np.inf)
    scored = np.zeros(n, dtype=bool)
    label[pos] = f.point_labels > 0
    grid[pos] = scores
    scored[pos[f.nab.probation :]] = True
    label &= scored
    grid[~scored] = -np.inf
    edges = np.flatnonzero(np.diff(np.r_[0, label.astype(np.int8), 0]))
    starts, ends = edges[0::2], edges[1::2]
    event_max = np.array(
        [grid[a : min(b, a + k_delay + 1)].max() for a, b in zip(starts, ends, strict=True)]
    )
    normal = grid[scored & ~label]
    return F1Parts(event_max.reshape(-1), (ends - starts).astype(np.int64), normal)


def _f1(tp: FloatArray, fp: FloatArray, fn: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def best_f1(files: Sequence[DevFile], scores: Sequence[FloatArray]) -> tuple[float, float]:
    """(threshold, F1) maximising pooled point-adjusted F1 over files that have point labels."""
    return _best_f1([f1_parts(f, s) for f, s in zip(files, scores, strict=True)])


def _best_f1(all_parts: Sequence[F1Parts | None]) -> tuple[float, float]:
    parts = [p for p in all_parts if p is not None]
    if not parts:
        return math.nan, math.nan
    merged = F1Parts.merge(parts)
    candidates = np.unique(np.r_[merged.event_max, np.inf])
    candidates = candidates[np.isfinite(candidates) | (candidates == np.inf)]
    f1 = _f1(*merged.counts(candidates))
    k = int(np.argmax(f1[::-1]))  # ties go to the highest threshold
    k = len(f1) - 1 - k
    return float(candidates[k]), float(f1[k])


# --------------------------------------------------------------------------- leave one folder out


@dataclass(frozen=True)
class FoldResult:
    fold: str
    files: int
    windows: int
    choice: str  #: the candidate chosen on the other folds
    threshold: float
    score: float  #: normalised NAB score of this fold alone (NaN without windows)
    raw: float
    false_alarms_per_day: float


@dataclass(frozen=True)
class LofoResult:
    profile: str
    folds: tuple[FoldResult, ...]
    pooled: float  #: the dev figure: held-out raw scores pooled, normalised once
    f1: float  #: pooled held-out point-adjusted F1 (files with point labels)
    precision: float
    recall: float
    all_folds_choice: str  #: what the whole corpus would choose (the shipped default)
    all_folds_threshold: float

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "pooled_heldout": self.pooled,
            "f1_heldout": self.f1,
            "precision_heldout": self.precision,
            "recall_heldout": self.recall,
            "all_folds_choice": self.all_folds_choice,
            "all_folds_threshold": self.all_folds_threshold,
            "folds": [f.__dict__ for f in self.folds],
        }


def _choose(
    prepared: Mapping[str, Sequence[NabFile]], rows: Sequence[int], profile: Profile
) -> tuple[str, float]:
    best: tuple[float, str, float] | None = None
    for name, files in prepared.items():
        threshold, score = optimize_threshold([files[i] for i in rows], profile)
        if best is None or score > best[0]:
            best = (score, name, threshold)
    assert best is not None
    return best[1], best[2]


def leave_one_folder_out(
    files: Sequence[DevFile],
    candidates: Mapping[str, Sequence[FloatArray]],
    profile: Profile = PROFILES["standard"],
) -> LofoResult:
    """Choose candidate + threshold on the other folds, apply to each fold, pool the held-out."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    prepared = {
        name: [f.nab.with_scores(s) for f, s in zip(files, scores, strict=True)]
        for name, scores in candidates.items()
    }
    folds = sorted({f.fold for f in files})
    results = []
    pooled_raw = 0.0
    pooled_files: list[NabFile] = []
    parts = {
        name: [f1_parts(f, s) for f, s in zip(files, scores, strict=True)]
        for name, scores in candidates.items()
    }
    tp = fp = fn = 0.0
    for fold in folds:
        held = [i for i, f in enumerate(files) if f.fold == fold]
        train = [i for i, f in enumerate(files) if f.fold != fold]
        choice, threshold = _choose(prepared, train, profile)
        held_files = [prepared[choice][i] for i in held]
        windows = sum(f.n_windows for f in held_files)
        raw = sum(score_file(f, profile, threshold).raw_score for f in held_files)
        alarms = sum(
            int((f.scores[f.probation :] >= threshold).sum())
            for f, i in zip(held_files, held, strict=True)
            if files[i].nab.n_windows == 0
        )
        quiet_days = sum(files[i].days_scored for i in held if files[i].nab.n_windows == 0)
        if windows:
            pooled_raw += raw
            pooled_files.extend(held_files)
        # F1: threshold chosen on the training folds' labelled files for the same candidate.
        f1_threshold, _ = _best_f1([parts[choice][i] for i in train])
        held_parts = [p for i in held if (p := parts[choice][i]) is not None]
        if held_parts and math.isfinite(f1_threshold):
            counts = F1Parts.merge(held_parts).counts(np.array([f1_threshold]))
            tp, fp, fn = tp + counts[0][0], fp + counts[1][0], fn + counts[2][0]
        results.append(
            FoldResult(
                fold=fold,
                files=len(held),
                windows=windows,
                choice=choice,
                threshold=threshold,
                score=normalized(raw, held_files, profile) if windows else math.nan,
                raw=raw,
                false_alarms_per_day=alarms / quiet_days if quiet_days else math.nan,
            )
        )
    all_choice, all_threshold = _choose(prepared, list(range(len(files))), profile)
    return LofoResult(
        profile=profile.name,
        folds=tuple(results),
        pooled=normalized(pooled_raw, pooled_files, profile),
        f1=2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        all_folds_choice=all_choice,
        all_folds_threshold=all_threshold,
    )


def in_sample(files: Sequence[DevFile], scores: Sequence[FloatArray], profile: Profile) -> float:
    """The score with the threshold optimised on the same files (NAB's own way; optimistic)."""
    prepared = [f.nab.with_scores(s) for f, s in zip(files, scores, strict=True)]
    return normalized(optimize_threshold(prepared, profile)[1], prepared, profile)
