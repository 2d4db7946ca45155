"""When did a series start heading for its limit: the onset of a predicted breach's trend.

A breach warning comes long after the trend that causes it began (a leak climbs for an hour
before its forecast crosses the limit), so the incident a breach opens takes its onset from
the series' stored samples, not from the warning: the last change in slope or level toward the
limit within the window given (the caller bounds it, `rca.metric_reference` back).

The method, on the samples in [start, warning]:

1. **Spikes out** (Hampel filter): a value further than 4 robust sigmas from the running median
   of 5 is replaced by that median, so one bad scrape moves nothing. The other values stay as
   they are (smoothing them all would correlate the residuals and make noise look like change).
2. **Segments**: the optimal partition into straight lines (each segment's own line, a level
   step allowed at a boundary), a new segment costing `PENALTY` · sigma² · log n (BIC-like;
   sigma from the first differences' MAD). An old, unrelated change (a deploy's level step hours
   ago) gets a boundary of its own and so does not pull the onset back.
3. **The last change toward the limit**: the last boundary where the new segment ends clearly
   (`HEADS_UP` sigmas) above the line of the segment before it (for a limit below, mirrored).
4. **The knot**: boundaries between separate lines are approximate on a ramp, so the onset is
   the knot of one continuous hinge plus a level step, ``a + b·t + c·(t - t_k)+ + d·[t ≥ t_k]``,
   fitted by least squares from the start of the segment before that change to the warning.

If no change heads toward the limit but the whole window is one significant ramp, the trend
began at or before the window's start, and that is returned; otherwise None (no trend seen).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

MIN_BEFORE = 5  #: samples a knot needs before it
MIN_AFTER = 3  #: and after it
#: the cost of one more straight segment, in noise variances times log(n) (BIC-like)
PENALTY = 3.0
#: how far (noise sigmas) a segment must end above the previous segment's line to head up
HEADS_UP = 3.0
#: t statistic a straight line's slope needs to count as a ramp over the whole window
RAMP_T = 4.0


def despike(values: np.ndarray, *, width: int = 5, sigmas: float = 4.0) -> np.ndarray:
    """Values further than `sigmas` robust sigmas from their running median are replaced by it."""
    n = len(values)
    if n < width:
        return values.copy()
    half = width // 2
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    median = np.median(windows, axis=1)
    dev = values - median
    sigma = 1.4826 * float(np.median(np.abs(dev)))
    if sigma <= 0:
        return values.copy()
    return np.where(np.abs(dev) > sigmas * sigma, median, values)


def _rss(design: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid), coef


def _bic(rss: float, n: int, params: int) -> float:
    return n * float(np.log(max(rss, 1e-300) / n)) + params * float(np.log(n))


def _best_knot(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float] | None:
    """(index, slope before, slope after) of the best hinge knot heading up, if it beats one
    line by BIC; None otherwise."""
    n = len(x)
    if n < MIN_BEFORE + MIN_AFTER:
        return None
    ones = np.ones(n)
    line_rss, _ = _rss(np.column_stack([ones, x]), y)
    best: tuple[float, int, np.ndarray] | None = None
    for k in range(MIN_BEFORE, n - MIN_AFTER + 1):
        after = x >= x[k]
        design = np.column_stack([ones, x, np.where(after, x - x[k], 0.0), after.astype(float)])
        rss, coef = _rss(design, y)
        # Heading up: at the end, the fit stands above where the line before the knot led.
        if coef[2] * (x[-1] - x[k]) + coef[3] <= 0:
            continue
        if best is None or rss < best[0]:
            best = (rss, k, coef)
    if best is None:
        return None
    rss, k, coef = best
    # Knot position, slope change and level step: three more parameters than a line.
    if _bic(rss, n, 5) >= _bic(line_rss, n, 2):
        return None
    return k, float(coef[1]), float(coef[1] + coef[2])


def _ramp(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the whole window is one straight climb (slope significantly above zero)."""
    n = len(x)
    if n < MIN_BEFORE + MIN_AFTER:
        return False
    design = np.column_stack([np.ones(n), x])
    rss, coef = _rss(design, y)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx <= 0:
        return False
    se = np.sqrt(max(rss, 1e-300) / (n - 2) / sxx)
    return bool(coef[1] / se > RAMP_T)


