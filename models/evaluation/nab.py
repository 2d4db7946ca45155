"""NAB (Numenta Anomaly Benchmark) scoring ported from numenta/NAB's sweeper, optimizer and runner:
windows, probation, scaled sigmoid, one corpus-wide threshold sweep per profile, normalisation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import ErrorKind, PrognosError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Window = tuple[pd.Timestamp, pd.Timestamp]

PROBATION_PERCENT = 0.15
#: NAB's sweep starts above every score ("threshold 1.1"): no row alarms, every window is missed.
NO_ALARM_THRESHOLD = 1.1
#: The constant score of NAB's null detector, whose optimised total is the normalisation baseline.
NULL_DETECTOR_SCORE = 0.5
WINDOWS_FILE = "combined_windows.json"
RESULTS_COLUMNS = ("timestamp", "value", "anomaly_score", "label")


class NabDataError(PrognosError):
    """Labels, data or results files that cannot be scored the NAB way."""

    code = "nab_data_invalid"
    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class Profile:
    """A NAB application profile (cost matrix). ``a_fp`` is a penalty: a far-off alarm costs it."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: Mapping[str, Profile] = {
    "standard": Profile("standard", a_tp=1.0, a_fp=0.11, a_fn=1.0),
    "reward_low_fp": Profile("reward_low_fp", a_tp=1.0, a_fp=0.22, a_fn=1.0),
    "reward_low_fn": Profile("reward_low_fn", a_tp=1.0, a_fp=0.11, a_fn=2.0),
}


# --------------------------------------------------------------------------- scoring primitives


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows ``[0, result)`` of a file are not scored: min(floor(15 % of the rows), 750)."""
    # nab/util.py getProbationPeriod: min(floor(p * n), p * 5000), compared as `i >= length`.
    return int(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(y: npt.ArrayLike) -> FloatArray:
    """NAB's scaled sigmoid 2/(1 + e^(5y)) - 1, with -1 for y > 3 (nab/sweeper.py scaledSigmoid)."""
    arr = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):
        val = 2.0 * (1.0 / (1.0 + np.exp(5.0 * arr))) - 1.0
    return np.asarray(np.where(arr > 3.0, -1.0, val), dtype=np.float64)


#: sigma(-1): a true positive at a window's first row is worth exactly A_TP.
MAX_TP = float(scaled_sigmoid(-1.0))


@dataclass(frozen=True, eq=False)
class NabFile:
    """One data file ready to score: its detector scores plus NAB's per-row position terms."""

    name: str
    scores: FloatArray
    probation: int
    #: Index of the window holding each row, -1 for rows outside every window.
    window: IntArray
    #: (first row, last row) of each window, in file order.
    bounds: tuple[tuple[int, int], ...]
    #: sigma(-(r - i + 1) / w) for rows in a window (r: its last row, w: its width), else 0.
    in_window_sigma: FloatArray
    #: sigma(|r_prev - i| / (w_prev - 1)) for rows outside windows, -1 before the first window.
    outside_sigma: FloatArray

    @property
    def n_rows(self) -> int:
        return len(self.scores)

    @property
    def n_windows(self) -> int:
        return len(self.bounds)

    def row_weights(self, profile: Profile) -> FloatArray:
        """NAB's sweep score of each row if it alarmed (before first-alarm-per-window)."""
        return np.where(
            self.window >= 0,
            self.in_window_sigma * profile.a_tp / MAX_TP,
            self.outside_sigma * profile.a_fp,
        )

    def with_scores(self, scores: npt.ArrayLike) -> NabFile:
        """The same file and windows with other anomaly scores."""
        arr = _check_scores(scores, self.name, self.n_rows)
        return NabFile(
            self.name,
            arr,
            self.probation,
            self.window,
            self.bounds,
            self.in_window_sigma,
            self.outside_sigma,
        )


