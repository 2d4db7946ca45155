"""NAB scoring (models/evaluation/nab.py) on small corpora generated in the NAB layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.evaluation.nab import (
    MAX_TP,
    NO_ALARM_THRESHOLD,
    PROFILES,
    NabDataError,
    NabFile,
    Profile,
    format_table,
    label_rows,
    load_windows,
    optimize_threshold,
    prepare_file,
    probation_length,
    read_results_file,
    scaled_sigmoid,
    score_corpus,
    score_file,
    score_files,
    sweep_thresholds,
    write_results,
)

STANDARD = PROFILES["standard"]
START = pd.Timestamp("2024-03-01 00:00:00")

# file -> (rows, windows as (first row, last row)). Probation: 30 rows (200), 24 rows (160).
SPEC: dict[str, tuple[int, list[tuple[int, int]]]] = {
    "realX/a.csv": (200, [(60, 79), (140, 159)]),
    "realX/b.csv": (200, [(100, 119)]),
    "artificialY/c.csv": (160, []),
}


def _timestamps(n: int) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq="5min")


def make_corpus(root: Path, spec: dict[str, tuple[int, list[tuple[int, int]]]] = SPEC) -> Path:
    """Write ``root/data/<folder>/<file>.csv`` and ``root/labels/combined_windows.json``."""
    windows: dict[str, list[list[str]]] = {}
    rng = np.random.default_rng(0)
    for rel, (n, bounds) in spec.items():
        ts = _timestamps(n)
        path = root / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(
            {"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": rng.normal(size=n)}
        )
        frame.to_csv(path, index=False)
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        windows[rel] = [[ts[a].strftime(fmt), ts[b].strftime(fmt)] for a, b in bounds]
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return root / "data"


def write_detector(root: Path, detector: str, scores: dict[str, np.ndarray]) -> Path:
    data = root / "data"
    windows = load_windows(root / "labels")
    for rel, sc in scores.items():
        frame = pd.read_csv(data / rel)
        labels = label_rows(frame["timestamp"], windows[rel])
        write_results(
            root / "results", detector, rel, frame["timestamp"], frame["value"], sc, labels
        )
    return root / "results" / detector


def alarms_at(spec_rel: str, rows: list[int], level: float = 1.0) -> np.ndarray:
    out = np.zeros(SPEC[spec_rel][0])
    out[rows] = level
    return out


def one_file(
    n: int, bounds: list[tuple[int, int]], scores: np.ndarray, name: str = "f/x.csv"
) -> NabFile:
    ts = _timestamps(n)
    return prepare_file(name, ts, scores, [(ts[a], ts[b]) for a, b in bounds])


def sig(y: float) -> float:
    """NAB's scaled sigmoid, scalar, written independently for the reference scorer."""
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def reference_score(
    files: list[tuple[np.ndarray, list[tuple[int, int]]]], profile: Profile, theta: float
) -> float:
    """Row-by-row loop over NAB's rules: the brute-force oracle for the vectorised sweep."""
    total = 0.0
    for scores, bounds in files:
        n = len(scores)
        probation = min(math.floor(0.15 * n), 750)
        window_of = {i: k for k, (a, b) in enumerate(bounds) for i in range(a, b + 1)}
        first_alarm: dict[int, float] = {}
        scored_windows: set[int] = set()
        for i in range(probation, n):
            k = window_of.get(i)
            if k is not None:
                scored_windows.add(k)
            if scores[i] < theta:
                continue
            if k is not None:
                if k not in first_alarm:  # only the first alarm of a window counts
                    a, b = bounds[k]
                    first_alarm[k] = profile.a_tp * sig(-(b - i + 1) / (b - a + 1)) / sig(-1.0)
                continue
            before = [(a, b) for a, b in bounds if b < i]
            if not before:
                total -= profile.a_fp
            else:
                a, b = before[-1]
                total += profile.a_fp * sig(abs(b - i) / (b - a))
        total += sum(first_alarm.get(k, -profile.a_fn) for k in scored_windows)
    return total


# --------------------------------------------------------------------------- primitives


def test_probation_length_is_15_percent_capped_at_750() -> None:
    assert probation_length(40) == 6
    assert probation_length(200) == 30
    assert probation_length(4032) == 604  # floor(604.8)
    assert probation_length(4999) == 749
    assert probation_length(10_000) == 750


