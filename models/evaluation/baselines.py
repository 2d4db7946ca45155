"""Detection baselines that the dev protocol runs beside the service's detector, in the same run.

Not used by the service: they exist so that `bench/detect.py` can say by how much the detector
beats what a user could write in a few lines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.detector import unit_score
from models.evaluation.nab import FloatArray


def rolling_zscore(values: FloatArray, window: int = 288) -> FloatArray:
    """|x - mean| / std of the previous `window` rows, as z / (1 + z) (the datasets' README row:
    a spread of 0 with a change scores 1)."""
    s = pd.Series(np.asarray(values, dtype=np.float64))
    mean = s.rolling(window, min_periods=2).mean().shift(1).to_numpy()
    std = s.rolling(window, min_periods=2).std(ddof=0).shift(1).to_numpy()
    distance = np.abs(s.to_numpy() - mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std > 0, distance / std, np.where(distance > 0, np.inf, 0.0))
    z = np.nan_to_num(z, nan=0.0, posinf=np.inf)
    finite = np.where(np.isinf(z), 0.0, z)
    return np.where(np.isinf(z), 1.0, finite / (1.0 + finite))


def median_band(values: FloatArray, window: int = 1500) -> FloatArray:
    """Distance from the median of the previous `window` rows in units of their p10-p90 band (the
    cold-start forecaster's band, without seasonality), as z / (1 + z)."""
    s = pd.Series(np.asarray(values, dtype=np.float64))
    roll = s.rolling(window, min_periods=5)
    median = roll.median().shift(1).to_numpy()
    width = (roll.quantile(0.9) - roll.quantile(0.1)).shift(1).to_numpy() / (2 * 1.2816)
    distance = np.abs(s.to_numpy() - median)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(width > 0, distance / width, np.where(distance > 0, 1e3, 0.0))
    return unit_score(np.nan_to_num(z, nan=0.0))
