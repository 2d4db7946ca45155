"""Backfill in UTC-day blocks with a Parquet cache: a second run does not touch the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.domain import Window
from ingest.history import BlockDone, backfill, block_seconds, cache_folder, plan_blocks
from tests.unit.fakes import FakeSeries, FakeSource, make_target

DAY = 86_400
DAY0 = 1_767_571_200  # 2026-01-05T00:00:00Z
START = DAY0 + 5 * 3600 + 17  # mid-day, off the grid
END = DAY0 + 2 * DAY + 9 * 3600  # two and a bit days later
TARGET = make_target("cpu")


def shop() -> FakeSource:
    return FakeSource(
        [
            FakeSeries("cpu", {"service": "checkout"}),
            FakeSeries("cpu", {"service": "cart"}, start=DAY0 + DAY + 3600),  # appears on day 2
        ]
    )


def run(source: FakeSource, cache: Path, **kwargs):
    # By default the whole last day lies in the past, so every block may be cached.
    options = {"start": START, "end": END, "complete_before": DAY0 + 3 * DAY}
    options.update(kwargs)
    return backfill(source=source, target=TARGET, cache_dir=cache, **options)


def as_points(summary) -> dict[str, dict[int, float]]:
    return {
        s.key.label_dict["service"]: dict(
            zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
        )
        for s in summary.series
    }


def test_blocks_are_whole_utc_days() -> None:
    window = Window(START + 43, END, 60)
    blocks = plan_blocks(window, 11_000)
    assert [b.start for b in blocks] == [DAY0, DAY0 + DAY, DAY0 + 2 * DAY]
    assert all(b.start % DAY == 0 and b.end == b.start + DAY - 60 for b in blocks)
    assert blocks[0].start <= window.start and blocks[-1].end >= window.end


def test_small_steps_use_the_largest_block_under_the_point_limit() -> None:
    assert block_seconds(60, 11_000) == DAY
    assert block_seconds(1, 11_000) == 11_000  # a day of 1 s steps is 86,400 points
    assert block_seconds(7, 11_000) == 77_000  # 7 s does not divide a day
    blocks = plan_blocks(Window(DAY0, DAY0 + DAY, 1), 11_000)
    assert all(b.points == 11_000 and b.start % 11_000 == 0 for b in blocks)


def test_history_covers_the_window_and_a_second_run_reads_only_the_cache(
    tmp_path: Path,
) -> None:
    source = shop()
    done: list[BlockDone] = []
    first = run(source, tmp_path, on_block=done.append)
    assert first.blocks == 3 and first.blocks_from_cache == 0
    assert [d.cached for d in done] == [False, False, False]
    assert [(d.index, d.total) for d in done] == [(0, 3), (1, 3), (2, 3)]
    points = as_points(first)
    aligned_start = START - START % 60 + 60
    assert sorted(points["checkout"]) == list(range(aligned_start, END + 1, 60))
    assert min(points["cart"]) == DAY0 + DAY + 3600
    assert points["checkout"][END] == END / 1000.0
    requested = source.points_served
    assert requested == 3 * 1440  # whole days were read

    again_source = shop()
    again = run(again_source, tmp_path)
    assert again_source.calls == []  # served from disk
    assert again.blocks_from_cache == 3
    assert as_points(again) == points


def test_a_block_that_is_not_complete_yet_is_not_cached(tmp_path: Path) -> None:
    source = shop()
    run(source, tmp_path, complete_before=END)  # the last day is still being written
    folder = cache_folder(tmp_path, source, TARGET)
    cached = sorted(p.name for p in folder.glob("*.parquet"))
    assert cached == [
        f"block-{DAY0}-{DAY0 + DAY - 60}.parquet",
        f"block-{DAY0 + DAY}-{DAY0 + 2 * DAY - 60}.parquet",
    ]
    second = shop()
    summary = run(second, tmp_path, complete_before=END)
    assert summary.blocks_from_cache == 2
    assert [(start, end) for _, start, end, _ in second.calls] == [
        (DAY0 + 2 * DAY, DAY0 + 3 * DAY - 60)
    ]


@pytest.mark.parametrize("damage", [b"", b"not parquet at all", b"PAR1\x00\x00garbage"])
def test_a_corrupted_block_is_fetched_again(tmp_path: Path, damage: bytes) -> None:
    first = run(shop(), tmp_path)
    folder = cache_folder(tmp_path, shop(), TARGET)
    victim = folder / f"block-{DAY0 + DAY}-{DAY0 + 2 * DAY - 60}.parquet"
    victim.write_bytes(damage)
    source = shop()
    again = run(source, tmp_path)
    assert [(start, end) for _, start, end, _ in source.calls] == [
        (DAY0 + DAY, DAY0 + 2 * DAY - 60)
    ]
    assert again.blocks_from_cache == 2
    assert as_points(again) == as_points(first)
    third = shop()
    run(third, tmp_path)
    assert third.calls == []  # the refetched block was cached again


def test_refresh_ignores_the_cache(tmp_path: Path) -> None:
    run(shop(), tmp_path)
    source = shop()
    summary = run(source, tmp_path, refresh=True)
    assert summary.blocks_from_cache == 0
    assert len(source.calls) == 3


def test_a_changed_query_does_not_reuse_old_blocks(tmp_path: Path) -> None:
    run(shop(), tmp_path)
    source = shop()
    changed = make_target("cpu", "avg(cpu)")
    summary = backfill(
        source=source,
        target=changed,
        start=START,
        end=END,
        complete_before=DAY0 + 3 * DAY,
        cache_dir=tmp_path,
    )
    assert summary.blocks_from_cache == 0
    assert len(source.calls) == 3
    assert cache_folder(tmp_path, source, changed) != cache_folder(tmp_path, source, TARGET)