def _check_scores(scores: npt.ArrayLike, name: str, n_rows: int) -> FloatArray:
    try:
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise NabDataError(f"{name}: anomaly scores are not numbers") from exc
    if len(arr) != n_rows:
        raise NabDataError(
            f"{name}: {len(arr)} anomaly scores for {n_rows} rows",
            detail={"file": name, "scores": len(arr), "rows": n_rows},
        )
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise NabDataError(
            f"{name}: anomaly_score must be in [0, 1]; row {row} has {arr[row]!r}",
            detail={"file": name, "row": row},
        )
    return arr


def _to_datetime_index(timestamps: Any, name: str) -> pd.DatetimeIndex:
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(timestamps))
    except (TypeError, ValueError) as exc:
        raise NabDataError(f"{name}: timestamps cannot be parsed: {exc}") from exc
    if idx.hasnans:
        raise NabDataError(f"{name}: a timestamp is missing")
    return idx


def window_rows(
    timestamps: Any, windows: Sequence[tuple[Any, Any]], name: str = "file"
) -> list[tuple[int, int]]:
    """(first row, last row) of each window, found the way NAB's labeler and sweeper find them.

    Each window bound must match exactly one row's timestamp (nab/labeler.py CorpusLabel), and
    the windows must come in row order without overlapping (the sweeper enters them in turn).
    """
    ts = _to_datetime_index(timestamps, name)
    values = ts.to_numpy()
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        pair: list[int] = []
        for bound in (start, end):
            hits = np.flatnonzero(values == pd.Timestamp(bound).to_datetime64())
            if len(hits) != 1:
                raise NabDataError(
                    f"{name}: window bound {bound} matches {len(hits)} rows; NAB needs exactly one",
                    detail={"file": name, "bound": str(bound), "matches": len(hits)},
                )
            pair.append(int(hits[0]))
        first, last = pair
        if last < first or (rows and first <= rows[-1][1]):
            raise NabDataError(
                f"{name}: window [{start}, {end}] is reversed, out of order or overlaps another",
                detail={"file": name, "window": [str(start), str(end)]},
            )
        rows.append((first, last))
    return rows


def prepare_file(
    name: str,
    timestamps: Any,
    scores: npt.ArrayLike,
    windows: Sequence[tuple[Any, Any]],
    *,
    probation_percent: float = PROBATION_PERCENT,
) -> NabFile:
    """Compute window membership, probation and NAB's position terms for one file's rows."""
    ts = _to_datetime_index(timestamps, name)
    n = len(ts)
    arr = _check_scores(scores, name, n)
    bounds = window_rows(ts, windows, name)
    idx = np.arange(n, dtype=np.int64)

    window = np.full(n, -1, dtype=np.int64)
    in_sigma = np.zeros(n, dtype=np.float64)
    for k, (first, last) in enumerate(bounds):
        window[first : last + 1] = k
        width = float(last - first + 1)
        rows = idx[first : last + 1]
        # nab/sweeper.py calcSweepScore: positionInWindow = -(r - i + 1) / w
        in_sigma[first : last + 1] = scaled_sigmoid(-(last - rows + 1) / width)

    out_sigma = np.zeros(n, dtype=np.float64)
    outside = window < 0
    ends = np.array([last for _, last in bounds], dtype=np.int64)
    widths = np.array([last - first + 1 for first, last in bounds], dtype=np.float64)
    prev = np.searchsorted(ends, idx, side="left") - 1  # last window ending before each row
    before_any = outside & (prev < 0)
    after = outside & (prev >= 0)
    out_sigma[before_any] = -1.0  # no preceding window: as if infinitely far, weight -A_FP
    if after.any():
        prev_after = prev[after]
        denom = widths[prev_after] - 1.0
        if (denom == 0.0).any():
            # NAB divides by (w_prev - 1) and raises ZeroDivisionError here.
            k = int(prev_after[denom == 0.0][0])
            raise NabDataError(
                f"{name}: window {k} spans one row and rows follow it; NAB's false-positive "
                "weight divides by (width - 1)",
                detail={"file": name, "window": k},
            )
        y = np.abs(ends[prev_after] - idx[after]) / denom
        out_sigma[after] = scaled_sigmoid(y)

    return NabFile(
        name=name,
        scores=arr,
        probation=probation_length(n, probation_percent),
        window=window,
        bounds=tuple(bounds),
        in_window_sigma=in_sigma,
        outside_sigma=out_sigma,
    )


