"""Detector components measured by the dev protocol and not adopted, kept so `bench/detect.py`
can show them beside the detector in the same run. The service does not use them.

* `phase_memory`: a pattern memory with bounded state, so that a recurring burst fires once. Each
  series keeps, per bin of the time of day (48 bins), the largest raw z of its past excursions
  (new highs at or above `record_z`) and on how many distinct days one occurred, both decayed
  with a half-life of `halflife_days`. An excursion at a time of day (±1 bin) where one at least
  `tolerance`⁻¹ as large was seen on `min_days` earlier days (the latest about a day ago counts
  fully) has its score multiplied by `discount`. State: 3 by 48 floats (1.2 KB), well inside the
  detector's 16 KB budget. Defaults: the best of a scan of 16 settings on the dev protocol.
* `lstm_residual_z`: the LSTM's one-step residual, in units of its own forecast spread, to fuse
  with the level z (`bench/detect.py --lstm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from models.detector import Z_CAP, BoolArray, DetectorOutput
from models.evaluation.nab import FloatArray

DAY = 86400


def phase_memory(
    out: DetectorOutput,
    *,
    bins: int = 48,
    halflife_days: float = 3.0,
    tolerance: float = 1.0,
    min_days: float = 1.0,
    record_z: float = 2.83,
    discount: float = 0.5,
) -> FloatArray:
    """The detector's scores with recurring excursions discounted (causal, row by row)."""
    score = out.score.copy()
    magnitude = np.zeros(bins)
    days = np.zeros(bins)
    last = np.full(bins, -math.inf)
    last_day = np.full(bins, -1.0)
    rate = math.log(2.0) / (halflife_days * DAY)
    width = DAY / bins
    recent_day = math.exp(-rate * DAY)
    raw, eligible = out.raw.tolist(), out.eligible.tolist()
    for i, t in enumerate(out.ts.tolist()):
        z = raw[i]
        if not (eligible[i] and z >= record_z):
            continue
        b = int((t % DAY) // width)
        seen_mag = seen_days = 0.0
        for j in ((b - 1) % bins, b, (b + 1) % bins):
            decay = math.exp(-rate * (t - last[j])) if last[j] > -math.inf else 0.0
            seen_mag = max(seen_mag, magnitude[j] * decay)
            seen_days = max(seen_days, days[j] * decay)
        # A sighting a day ago counts as one day (the count decays between days).
        if seen_days >= min_days * recent_day - 1e-9 and z <= tolerance * seen_mag:
            score[i] *= discount
        decay = math.exp(-rate * (t - last[b])) if last[b] > -math.inf else 0.0
        day = t // DAY
        magnitude[b] = max(magnitude[b] * decay, z)
        days[b] = days[b] * decay + (last_day[b] != day)
        last_day[b], last[b] = day, t
    return score


def new_highs(z: FloatArray, rows: int = 6) -> BoolArray:
    """The level rule's novelty for any z: above every z of the previous `rows` rows."""
    past = np.concatenate([np.full(rows, -np.inf), z])
    return np.asarray(
        z > np.lib.stride_tricks.sliding_window_view(past, rows)[: len(z)].max(axis=1)
    )


def lstm_residual_z(
    series: Sequence[tuple[npt.NDArray[np.int64], FloatArray]],
    *,
    context: int = 60,
    epochs: int = 15,
    seed: int = 0,
) -> list[FloatArray]:
    """The service's LSTM as a detector component: |value - one-step median forecast| / the
    forecast's p10-p90 spread (read as a normal's), for each finite row of each series (the rows
    `Detector.update` scores). The network is trained on generated scenarios only
    (`sim.scenarios`, 5-minute step, seeds 0-59: nothing of the corpus scored) and applied to
    every step family with its own calendar."""
    # Imported here: torch and the generators load only when this candidate is asked for.
    from ingest.domain import SeriesKey
    from models.domain import ContextBatch, History
    from models.evaluation.backtest import regular_grid
    from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig
    from sim.scenarios import suite

    generated = suite(range(60), step=300)
    model = GlobalLSTMForecaster(
        LSTMConfig(context_length=context, horizon=1, max_epochs=epochs, seed=seed)
    )
    model.fit(
        [
            History(SeriesKey("generated", (("i", str(i)),)), s.step, s.start, s.values)
            for i, s in enumerate(generated)
        ]
    )
    spread_sigmas = 2 * 1.2816  # p10 to p90 of a normal
    out = []
    for ts, values in series:
        finite = np.isfinite(values)
        grid, step, start, bucket = regular_grid(ts, values)
        padded = np.concatenate([np.full(context, np.nan), grid])
        windows = np.lib.stride_tricks.sliding_window_view(padded, context)[: len(grid)][bucket]
        usable = np.isfinite(windows).sum(axis=1) >= context // 2
        q = np.full((len(values), 3), np.nan)
        if usable.any():
            batch = ContextBatch(
                windows[usable].astype(np.float32),
                (start + (bucket[usable] - 1) * step).astype(np.int64),
                step,
            )
            q[usable] = model._predict(batch)[:, 0, :]
        spread = (q[:, 2] - q[:, 0]) / spread_sigmas
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(spread > 0, np.abs(values - q[:, 1]) / spread, 0.0)
        out.append(np.minimum(np.nan_to_num(z, nan=0.0, posinf=0.0), Z_CAP)[finite])
    return out
