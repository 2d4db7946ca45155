"""The replay source: a folder of CSV/Parquet files read with Prometheus' range semantics."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from ingest.domain import SeriesKey
from ingest.errors import ReplayDataError
from ingest.replay import ReplaySource
from tests.unit.fakes import make_target

T0 = 1_767_571_200  # 2026-01-05T00:00:00Z
STEP = 60


def iso(ts: int) -> str:
    return pd.Timestamp(ts, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def write_folder(folder: Path, entries: list[dict[str, Any]], **index: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "series.yaml").write_text(yaml.safe_dump({**index, "series": entries}))
    return folder


def write_csv(folder: Path, name: str, ts: list[int], values: list[float], *, as_iso: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"timestamp": [iso(t) if as_iso else t for t in ts], "value": values})
    frame.to_csv(folder / name, index=False)
    return name


def write_parquet(folder: Path, name: str, ts: list[int], values: list[float]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(ts, unit="s", utc=True), "value": np.asarray(values)}
    )
    frame.to_parquet(folder / name)
    return name


def points(source: ReplaySource, target: str, start: int, end: int, step: int = STEP) -> dict:
    """{label dict as a frozenset: {ts: value}} for one read."""
    result = source.query_range(make_target(target, step=step), start, end, step)
    return {
        frozenset(s.key.labels): dict(zip(s.timestamps.tolist(), s.values.tolist(), strict=True))
        for s in result.series
    }


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """cpu from a CSV (ISO timestamps) and a Parquet file; memory from a CSV of epoch seconds."""
    folder = tmp_path / "shop"
    grid = [T0 + i * STEP for i in range(60)]
    write_csv(folder, "checkout_cpu.csv", grid, [0.5 + i for i in range(60)], as_iso=True)
    write_parquet(folder, "cart_cpu.parquet", grid, [100.0 + i for i in range(60)])
    write_csv(folder, "cart_mem.csv", grid[:30], [1e9 + i for i in range(30)], as_iso=False)
    return write_folder(
        folder,
        [
            {
                "file": "checkout_cpu.csv",
                "target": "cpu",
                "labels": {"service": "checkout", "instance": "10.0.0.7:9100"},
            },
            {"file": "cart_cpu.parquet", "target": "cpu", "labels": {"service": "cart"}},
            {"file": "cart_mem.csv", "target": "memory", "labels": {"service": "cart"}},
        ],
    )


def test_csv_and_parquet_files_are_served_per_target(shop: Path) -> None:
    source = ReplaySource(shop)
    cpu = points(source, "cpu", T0, T0 + 4 * STEP)
    checkout = frozenset({("service", "checkout"), ("instance", "10.0.0.7:9100")})
    cart = frozenset({("service", "cart")})
    assert set(cpu) == {checkout, cart}
    assert cpu[checkout] == {T0 + i * STEP: 0.5 + i for i in range(5)}
    assert cpu[cart] == {T0 + i * STEP: 100.0 + i for i in range(5)}
    memory = points(source, "memory", T0 + 10 * STEP, T0 + 12 * STEP)
    assert memory == {cart: {T0 + i * STEP: 1e9 + i for i in (10, 11, 12)}}
    assert points(source, "no_such_target", T0, T0 + 600) == {}
    assert "3 series" in source.describe()


def test_series_keys_match_what_prometheus_would_return(shop: Path) -> None:
    source = ReplaySource(shop)
    result = source.query_range(make_target("memory"), T0, T0 + 600, STEP)
    assert [s.key for s in result.series] == [SeriesKey.of("memory", {"service": "cart"})]


def test_a_short_gap_repeats_the_last_value_and_a_long_gap_stays_missing(tmp_path: Path) -> None:
    # Samples every minute up to T0+10m, none until T0+20m, then every minute again.
    ts = [T0 + i * STEP for i in range(11)] + [T0 + i * STEP for i in range(20, 26)]
    write_csv(tmp_path, "gappy.csv", ts, [float(t - T0) for t in ts], as_iso=True)
    write_folder(tmp_path, [{"file": "gappy.csv", "target": "g", "labels": {"service": "s"}}])
    served = next(iter(points(ReplaySource(tmp_path), "g", T0, T0 + 25 * STEP).values()))
    last = T0 + 10 * STEP
    for minutes in (1, 2, 3, 4):  # less than the 5-minute lookback: the value repeats
        assert served[last + minutes * STEP] == 600.0
    for minutes in range(6, 10):  # further back than the lookback: missing, not filled
        assert last + minutes * STEP not in served
    assert served[T0 + 20 * STEP] == 1200.0
    assert served[T0 + 25 * STEP] == 1500.0
    assert set(range(T0, last + 1, STEP)) <= set(served)


def test_a_sample_exactly_five_minutes_old_is_still_served(tmp_path: Path) -> None:
    write_csv(tmp_path, "g.csv", [T0, T0 + 900], [1.0, 2.0], as_iso=False)
    write_folder(tmp_path, [{"file": "g.csv", "target": "g"}], step="60s")
    served = next(iter(points(ReplaySource(tmp_path), "g", T0, T0 + 900).values()))
    assert sorted(served) == [T0 + m * 60 for m in range(6)] + [T0 + 900]


def test_a_finer_file_serves_the_newest_sample_at_or_before_each_step(tmp_path: Path) -> None:
    ts = [T0 + i * 15 for i in range(40)]
    write_csv(tmp_path, "fine.csv", ts, [float(i) for i in range(40)], as_iso=False)
    write_folder(tmp_path, [{"file": "fine.csv", "target": "f"}])
    source = ReplaySource(tmp_path)
    aligned = next(iter(points(source, "f", T0, T0 + 480).values()))
    assert aligned == {T0 + 60 * k: float(4 * k) for k in range(9)}  # every 4th row
    # Like Prometheus, a read starting off the grid evaluates at start, start + step, ...
    shifted = next(iter(points(source, "f", T0 + 50, T0 + 480).values()))
    assert shifted == {T0 + 50 + 60 * k: float(3 + 4 * k) for k in range(8)}


def test_loop_mode_repeats_the_timeline(shop: Path) -> None:
    looping = ReplaySource(shop, loop=True)
    period = looping.period
    assert period == 60 * STEP  # first..last sample plus one step
    first = points(looping, "cpu", T0, T0 + 10 * STEP)
    for laps in (1, 3, 1000):
        later = points(looping, "cpu", T0 + laps * period, T0 + laps * period + 10 * STEP)
        shifted = {k: {t - laps * period: v for t, v in s.items()} for k, s in later.items()}
        assert shifted == first
    # Past the end of the recording (without looping) there is nothing "now".
    once = ReplaySource(shop, loop=False)
    assert points(once, "cpu", T0 + 2 * period, T0 + 2 * period + 600) == {}
    assert "looping" in looping.describe() and "once" in once.describe()


def test_loop_mode_serves_the_wrap_without_a_hole(shop: Path) -> None:
    looping = ReplaySource(shop, loop=True)
    wrap = T0 + looping.period
    served = points(looping, "cpu", wrap - 3 * STEP, wrap + 3 * STEP)
    for series in served.values():
        assert sorted(series) == list(range(wrap - 3 * STEP, wrap + 3 * STEP + 1, STEP))


def test_duplicate_timestamps_keep_the_last_row(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text(
        "timestamp,value\n"
        f"{T0 + 120},3\n{T0},1\n{T0 + 60},2\n{T0 + 60},22\n{T0},11\n{T0 + 60},222\n"
    )
    write_folder(tmp_path, [{"file": "dup.csv", "target": "d"}])
    served = next(iter(points(ReplaySource(tmp_path), "d", T0, T0 + 120).values()))
    assert served == {T0: 11.0, T0 + 60: 222.0, T0 + 120: 3.0}


def test_non_numeric_values_are_dropped_not_invented(tmp_path: Path) -> None:
    (tmp_path / "odd.csv").write_text(
        f"timestamp,value\n{T0},1\n{T0 + 60},oops\n{T0 + 120},\n{T0 + 900},4\n"
    )
    write_folder(tmp_path, [{"file": "odd.csv", "target": "o"}], step="60s")
    served = next(iter(points(ReplaySource(tmp_path), "o", T0, T0 + 900).values()))
    assert served[T0 + 60] == 1.0  # the previous sample, within the lookback
    assert T0 + 600 not in served
    assert served[T0 + 900] == 4.0


def test_targets_are_derived_at_the_finest_step(tmp_path: Path) -> None:
    write_csv(tmp_path, "a.csv", [T0 + i * 30 for i in range(10)], [1.0] * 10, as_iso=False)
    write_csv(tmp_path, "b.csv", [T0 + i * 60 for i in range(10)], [1.0] * 10, as_iso=False)
    write_csv(tmp_path, "c.csv", [T0 + i * 60 for i in range(10)], [1.0] * 10, as_iso=False)
    write_folder(
        tmp_path,
        [
            {"file": "b.csv", "target": "rps"},
            {"file": "a.csv", "target": "rps"},
            {"file": "c.csv", "target": "errors", "step": "2m"},
        ],
    )
    source = ReplaySource(tmp_path)
    targets = source.targets({"lookback": timedelta(hours=1)})
    assert [(t.name, t.step_seconds, t.query) for t in targets] == [
        ("errors", 120, "replay:errors"),
        ("rps", 30, "replay:rps"),
    ]
    assert all(t.lookback == timedelta(hours=1) for t in targets)
    assert [t.lookback for t in source.targets()] == [timedelta(hours=6)] * 2


def test_limits_in_series_yaml_become_breach_limits_of_their_targets(tmp_path: Path) -> None:
    write_csv(tmp_path, "m.csv", [T0 + i * 60 for i in range(10)], [1.0] * 10, as_iso=False)
    write_csv(tmp_path, "c.csv", [T0 + i * 60 for i in range(10)], [1.0] * 10, as_iso=False)
    entries = [{"file": "m.csv", "target": "memory"}, {"file": "c.csv", "target": "cpu"}]
    write_folder(tmp_path, entries, limits={"memory": {"threshold": 9.5e8}})
    by_name = {t.name: t for t in ReplaySource(tmp_path).targets()}
    assert by_name["cpu"].breach is None
    limit = by_name["memory"].breach
    assert limit is not None and (limit.threshold, limit.direction) == (9.5e8, "above")

    write_folder(tmp_path, entries, limits={"memory": {"threshold": "high"}})
    with pytest.raises(ReplayDataError, match=r"limits\.memory: threshold"):
        ReplaySource(tmp_path)


def test_missing_series_yaml(tmp_path: Path) -> None:
    write_csv(tmp_path, "a.csv", [T0], [1.0], as_iso=False)
    with pytest.raises(ReplayDataError, match=r"has no series\.yaml"):
        ReplaySource(tmp_path)


def test_a_lost_series_yaml_fails_the_check(shop: Path) -> None:
    source = ReplaySource(shop)
    source.check()
    (shop / "series.yaml").unlink()
    with pytest.raises(ReplayDataError, match=r"series\.yaml"):
        source.check()


def test_missing_file(tmp_path: Path) -> None:
    write_folder(tmp_path, [{"file": "gone.csv", "target": "x"}])
    with pytest.raises(ReplayDataError) as info:
        ReplaySource(tmp_path)
    assert "series[0]" in info.value.message
    assert "gone.csv does not exist" in info.value.message


def test_missing_column(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(f"time,value\n{T0},1\n")
    (tmp_path / "b.csv").write_text(f"timestamp,val\n{T0},1\n")
    write_folder(tmp_path, [{"file": "a.csv", "target": "x"}])
    with pytest.raises(ReplayDataError, match=r"series\[0\].*a\.csv lacks column\(s\) timestamp"):
        ReplaySource(tmp_path)
    write_folder(tmp_path, [{"file": "b.csv", "target": "x"}])
    with pytest.raises(ReplayDataError, match=r"b\.csv lacks column\(s\) value"):
        ReplaySource(tmp_path)


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ("series: []\n", "non-empty `series:` list"),
        ("step: 60s\n", "non-empty `series:` list"),
        ("series:\n  - {file: a.csv}\n", r"series\[0\]: each entry needs `file` and `target`"),
        ("series:\n  - {file: a.csv, target: x, labels: [a]}\n", "`labels` must be a mapping"),
        ("series:\n  - {file: a.csv, target: x, step: soon}\n", r"series\[0\]: step:"),
        ("series: [\n", "not valid YAML"),
    ],
)
def test_unusable_index_files(tmp_path: Path, index: str, match: str) -> None:
    write_csv(tmp_path, "a.csv", [T0, T0 + 60], [1.0, 2.0], as_iso=False)
    (tmp_path / "series.yaml").write_text(index)
    with pytest.raises(ReplayDataError, match=match):
        ReplaySource(tmp_path)


def test_unreadable_timestamps_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("timestamp,value\nyesterday-ish,1\n")
    write_folder(tmp_path, [{"file": "bad.csv", "target": "x"}])
    with pytest.raises(ReplayDataError, match="unreadable timestamp"):
        ReplaySource(tmp_path)
    (tmp_path / "empty.csv").write_text(f"timestamp,value\n{T0},n/a\n")
    write_folder(tmp_path, [{"file": "empty.csv", "target": "x"}])
    with pytest.raises(ReplayDataError, match="no numeric values"):
        ReplaySource(tmp_path)