def label_rows(timestamps: Any, windows: Sequence[tuple[Any, Any]]) -> IntArray:
    """0/1 label per row: 1 where start <= timestamp <= end for a window (nab/labeler.py)."""
    ts = _to_datetime_index(timestamps, "labels")
    labels = np.zeros(len(ts), dtype=np.int64)
    for start, end in windows:
        inside = (ts >= pd.Timestamp(start)) & (ts <= pd.Timestamp(end))
        labels[np.asarray(inside, dtype=bool)] = 1
    return labels


# --------------------------------------------------------------------------- threshold sweep


@dataclass(frozen=True)
class ThresholdSweep:
    """NAB's ``calcScoreByThreshold`` over a whole corpus: one row per candidate threshold.

    ``thresholds`` descend from 1.1 (no alarm) through every distinct score of a scored row;
    row k holds the corpus score and NAB's row counts when alarms are rows with score >= it.
    """

    thresholds: FloatArray
    scores: FloatArray
    tp: IntArray
    tn: IntArray
    fp: IntArray
    fn: IntArray

    def best(self) -> int:
        """Index of the highest score; ties go to the highest threshold (NAB's stable sort)."""
        return int(np.argmax(self.scores))


def sweep_thresholds(files: Sequence[NabFile], profile: Profile) -> ThresholdSweep:
    """Score every candidate threshold at once, as NAB's Sweeper does, with numpy.

    Rows in probation are dropped; the rest, from all files, are sorted by score, descending.
    Lowering the threshold past a row adds its weight if it lies outside every window, or raises
    its window's part from -A_FN to the best (earliest) alarm seen so far in that window.
    """
    scores_parts: list[FloatArray] = []
    window_parts: list[IntArray] = []
    weight_parts: list[FloatArray] = []
    offset = 0
    for f in files:
        start = f.probation
        win = f.window[start:]
        scores_parts.append(f.scores[start:])
        window_parts.append(np.where(win >= 0, win + offset, -1))
        weight_parts.append(f.row_weights(profile)[start:])
        offset += f.n_windows
    if scores_parts:
        s = np.concatenate(scores_parts)
        g = np.concatenate(window_parts)
        v = np.concatenate(weight_parts)
    else:
        s, g, v = np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)

    order = np.argsort(-s, kind="stable")
    s, g, v = s[order], g[order], v[order]
    in_win = g >= 0
    n_scored_windows = len(np.unique(g[in_win]))
    base = -profile.a_fn * n_scored_windows  # every window starts as a false negative

    # Two accumulators, as NAB keeps scoreParts["fp"] apart from the windows' parts: the false
    # positives' running sum then adds the same terms in the same order as NAB's.
    fp_sum = np.cumsum(np.where(in_win, 0.0, v))
    win_delta = np.zeros(len(s))
    win_pos = np.flatnonzero(in_win)
    if len(win_pos):
        groups = g[win_pos]
        run_max = pd.Series(v[win_pos]).groupby(groups).cummax().to_numpy(dtype=np.float64)
        part = np.maximum(run_max, -profile.a_fn)  # NAB: max(scoreParts[window], sweepScore)
        before = (
            pd.Series(part)
            .groupby(groups)
            .shift(1)
            .fillna(-profile.a_fn)
            .to_numpy(dtype=np.float64)
        )
        win_delta[win_pos] = part - before  # exactly 0.0 when a later alarm changes nothing
    total = fp_sum + (base + np.cumsum(win_delta))

    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, dtype=int)
    tp = np.cumsum(in_win, dtype=np.int64)
    fp = np.cumsum(~in_win, dtype=np.int64)
    n_in, n_out = int(in_win.sum()), int((~in_win).sum())
    return ThresholdSweep(
        thresholds=np.r_[NO_ALARM_THRESHOLD, s[ends]].astype(np.float64),
        scores=np.r_[base, total[ends]].astype(np.float64),
        tp=np.r_[0, tp[ends]].astype(np.int64),
        tn=np.r_[n_out, n_out - fp[ends]].astype(np.int64),
        fp=np.r_[0, fp[ends]].astype(np.int64),
        fn=np.r_[n_in, n_in - tp[ends]].astype(np.int64),
    )