def test_scaled_sigmoid_matches_nab_landmarks() -> None:
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.98661429815, abs=1e-11)
    assert float(scaled_sigmoid(-1.0)) == MAX_TP
    assert float(scaled_sigmoid(-0.5)) == pytest.approx(0.84828363995, abs=1e-11)
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(3.0)) == pytest.approx(-0.99999938819, abs=1e-11)
    assert float(scaled_sigmoid(3.000001)) == -1.0
    assert float(scaled_sigmoid(1e6)) == -1.0


def test_hand_computed_file_score() -> None:
    # 40 rows: probation = floor(0.15 * 40) = 6. One window, rows 20..29: r = 29, w = 10.
    scores = np.zeros(40)
    scores[[3, 10, 23, 25, 33]] = 0.9
    f = one_file(40, [(20, 29)], scores)
    got = score_file(f, STANDARD, 0.5)
    # row 3: in probation, ignored.
    # row 10: false positive before any window: -A_FP = -0.11.
    fp_before = -0.11
    # row 23: first alarm in the window: y = -(29 - 23 + 1) / 10 = -0.7,
    #   sigma(-0.7) = 2 / (1 + e^-3.5) - 1 = 2 / 1.0301973834 - 1 = 0.9413755385,
    #   sigma(-1) = 2 / (1 + e^-5) - 1 = 0.9866142982, worth A_TP * 0.9413755385 / 0.9866142982.
    tp = 0.9413755385 / 0.9866142982  # 0.9541474721
    # row 25: a second alarm in the same window: ignored.
    # row 33: y = |29 - 33| / (10 - 1) = 0.4444, sigma = 2 / (1 + e^2.2222) - 1
    #   = 2 / 10.2278143521 - 1 = -0.8044548003, worth A_FP * sigma = -0.0884900280.
    fp_after = 0.11 * -0.8044548003
    expected = fp_before + tp + fp_after
    assert expected == pytest.approx(0.7556574441, abs=1e-9)
    assert got.raw_score == pytest.approx(expected, abs=1e-9)
    # NAB's counts are of scored rows (6..39): alarms 10, 23, 25, 33.
    assert (got.tp, got.fp, got.fn, got.tn) == (2, 2, 8, 22)
    assert (got.windows_detected, got.windows_missed) == (1, 0)
    assert reference_score([(scores, [(20, 29)])], STANDARD, 0.5) == pytest.approx(
        expected, abs=1e-9
    )

    # The corpus optimiser keeps the 0.9 alarms: 1.1 gives -1, 0.0 alarms every row.
    report = score_files([f])
    standard = report.profiles["standard"]
    assert standard.threshold == 0.9
    assert standard.raw_score == pytest.approx(expected, abs=1e-9)
    # Normalised: 100 * (S - S_null) / (S_perfect - S_null) = 100 * (0.7557 + 1) / (1 + 1).
    assert standard.null_score == -1.0
    assert standard.perfect_score == 1.0
    assert standard.normalized_score == pytest.approx(100 * (expected + 1) / 2, abs=1e-7)


def test_late_alarm_in_window_earns_less_than_early() -> None:
    def at(row: int) -> float:
        scores = np.zeros(100)
        scores[row] = 1.0
        return score_file(one_file(100, [(40, 59)], scores), STANDARD, 0.5).raw_score

    first, middle, last = at(40), at(50), at(59)
    assert first == pytest.approx(1.0, abs=1e-15)  # the window's first row is worth A_TP
    assert first > middle > last > 0.0
    # last row: y = -(59 - 59 + 1) / 20 = -0.05
    assert last == pytest.approx(sig(-0.05) / sig(-1.0), abs=1e-12)


def test_far_false_positive_costs_exactly_a_fp() -> None:
    base = np.zeros(200)
    base[40] = 1.0  # detect the window (rows 40..49, w = 10) at its first row
    clean = score_file(one_file(200, [(40, 49)], base), STANDARD, 0.5).raw_score
    for row in (35, 120, 199):  # before any window (no previous one), and > 3 widths after it
        scores = base.copy()
        scores[row] = 1.0
        got = score_file(one_file(200, [(40, 49)], scores), STANDARD, 0.5).raw_score
        assert got - clean == pytest.approx(-0.11, abs=1e-15)
    # Close after a window the penalty is smaller: y = |49 - 52| / 9, weight 0.11 * sigma(1/3).
    scores = base.copy()
    scores[52] = 1.0
    near = score_file(one_file(200, [(40, 49)], scores), STANDARD, 0.5).raw_score
    assert near - clean == pytest.approx(0.11 * sig(3 / 9), abs=1e-15)
    assert -0.11 < near - clean < 0.0


