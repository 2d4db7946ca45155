"""A shard worker's window buffer hands out, cycle after cycle, exactly the windows the serving
path would read from the database, while reading only the samples after its end: through new
and late series, a missed step, a gap longer than the window, a change of shards, a model with
another context length and a target whose meaning changed."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ingest.tables import WatermarkRow
from models import service as model_service
from prognos.engine.shards import assign, series_filter
from prognos.engine.window import WindowBuffer
from sim.fleet import START, fleet_keys, fleet_target, store_steps, values_at

STEP = 60
LENGTH = 24


def test_the_buffer_gives_the_windows_the_database_holds(
    sessions: sessionmaker[Session],
) -> None:
    target = fleet_target("ring")
    keys = fleet_keys(target.name, 40)
    rng = np.random.default_rng(3)
    buffer = WindowBuffer()
    halves = assign(2)
    owned = halves[0]

    def store(n: int, ts: np.ndarray) -> int:
        values = values_at(n, ts, rng)
        gappy = np.arange(n) % 4 == 0  # these miss every other step
        pick = [k for k, g in zip(keys[:n], gappy, strict=True) if g]
        store_steps(sessions, target, pick, ts[::2], values[gappy][:, ::2])
        rest = [k for k, g in zip(keys[:n], gappy, strict=True) if not g]
        store_steps(sessions, target, rest, ts, values[~gappy])
        return int(ts[-1])

    def check(end: int, length: int = LENGTH) -> int:
        """Every batch of `owned` matches `_windows`; returns the samples the buffer read."""
        before = buffer.rows_read
        with sessions() as session:
            for group in (owned[: len(owned) // 2], owned[len(owned) // 2 :]):
                ids, got = buffer.windows(
                    session, target=target.name, shards=group, owned=owned, end=end, length=length
                )
                want_ids, want = model_service._windows(
                    session,
                    target=target.name,
                    end=end,
                    step=STEP,
                    length=length,
                    series=series_filter(group),
                )
                assert ids == want_ids
                np.testing.assert_array_equal(got, want)
                assert ids
        return buffer.rows_read - before

    end = store(30, START + STEP * np.arange(40))
    full = check(end)
    assert full > 0
    end = store(30, end + STEP * np.arange(1, 2))
    assert check(end) <= 30  # one new step: at most one sample per series
    end = store(40, end + STEP * np.arange(1, 4))  # a missed cycle; ten late series appear
    assert 0 < check(end) <= 3 * 40
    assert check(end) == 0  # the same end again reads nothing
    end = store(40, end + STEP * np.arange(1, LENGTH + 2))  # a gap longer than the window
    assert check(end) > 3 * 40
    for _ in range(LENGTH // 3 + 1):  # ten series stop: they leave the window, step by step
        end = store(30, end + STEP * np.arange(1, 4))
        assert check(end) <= 3 * 30  # ids still equal: the ten are dropped once out of it
    owned = halves[0][:100] + halves[1][:50]  # the shards change: the new ones are filled
    check(end)
    assert set(buffer.filled) <= set(owned)
    end = store(40, end + STEP * np.arange(1, 2))
    assert check(end, length=LENGTH // 2) > 40  # another context length: filled again
    with sessions() as session:
        session.execute(
            sa.update(WatermarkRow)
            .where(WatermarkRow.target == target.name)
            .values(query_digest="changed")
        )
        session.commit()
    assert check(end, length=LENGTH // 2) > 40  # another meaning: filled again
    assert buffer.nbytes >= len(buffer.ids) * (LENGTH // 2) * 8