# --------------------------------------------------------------------------- per-file and corpus


@dataclass(frozen=True)
class FileScore:
    """One file's NAB score at a threshold. tp/tn/fp/fn count scored rows, as NAB's do."""

    name: str
    raw_score: float
    tp: int
    tn: int
    fp: int
    fn: int
    windows: int
    windows_detected: int
    windows_missed: int

    @property
    def windows_in_probation(self) -> int:
        """Windows with no row after the probation period: NAB neither rewards nor charges them."""
        return self.windows - self.windows_detected - self.windows_missed


def score_file(f: NabFile, profile: Profile, threshold: float) -> FileScore:
    """NAB's ``scoreDataSet`` for one file: an alarm is a scored row with score >= threshold."""
    start = f.probation
    alarm = f.scores[start:] >= threshold
    win = f.window[start:]
    v = f.row_weights(profile)[start:]
    in_win = win >= 0
    raw = float(np.sum(v[alarm & ~in_win]))
    detected = missed = 0
    for k in np.unique(win[in_win]):
        hits = alarm & (win == k)
        if hits.any():
            # Weights fall along a window, so the max is the first alarm's: only it counts.
            raw += max(-profile.a_fn, float(v[hits].max()))
            detected += 1
        else:
            raw -= profile.a_fn
            missed += 1
    return FileScore(
        name=f.name,
        raw_score=raw,
        tp=int((alarm & in_win).sum()),
        tn=int((~alarm & ~in_win).sum()),
        fp=int((alarm & ~in_win).sum()),
        fn=int((~alarm & in_win).sum()),
        windows=f.n_windows,
        windows_detected=detected,
        windows_missed=missed,
    )


@dataclass(frozen=True)
class ProfileScore:
    """A detector's result under one profile at the corpus-optimal threshold."""

    profile: Profile
    threshold: float
    raw_score: float
    normalized_score: float
    null_score: float
    perfect_score: float
    files: tuple[FileScore, ...]

    @property
    def tp(self) -> int:
        return sum(f.tp for f in self.files)

    @property
    def tn(self) -> int:
        return sum(f.tn for f in self.files)

    @property
    def fp(self) -> int:
        return sum(f.fp for f in self.files)

    @property
    def fn(self) -> int:
        return sum(f.fn for f in self.files)

    @property
    def windows_detected(self) -> int:
        return sum(f.windows_detected for f in self.files)

    @property
    def windows_missed(self) -> int:
        return sum(f.windows_missed for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": {
                "a_tp": self.profile.a_tp,
                "a_fp": self.profile.a_fp,
                "a_fn": self.profile.a_fn,
            },
            "threshold": self.threshold,
            "raw_score": self.raw_score,
            "normalized_score": self.normalized_score,
            "null_score": self.null_score,
            "perfect_score": self.perfect_score,
            "tp": self.tp,
            "tn": self.tn,
            "fp": self.fp,
            "fn": self.fn,
            "windows_detected": self.windows_detected,
            "windows_missed": self.windows_missed,
            "files": {
                f.name: {
                    "raw_score": f.raw_score,
                    "tp": f.tp,
                    "tn": f.tn,
                    "fp": f.fp,
                    "fn": f.fn,
                    "windows": f.windows,
                    "windows_detected": f.windows_detected,
                    "windows_missed": f.windows_missed,
                }
                for f in self.files
            },
        }


@dataclass(frozen=True)
class NabReport:
    """Scores of one detector on a corpus under each profile."""

    detector: str
    n_files: int
    n_rows: int
    n_windows: int
    profiles: Mapping[str, ProfileScore]

    def to_json(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "files": self.n_files,
            "rows": self.n_rows,
            "windows": self.n_windows,
            "profiles": {name: p.to_json() for name, p in self.profiles.items()},
        }


