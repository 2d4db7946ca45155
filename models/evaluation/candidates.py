"""Detector components measured by the dev protocol and not adopted, kept so `bench/detect.py`
can show them beside the detector in the same run. The service does not use them.

* `phase_memory`: a pattern memory with bounded state, so that a recurring burst fires once. Each
  series keeps, per bin of the time of day (48 bins), the largest raw z of its past excursions
  (new highs at or above `record_z`) and on how many distinct days one occurred, both decayed
  with a half-life of `halflife_days`. An excursion at a time of day (±1 bin) where one at least
  `tolerance`⁻¹ as large was seen on `min_days` earlier days is discounted by `discount`. State:
  3 by 48 floats (1.2 KB), well inside the detector's 16 KB budget.
"""

from __future__ import annotations

import math

import numpy as np

from models.detector import DetectorOutput
from models.evaluation.nab import FloatArray

DAY = 86400


def phase_memory(
    out: DetectorOutput,
    *,
    bins: int = 48,
    halflife_days: float = 3.0,
    tolerance: float = 1.5,
    min_days: float = 1.0,
    record_z: float = 4.0,
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
        if seen_days >= min_days and z <= tolerance * seen_mag:
            score[i] *= discount
        decay = math.exp(-rate * (t - last[b])) if last[b] > -math.inf else 0.0
        day = t // DAY
        magnitude[b] = max(magnitude[b] * decay, z)
        days[b] = days[b] * decay + (last_day[b] != day)
        last_day[b], last[b] = day, t
    return score
