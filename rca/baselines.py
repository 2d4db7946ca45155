"""Published metric-based root-cause baselines, ported for the evaluation (not the product's
method): BARO (Pham et al., FSE 2024) and N-Sigma, as RCAEval implements them.

Both split a wide metric frame ("<service>|<metric>" columns) at the onset, drop the columns
that are constant within either part, fit a scaler on the normal part (BARO: median and
inter-quartile range, sklearn's RobustScaler; N-Sigma: mean and standard deviation), score each
metric by the largest scaled value after the onset (signed, as published) and rank metrics by
score; a service ranks where its first metric does. BARO's onset comes from Bayesian online
change-point detection (`bocpd_onset`) when no onset is given.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

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


def bocpd_onset(
    metrics: pd.DataFrame, *, hazard: float = 1 / 100, max_run: int = 300
) -> int | None:
    """Row position of the most likely change point of a wide frame, by Bayesian online change-
    point detection (Adams & MacKay 2007) with a Gaussian model of unknown mean and variance per
    column (Student-t predictive) and a constant hazard; the columns are standardised and their
    log predictive densities added (independent columns). Returns the first row after the most
    probable current run, or None when the frame is too short."""
    data = metrics.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    data = data[:, np.isfinite(data).all(axis=0) & (np.nanstd(data, axis=0) > 0)]
    n, d = data.shape
    if n < 4 or d == 0:
        return None
    x = (data - np.median(data, axis=0)) / (np.std(data, axis=0) + 1e-9)
    mu0, kappa0, alpha0, beta0 = 0.0, 1.0, 1.0, 1.0
    log_r = np.array([0.0])  # log P(run length) at the current row
    mu = np.full((1, d), mu0)
    kappa = np.full((1, 1), kappa0)
    alpha = np.full((1, 1), alpha0)
    beta = np.full((1, d), beta0)
    log_h, log_1h = np.log(hazard), np.log1p(-hazard)
    for t in range(n):
        scale2 = beta * (kappa + 1) / (alpha * kappa)
        nu = 2 * alpha
        z = (x[t] - mu) ** 2 / (nu * scale2)
        log_pred = (
            gammaln((nu + 1) / 2)
            - gammaln(nu / 2)
            - 0.5 * np.log(np.pi * nu * scale2)
            - (nu + 1) / 2 * np.log1p(z)
        ).sum(axis=1)
        growth = log_r + log_pred + log_1h
        cp = logsumexp(log_r + log_pred + log_h)
        log_r = np.concatenate([[cp], growth])
        log_r -= logsumexp(log_r)
        # Posterior updates for every run length (the new one starts from the prior).
        mu_new = (kappa * mu + x[t]) / (kappa + 1)
        beta_new = beta + kappa * (x[t] - mu) ** 2 / (2 * (kappa + 1))
        mu = np.vstack([np.full((1, d), mu0), mu_new])
        beta = np.vstack([np.full((1, d), beta0), beta_new])
        kappa = np.vstack([[[kappa0]], kappa + 1])
        alpha = np.vstack([[[alpha0]], alpha + 0.5])
        if len(log_r) > max_run:
            log_r, mu, beta = log_r[:max_run], mu[:max_run], beta[:max_run]
            kappa, alpha = kappa[:max_run], alpha[:max_run]
            log_r -= logsumexp(log_r)
    # The most probable length of the run in progress at the last row dates its start
    # (P(r_t = 0) itself is flat under a constant hazard).
    run = int(np.argmax(log_r))
    return max(1, n - run)