def optimize_threshold(files: Sequence[NabFile], profile: Profile) -> tuple[float, float]:
    """(threshold, corpus score) maximising the profile's score (nab/optimizer.py)."""
    sweep = sweep_thresholds(files, profile)
    k = sweep.best()
    return float(sweep.thresholds[k]), float(sweep.scores[k])


def _score_at_best(files: Sequence[NabFile], profile: Profile) -> tuple[float, list[FileScore]]:
    threshold, _ = optimize_threshold(files, profile)
    return threshold, [score_file(f, profile, threshold) for f in files]


def null_score(files: Sequence[NabFile], profile: Profile) -> float:
    """S_null: the optimised total of NAB's null detector (a constant score) on `files`."""
    null_files = [f.with_scores(np.full(f.n_rows, NULL_DETECTOR_SCORE)) for f in files]
    return sum(fs.raw_score for fs in _score_at_best(null_files, profile)[1])


def normalized(raw: float, files: Sequence[NabFile], profile: Profile) -> float:
    """NAB's 100 * (S - S_null) / (S_perfect - S_null) for `files` (NaN with no window)."""
    null = null_score(files, profile)
    perfect = sum(f.n_windows for f in files) * profile.a_tp
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else math.nan


def score_files(
    files: Sequence[NabFile],
    detector: str = "detector",
    profiles: Sequence[Profile] | None = None,
) -> NabReport:
    """Optimise one threshold per profile over all files, score each file, and normalise.

    As nab/runner.py normalize(): 100 * (S - S_null) / (S_perfect - S_null), where S_null is the
    optimised total of NAB's null detector (a constant score) and S_perfect = A_TP * windows.
    """
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise NabDataError("the same file is listed twice")
    n_windows = sum(f.n_windows for f in files)
    results: dict[str, ProfileScore] = {}
    for profile in profiles if profiles is not None else PROFILES.values():
        threshold, per_file = _score_at_best(files, profile)
        raw = 0.0
        for fs in per_file:
            raw += fs.raw_score
        null = null_score(files, profile)
        perfect = n_windows * profile.a_tp
        if perfect == null:
            raise NabDataError(
                "the corpus has no scorable anomaly window: the normalised score is undefined"
            )
        results[profile.name] = ProfileScore(
            profile=profile,
            threshold=threshold,
            raw_score=raw,
            normalized_score=100.0 * (raw - null) / (perfect - null),
            null_score=null,
            perfect_score=perfect,
            files=tuple(per_file),
        )
    return NabReport(
        detector=detector,
        n_files=len(files),
        n_rows=sum(f.n_rows for f in files),
        n_windows=n_windows,
        profiles=results,
    )


# --------------------------------------------------------------------------- files on disk


def load_windows(labels: str | Path) -> dict[str, list[Window]]:
    """Windows per data file from ``combined_windows.json`` (a labels folder or the file)."""
    path = Path(labels)
    if path.is_dir():
        path = path / WINDOWS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NabDataError(f"no labels file at {path}") from exc
    except (OSError, ValueError) as exc:
        raise NabDataError(f"{path}: unreadable labels file: {exc}") from exc
    if not isinstance(raw, dict):
        raise NabDataError(f"{path}: expected an object mapping files to windows")
    out: dict[str, list[Window]] = {}
    for relpath, windows in raw.items():
        if not isinstance(windows, list):
            raise NabDataError(f"{path}: windows of {relpath} are not a list")
        parsed: list[Window] = []
        for pair in windows:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise NabDataError(f"{path}: {relpath}: a window is not a [start, end] pair")
            try:
                start, end = pd.Timestamp(pair[0]), pd.Timestamp(pair[1])
            except (TypeError, ValueError) as exc:
                raise NabDataError(f"{path}: {relpath}: bad window timestamp: {exc}") from exc
            if pd.isna(start) or pd.isna(end) or end < start:
                raise NabDataError(f"{path}: {relpath}: window {pair} is empty or reversed")
            if parsed and start <= parsed[-1][1]:
                raise NabDataError(f"{path}: {relpath}: windows overlap or are out of order")
            parsed.append((start, end))
        out[str(relpath)] = parsed
    return out


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise NabDataError(f"{path}: unreadable CSV: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NabDataError(
            f"{path}: missing column(s) {', '.join(missing)}", detail={"file": str(path)}
        )
    return frame