def segments(
    x: np.ndarray, y: np.ndarray, *, penalty: float, min_size: int = MIN_BEFORE
) -> list[int]:
    """Optimal partition of (x, y) into straight segments of at least `min_size` points, each
    new segment costing `penalty` on top of the residual sum of squares: the segments' start
    indices, the first 0. Each segment's line is fitted on its own (a level step at a boundary
    is allowed). O(n²) from prefix sums."""
    n = len(x)
    y = y - y.mean()  # conditioning: the sums below stay small

    def prefix(a: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(a)])

    sx, sy, sxx, sxy, syy = (prefix(a) for a in (x, y, x * x, x * y, y * y))
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    back = np.zeros(n + 1, dtype=np.int64)
    for j in range(min_size, n + 1):
        i = np.arange(0, j - min_size + 1)
        i = i[np.isfinite(best[i])]
        if not len(i):
            continue
        k = j - i
        mx, my = sx[j] - sx[i], sy[j] - sy[i]
        cxx = sxx[j] - sxx[i] - mx * mx / k
        cxy = sxy[j] - sxy[i] - mx * my / k
        cyy = syy[j] - syy[i] - my * my / k
        rss = np.maximum(cyy - cxy * cxy / np.maximum(cxx, 1e-12), 0.0)
        cost = best[i] + rss + penalty
        b = int(np.argmin(cost))
        best[j], back[j] = cost[b], i[b]
    starts, j = [], n
    while j > 0:
        j = int(back[j])
        starts.append(j)
    return sorted(starts)


def _line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(intercept, slope) of the least-squares line."""
    return _rss(np.column_stack([np.ones(len(x)), x]), y)[1]


def trend_onset(times: np.ndarray, values: np.ndarray, *, rising: bool = True) -> int | None:
    """Epoch seconds at which the series began its trend toward the limit (`rising`: a limit
    above; otherwise below), from its samples (epoch seconds, values) up to the warning; None
    when the samples show no such trend."""
    t = np.asarray(times, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    n = len(t)
    if n < MIN_BEFORE + MIN_AFTER:
        return None
    y = despike(v if rising else -v)
    # Minutes from the start: keeps the fits well conditioned.
    x = (t - t[0]).astype(np.float64) / 60.0
    # The noise level from first differences (robust; a trend only shifts their median).
    d = np.diff(y)
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    if sigma <= 0:
        sigma = max(float(np.std(d)), 1e-12)
    starts = segments(x, y, penalty=PENALTY * sigma**2 * float(np.log(n)))
    bounds = [*starts, n]
    lines = [_line(x[a:b], y[a:b]) for a, b in pairwise(bounds)]

    def heads_up(m: int) -> bool:
        """Whether the change into segment m moved toward the limit: at m's end, its line
        stands clearly above where the previous segment's line led."""
        end = x[bounds[m + 1] - 1]
        (a0, a1), (b0, b1) = lines[m - 1], lines[m]
        return bool((b0 + b1 * end) - (a0 + a1 * end) > HEADS_UP * sigma)

    last = next((m for m in range(len(lines) - 1, 0, -1) if heads_up(m)), None)
    if last is None:
        return int(t[0]) if _ramp(x, y) else None
    # The knot itself: a continuous hinge (plus a level step) fitted from the start of the
    # segment before the climb, where the boundaries of separate lines are only approximate.
    lo = bounds[last - 1]
    found = _best_knot(x[lo:], y[lo:])
    return int(t[lo + found[0]]) if found is not None else int(t[bounds[last]])