def test_alarms_in_probation_are_ignored() -> None:
    scores = np.zeros(100)  # probation: rows 0..14
    scores[[0, 7, 14]] = 1.0
    got = score_file(one_file(100, [(50, 59)], scores), STANDARD, 0.5)
    assert got.raw_score == -1.0  # the window is missed; the probation alarms cost nothing
    assert (got.tp, got.fp, got.fn, got.tn) == (0, 0, 10, 75)


def test_window_overlapping_probation_follows_nab() -> None:
    # 100 rows, probation 15. Window 0 (rows 2..6) lies in probation; window 1 (10..29)
    # straddles it: rows 10..14 are unscored, and the TP position still uses the full width.
    bounds = [(2, 6), (10, 29)]
    scores = np.zeros(100)
    scores[[3, 15]] = 1.0
    f = one_file(100, bounds, scores)
    got = score_file(f, STANDARD, 0.5)
    assert got.raw_score == pytest.approx(sig(-(29 - 15 + 1) / 20) / sig(-1.0), abs=1e-15)
    assert (got.windows, got.windows_detected, got.windows_missed) == (2, 1, 0)
    assert got.windows_in_probation == 1
    # A window wholly in probation is no false negative in NAB, but counts for S_perfect.
    report = score_files([f.with_scores(np.zeros(100))])
    assert report.profiles["standard"].null_score == -1.0
    assert report.profiles["standard"].perfect_score == 2.0


def test_only_first_alarm_in_window_counts() -> None:
    one = np.zeros(100)
    one[45] = 1.0
    many = one.copy()
    many[46:60] = 1.0
    a = score_file(one_file(100, [(40, 59)], one), STANDARD, 0.5)
    b = score_file(one_file(100, [(40, 59)], many), STANDARD, 0.5)
    assert a.raw_score == b.raw_score
    assert (a.tp, b.tp) == (1, 15)  # NAB still counts every alarmed window row as a TP row


def test_single_row_window_followed_by_rows_is_rejected() -> None:
    with pytest.raises(NabDataError, match="one row"):
        one_file(100, [(50, 50)], np.zeros(100))
    one_file(100, [(50, 50), (51, 99)], np.zeros(100))  # nothing scored against it: fine


# --------------------------------------------------------------------------- sweep


def random_corpus(seed: int) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    rng = np.random.default_rng(seed)
    files = []
    for n, bounds in [
        (120, [(30, 41), (70, 85)]),
        (90, [(40, 49)]),
        (80, []),
        (150, [(10, 25), (100, 119)]),
    ]:
        scores = np.round(rng.beta(0.5, 2.0, size=n), 2)  # many ties
        for a, b in bounds:
            hit = rng.integers(a, b + 1)
            scores[hit] = max(scores[hit], rng.uniform(0.3, 1.0))
        files.append((scores, bounds))
    return files


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_sweep_matches_brute_force_over_thresholds(seed: int, profile: Profile) -> None:
    corpus = random_corpus(seed)
    files = [one_file(len(s), b, s, name=f"f/{i}.csv") for i, (s, b) in enumerate(corpus)]
    sweep = sweep_thresholds(files, profile)

    scored = np.concatenate([s[probation_length(len(s)) :] for s, _ in corpus])
    candidates = [NO_ALARM_THRESHOLD, *sorted(set(scored.tolist()), reverse=True)]
    assert sweep.thresholds.tolist() == candidates
    brute = [reference_score(corpus, profile, t) for t in candidates]
    np.testing.assert_allclose(sweep.scores, brute, rtol=0, atol=1e-10)

    best = max(range(len(candidates)), key=lambda k: (brute[k], candidates[k]))
    threshold, score = optimize_threshold(files, profile)
    assert threshold == candidates[best]
    assert score == pytest.approx(brute[best], abs=1e-10)

    per_file = [score_file(f, profile, threshold) for f in files]
    assert sum(fs.raw_score for fs in per_file) == pytest.approx(score, abs=1e-10)
    k = sweep.best()
    assert sum(fs.tp for fs in per_file) == sweep.tp[k]
    assert sum(fs.fp for fs in per_file) == sweep.fp[k]
    assert sum(fs.fn for fs in per_file) == sweep.fn[k]
    assert sum(fs.tn for fs in per_file) == sweep.tn[k]