def read_data_file(path: str | Path) -> tuple[pd.DatetimeIndex, FloatArray]:
    """Timestamps and values of a NAB data file (``timestamp,value``)."""
    p = Path(path)
    frame = _read_csv(p, ("timestamp", "value"))
    ts = _to_datetime_index(frame["timestamp"], str(p))
    return ts, frame["value"].to_numpy(dtype=np.float64)


def read_results_file(path: str | Path) -> tuple[pd.DatetimeIndex, FloatArray]:
    """Timestamps and anomaly scores of a results file (``timestamp,value,anomaly_score,label``)."""
    p = Path(path)
    frame = _read_csv(p, RESULTS_COLUMNS)
    ts = _to_datetime_index(frame["timestamp"], str(p))
    return ts, _check_scores(frame["anomaly_score"], str(p), len(frame))


def _check_detector(detector: str) -> None:
    if (
        not detector
        or "_" in detector
        or "/" in detector
        or "\\" in detector
        or detector
        in (
            ".",
            "..",
        )
    ):
        raise NabDataError(
            f"detector name {detector!r} must be non-empty, without '_' or path separators",
            detail={"detector": detector},
        )


def _split_relpath(relpath: str) -> tuple[str, str]:
    parts = PurePosixPath(relpath).parts
    if len(parts) != 2 or not parts[1].endswith(".csv") or ".." in parts:
        raise NabDataError(f"data path {relpath!r} must look like '<folder>/<file>.csv'")
    return parts[0], parts[1]


def results_path(results_dir: str | Path, detector: str, relpath: str) -> Path:
    """``<results_dir>/<folder>/<detector>_<file>.csv`` for data file ``<folder>/<file>.csv``."""
    folder, filename = _split_relpath(relpath)
    return Path(results_dir) / folder / f"{detector}_{filename}"


