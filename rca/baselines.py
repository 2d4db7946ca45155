"""Published metric-based root-cause baselines, ported for the evaluation (not the product's
method): BARO (Pham et al., FSE 2024) and N-Sigma, as RCAEval implements them.

Both split a wide metric frame ("<service>|<metric>" columns) at the onset, drop the columns
that are constant within either part, fit a scaler on the normal part (BARO: median and
inter-quartile range, sklearn's RobustScaler; N-Sigma: mean and standard deviation), score each
metric by the largest scaled value after the onset (signed, as published) and rank metrics by
score; a service ranks where its first metric does. The onset is the one our method uses (as
RCAEval's evaluation passes the injection time instead of BARO's own change-point detection), so
the baselines are judged on the same windows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

Scaler = Callable[[np.ndarray], tuple[float, float]]


def _robust(values: np.ndarray) -> tuple[float, float]:
    q25, median, q75 = np.nanpercentile(values, [25, 50, 75])
    scale = float(q75 - q25)
    return float(median), scale if scale > 0 else 1.0  # sklearn: a zero scale becomes 1


def _standard(values: np.ndarray) -> tuple[float, float]:
    scale = float(np.nanstd(values))
    return float(np.nanmean(values)), scale if scale > 0 else 1.0


def _varying(frame: pd.DataFrame) -> list[str]:
    """RCAEval's drop_constant: columns with a value other than their first row's."""
    if not len(frame):
        return []
    return [c for c in frame.columns if bool((frame[c] != frame[c].iloc[0]).any())]


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers, with memory in MB where a column is named "mem" (RCAEval's convert_mem_mb: it
    matters where the inter-quartile range is zero and the scale falls back to 1)."""
    out = frame.apply(pd.to_numeric, errors="coerce")
    mem = [c for c in out.columns if str(c).rpartition("|")[2] == "mem"]
    out[mem] = out[mem] / 1e6
    return out


def _rank(normal: pd.DataFrame, anomalous: pd.DataFrame, scaler: Scaler) -> list[str]:
    normal, anomalous = _prepared(normal), _prepared(anomalous)
    keep = set(_varying(anomalous))
    columns = [c for c in _varying(normal) if c in keep]
    scored = []
    for column in columns:
        a = normal[column].to_numpy(np.float64)
        b = anomalous[column].to_numpy(np.float64)
        if not np.isfinite(a).any() or not np.isfinite(b).any():
            continue
        center, scale = scaler(a)
        scored.append((float(np.nanmax((b - center) / scale)), str(column)))
    scored.sort(key=lambda x: -x[0])
    services: list[str] = []
    for _, column in scored:
        service = column.partition("|")[0]
        if service not in services:
            services.append(service)
    return services


def baro(normal: pd.DataFrame, anomalous: pd.DataFrame) -> list[str]:
    """BARO's root-cause scorer: RobustScaler fitted on the normal rows, max after the onset."""
    return _rank(normal, anomalous, _robust)


def n_sigma(normal: pd.DataFrame, anomalous: pd.DataFrame) -> list[str]:
    """N-Sigma: StandardScaler fitted on the normal rows, max after the onset."""
    return _rank(normal, anomalous, _standard)
