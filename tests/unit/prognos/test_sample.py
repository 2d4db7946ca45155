"""The bundled sample data: generated once, the same every time, with the promised features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ingest.replay import ReplaySource
from prognos.sample import ensure_sample_data
from tests.unit.fakes import make_target

DAY0 = int(pd.Timestamp("2026-01-05T00:00:00Z").timestamp())


def test_sample_is_deterministic_and_written_once(tmp_path: Path) -> None:
    one = ensure_sample_data(tmp_path / "a")
    two = ensure_sample_data(tmp_path / "b")
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir())
    assert len(files) == 17  # 4 pods x 4 metrics + series.yaml
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes()
    (one / "cart_0_cpu.csv").write_text("timestamp,value\n0,1\n")
    ensure_sample_data(one)  # already there: left alone
    assert (one / "cart_0_cpu.csv").read_text() == "timestamp,value\n0,1\n"


def test_sample_has_a_leak_a_hole_and_a_late_pod(tmp_path: Path) -> None:
    source = ReplaySource(ensure_sample_data(tmp_path), loop=False)
    day2 = DAY0 + 86_400

    def read(target: str, start: int, end: int) -> dict[str, dict[int, float]]:
        result = source.query_range(make_target(target), start, end, 60)
        return {
            s.key.label_dict["pod"]: dict(
                zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
            )
            for s in result.series
        }

    assert "checkout-1" not in read("cpu", DAY0, DAY0 + 3600)
    assert "checkout-1" in read("cpu", day2 + 6 * 3600, day2 + 7 * 3600)
    latency = read("latency_p99", day2 + 10 * 3600, day2 + 11 * 3600)["frontend-0"]
    missing = [t for t in range(day2 + 10 * 3600, day2 + 11 * 3600 + 1, 60) if t not in latency]
    # A 20-minute hole (10:00-10:19); its first minutes are bridged by the 5-minute lookback.
    assert 15 <= len(missing) <= 16
    assert missing == list(range(missing[0], day2 + 10 * 3600 + 20 * 60, 60))
    memory = read("memory", DAY0, DAY0 + 6 * 3600)
    cart = memory["cart-0"]
    assert cart[DAY0 + 6 * 3600] - cart[DAY0] > 250e6  # ~60 MB/h leak
    assert abs(memory["frontend-0"][DAY0 + 6 * 3600] - memory["frontend-0"][DAY0]) < 100e6