def write_results(
    out_dir: str | Path,
    detector: str,
    relpath: str,
    timestamps: Any,
    values: npt.ArrayLike,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
) -> Path:
    """Write ``<out>/<detector>/<folder>/<detector>_<file>.csv``, one row per data row."""
    _check_detector(detector)
    path = results_path(Path(out_dir) / detector, detector, relpath)
    ts = _to_datetime_index(timestamps, relpath)
    n = len(ts)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = _check_scores(scores, relpath, n)
    labs = np.asarray(labels).reshape(-1)
    if len(vals) != n or len(labs) != n:
        raise NabDataError(
            f"{relpath}: {n} timestamps, {len(vals)} values, {len(labs)} labels",
            detail={"file": relpath},
        )
    if not np.isin(labs, (0, 1)).all():
        raise NabDataError(f"{relpath}: labels must be 0 or 1")
    frame = pd.DataFrame(
        {
            "timestamp": ts.astype(str),
            "value": vals,
            "anomaly_score": arr,
            "label": labs.astype(np.int64),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def _data_files(data_dir: Path, folders: Sequence[str] | None) -> list[str]:
    rel = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if folders is not None:
        keep = set(folders)
        rel = [r for r in rel if r.split("/", 1)[0] in keep]
    return rel


def load_corpus(
    data_dir: str | Path,
    results_dir: str | Path,
    detector: str | None = None,
    *,
    labels: str | Path | None = None,
    folders: Sequence[str] | None = None,
) -> list[NabFile]:
    """Read data, labels and one detector's results files into scorable files."""
    data_root, results_root = Path(data_dir), Path(results_dir)
    name = detector if detector is not None else results_root.name
    _check_detector(name)
    windows = load_windows(labels if labels is not None else data_root.parent / "labels")
    relpaths = _data_files(data_root, folders)
    if not relpaths:
        raise NabDataError(f"no data files '<folder>/<file>.csv' under {data_root}")
    expected = {results_path(results_root, name, r) for r in relpaths}
    for folder in sorted({r.split("/", 1)[0] for r in relpaths}):
        for extra in sorted((results_root / folder).glob(f"{name}_*.csv")):
            if extra not in expected:
                raise NabDataError(
                    f"results file {extra} has no data file",
                    detail={"results_file": str(extra)},
                )
    files: list[NabFile] = []
    for rel in relpaths:
        if rel not in windows:
            raise NabDataError(f"{rel} has no entry in the labels file", detail={"file": rel})
        data_ts, _ = read_data_file(data_root / rel)
        rpath = results_path(results_root, name, rel)
        if not rpath.is_file():
            raise NabDataError(f"missing results file {rpath} for {rel}", detail={"file": rel})
        res_ts, scores = read_results_file(rpath)
        if len(res_ts) != len(data_ts):
            raise NabDataError(
                f"results file {rpath} has {len(res_ts)} rows; data file {rel} has {len(data_ts)}",
                detail={"file": rel, "results_rows": len(res_ts), "data_rows": len(data_ts)},
            )
        differ = np.flatnonzero(res_ts.to_numpy() != data_ts.to_numpy())
        if len(differ):
            row = int(differ[0])
            raise NabDataError(
                f"results file {rpath} row {row} has timestamp {res_ts[row]}; "
                f"data file {rel} has {data_ts[row]}",
                detail={"file": rel, "row": row, "differing_rows": len(differ)},
            )
        files.append(prepare_file(rel, data_ts, scores, windows[rel]))
    return files


def score_corpus(
    data_dir: str | Path,
    results_dir: str | Path,
    detector: str | None = None,
    *,
    labels: str | Path | None = None,
    folders: Sequence[str] | None = None,
) -> NabReport:
    """Score one detector's results folder against a NAB data folder.

    ``results_dir`` is ``<out>/<detector>``; the detector name defaults to its folder name.
    Labels default to ``<data_dir>/../labels/combined_windows.json``; ``folders`` restricts
    the corpus (e.g. ``["realAWSCloudwatch"]``), the threshold being optimised on that subset.
    """
    files = load_corpus(data_dir, results_dir, detector, labels=labels, folders=folders)
    name = detector if detector is not None else Path(results_dir).name
    return score_files(files, name)


# --------------------------------------------------------------------------- text output


def format_table(report: NabReport, *, per_file: bool = True) -> str:
    """A plain-text table of the report: one line per profile, then raw scores per file."""
    lines = [
        f"NAB scores for detector '{report.detector}': {report.n_files} files, "
        f"{report.n_rows} rows, {report.n_windows} windows",
        "",
        f"{'profile':<14} {'threshold':>10} {'normalised':>10} {'raw':>9} {'null':>9} "
        f"{'perfect':>8} {'TP rows':>8} {'FP rows':>8} {'FN rows':>8} {'windows hit/missed':>19}",
    ]
    for name, p in report.profiles.items():
        threshold = "none" if p.threshold >= NO_ALARM_THRESHOLD else f"{p.threshold:.6g}"
        hits = f"{p.windows_detected}/{p.windows_missed}"
        lines.append(
            f"{name:<14} {threshold:>10} {p.normalized_score:>10.2f} {p.raw_score:>9.3f} "
            f"{p.null_score:>9.3f} {p.perfect_score:>8.3f} {p.tp:>8d} {p.fp:>8d} {p.fn:>8d} "
            f"{hits:>19}"
        )
    if per_file and report.profiles:
        names = list(report.profiles)
        first = report.profiles[names[0]].files
        width = max([len("file"), *(len(f.name) for f in first)])
        lines += ["", f"{'file':<{width}} " + " ".join(f"{n:>14}" for n in names)]
        by_profile = [report.profiles[n].files for n in names]
        for row in zip(*by_profile, strict=True):
            cells = " ".join(f"{fs.raw_score:>14.3f}" for fs in row)
            lines.append(f"{row[0].name:<{width}} {cells}")
    return "\n".join(lines)