def test_sweep_ties_go_to_the_highest_threshold() -> None:
    scores = np.zeros(100)
    scores[40] = 0.9  # the first row of the window (40..59)
    scores[50] = 0.8  # a later alarm in the same window adds nothing
    f = one_file(100, [(40, 59)], scores)
    sweep = sweep_thresholds([f], STANDARD)
    assert sweep.scores[1] == sweep.scores[2]  # thresholds 0.9 and 0.8 score the same
    assert optimize_threshold([f], STANDARD)[0] == 0.9


def test_sweep_handles_a_nab_sized_corpus() -> None:
    rng = np.random.default_rng(7)
    files = []
    for i in range(60):
        n = 4000
        bounds = [(1000, 1199), (2500, 2699), (3500, 3599)]
        files.append(one_file(n, bounds, rng.random(n), name=f"f/{i}.csv"))
    report = score_files(files)  # its speed is reported by `prognos nab-score`, not tested
    assert set(report.profiles) == set(PROFILES)
    assert report.n_windows == 180


# --------------------------------------------------------------------------- corpus on disk


def test_never_alarming_detector_scores_zero(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    for name, level in (("zero", 0.0), ("flat", 0.7)):
        results = write_detector(
            tmp_path, name, {rel: np.full(n, level) for rel, (n, _) in SPEC.items()}
        )
        report = score_corpus(data, results)
        assert report.detector == name
        for p in report.profiles.values():
            assert p.normalized_score == 0.0
            assert p.raw_score == p.null_score == -p.profile.a_fn * 3
            assert p.threshold == NO_ALARM_THRESHOLD


def test_alarm_at_each_window_first_row_scores_100(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(
        tmp_path,
        "perfect",
        {rel: alarms_at(rel, [a for a, _ in b]) for rel, (_, b) in SPEC.items()},
    )
    report = score_corpus(data, results)
    assert report.n_windows == 3
    for p in report.profiles.values():
        assert p.normalized_score == pytest.approx(100.0, abs=1e-12)
        assert p.raw_score == pytest.approx(3.0, abs=1e-12)
        assert (p.windows_detected, p.windows_missed, p.fp) == (3, 0, 0)
        assert p.threshold == 1.0


def test_corpus_normalisation_per_profile(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    # a.csv: detect window (60..79) at row 70, miss (140..159); b.csv: detect (100..119) at 100;
    # c.csv: one alarm, no window anywhere in the file: -A_FP.
    scores = {
        "realX/a.csv": alarms_at("realX/a.csv", [70]),
        "realX/b.csv": alarms_at("realX/b.csv", [100]),
        "artificialY/c.csv": alarms_at("artificialY/c.csv", [90]),
    }
    report = score_corpus(data, write_detector(tmp_path, "some", scores))
    tp_70 = sig(-(79 - 70 + 1) / 20) / sig(-1.0)
    for name, p in report.profiles.items():
        prof = PROFILES[name]
        raw = prof.a_tp * tp_70 - prof.a_fn + prof.a_tp - prof.a_fp
        assert p.threshold == 1.0
        assert p.raw_score == pytest.approx(raw, abs=1e-12)
        null = -prof.a_fn * 3
        assert p.normalized_score == pytest.approx(100 * (raw - null) / (3 - null), abs=1e-9)
        by_file = {f.name: f.raw_score for f in p.files}
        assert by_file["artificialY/c.csv"] == pytest.approx(-prof.a_fp, abs=1e-15)

    as_json = report.to_json()
    assert as_json["detector"] == "some"
    assert as_json["windows"] == 3
    assert set(as_json["profiles"]) == set(PROFILES)
    assert as_json["profiles"]["standard"]["files"]["realX/b.csv"]["windows_detected"] == 1
    json.dumps(as_json)
    table = format_table(report)
    for name in PROFILES:
        assert name in table
    assert "realX/a.csv" in table


def test_folders_restrict_the_corpus(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(tmp_path, "zero", {rel: np.zeros(n) for rel, (n, _) in SPEC.items()})
    report = score_corpus(data, results, folders=["realX"])
    assert report.n_files == 2
    assert report.n_windows == 3


def test_mismatched_row_count_raises(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(tmp_path, "zero", {rel: np.zeros(n) for rel, (n, _) in SPEC.items()})
    path = results / "realX" / "zero_b.csv"
    frame = pd.read_csv(path)
    frame.iloc[:-1].to_csv(path, index=False)
    with pytest.raises(NabDataError, match=r"zero_b\.csv has 199 rows.*realX/b\.csv has 200"):
        score_corpus(data, results)


def test_mismatched_timestamps_raise(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(tmp_path, "zero", {rel: np.zeros(n) for rel, (n, _) in SPEC.items()})
    path = results / "realX" / "zero_a.csv"
    frame = pd.read_csv(path)
    frame.loc[5, "timestamp"] = "2030-01-01 00:00:00"
    frame.to_csv(path, index=False)
    with pytest.raises(NabDataError, match=r"zero_a\.csv row 5"):
        score_corpus(data, results)


def test_missing_results_file_raises(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(tmp_path, "zero", {"realX/a.csv": np.zeros(200)})
    with pytest.raises(NabDataError, match="missing results file"):
        score_corpus(data, results)


def test_window_bound_not_in_data_raises(tmp_path: Path) -> None:
    data = make_corpus(tmp_path)
    results = write_detector(tmp_path, "zero", {rel: np.zeros(n) for rel, (n, _) in SPEC.items()})
    labels = tmp_path / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    windows["realX/b.csv"] = [["2024-03-01 00:02:00.000000", "2024-03-01 01:00:00.000000"]]
    labels.write_text(json.dumps(windows))
    with pytest.raises(NabDataError, match="matches 0 rows"):
        score_corpus(data, results)


def test_write_results_layout_and_validation(tmp_path: Path) -> None:
    ts = _timestamps(5)
    path = write_results(
        tmp_path, "mydet", "realX/a.csv", ts, np.arange(5.0), np.full(5, 0.25), [0, 0, 1, 1, 0]
    )
    assert path == tmp_path / "mydet" / "realX" / "mydet_a.csv"
    assert path.read_text().splitlines()[:2] == [
        "timestamp,value,anomaly_score,label",
        "2024-03-01 00:00:00,0.0,0.25,0",
    ]
    got_ts, got_scores = read_results_file(path)
    assert (got_ts == ts).all()
    assert got_scores.tolist() == [0.25] * 5
    with pytest.raises(NabDataError, match="detector name"):
        write_results(tmp_path, "my_det", "realX/a.csv", ts, np.zeros(5), np.zeros(5), np.zeros(5))
    with pytest.raises(NabDataError, match=r"\[0, 1\]"):
        write_results(
            tmp_path, "mydet", "realX/a.csv", ts, np.zeros(5), [0, 0, 1.5, 0, 0], np.zeros(5)
        )
    with pytest.raises(NabDataError, match="scores for 5 rows"):
        write_results(tmp_path, "mydet", "realX/a.csv", ts, np.zeros(5), np.zeros(4), np.zeros(5))
    with pytest.raises(NabDataError, match=r"<folder>/<file>\.csv"):
        write_results(tmp_path, "mydet", "a.csv", ts, np.zeros(5), np.zeros(5), np.zeros(5))


def test_label_rows_marks_window_rows() -> None:
    ts = _timestamps(10)
    labels = label_rows(ts, [(ts[2], ts[4]), (ts[8], ts[8])])
    assert labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 0]


def test_load_windows_parses_nab_labels(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    windows = load_windows(tmp_path / "labels")
    assert set(windows) == set(SPEC)
    assert windows["realX/a.csv"][1] == (_timestamps(200)[140], _timestamps(200)[159])
    assert windows["artificialY/c.csv"] == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"f/x.csv": [["2024-01-02", "2024-01-01"]]}))
    with pytest.raises(NabDataError, match="reversed"):
        load_windows(bad)


def test_corpus_without_windows_cannot_be_normalised() -> None:
    with pytest.raises(NabDataError, match="no scorable anomaly window"):
        score_files([one_file(50, [], np.zeros(50))])
