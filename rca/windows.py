"""Incident windows: where the reference ends and the incident begins, the same rules for
`rca-eval` and the daemon.

Everything is relative to an onset (`onset_windows`): the incident runs from the onset for at
most `INCIDENT_S`; the reference is everything available before it up to a guard band of
`GUARD_S`, so that neither a late label nor a file or scrape that runs past its nominal end puts
the fault into the reference. The onset itself is the change found in the spans within
`ONSET_SEARCH_S` of the labelled or alarmed time (`detect_onset`): labels and alarms are often a
minute off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rca.analysis import Window, annotate

#: the reference ends this long before the onset (chosen by leave-one-fault-type-out, docs/rca.md)
GUARD_S = 30.0
#: the incident window: at most this long from the onset
INCIDENT_S = 180.0
#: whether the onset is the change found in the spans near the label / alarm (detect_onset)
DETECT_ONSET = True
#: how far from a label or an alarm the onset is searched for in the spans
ONSET_SEARCH_S = 60.0


def onset_windows(
    onset_ns: int,
    *,
    start_ns: int,
    end_ns: int,
    guard_s: float = GUARD_S,
    incident_s: float = INCIDENT_S,
) -> tuple[Window, Window]:
    """(reference, incident) in epoch ns around an onset, within the data [start_ns, end_ns):
    the reference is [start, onset - guard), the incident [onset, min(end, onset + incident_s))."""
    guard_end = onset_ns - int(guard_s * 1e9)
    reference = (start_ns, max(start_ns, guard_end))
    incident = (onset_ns, max(onset_ns + 1, min(end_ns, onset_ns + int(incident_s * 1e9))))
    return reference, incident


def detect_onset(
    spans: pd.DataFrame,
    near_ns: int,
    *,
    search_s: float = ONSET_SEARCH_S,
    bin_s: float = 5.0,
    edge_s: float = 20.0,
) -> int:
    """The start of the change in the spans nearest a labelled or alarmed onset: the split, within
    `search_s` of `near_ns`, that best separates before from after over all operations' self
    times, edge gaps and own-error shares (each standardised, averaged per `bin_s` bin; the
    summed two-sample statistic n_a n_b / n (mean_a - mean_b)^2 over series). Splits within
    `edge_s` of the data's ends are not considered (traces are cut there). Returns `near_ns`
    when the spans are too few to tell."""
    df = spans if "self" in spans else annotate(spans)
    # Only the neighbourhood counts: a change an hour earlier is another story.
    reach = int(2 * search_s * 1e9)
    df = df[(df["start_ns"] >= near_ns - reach) & (df["start_ns"] < near_ns + reach)]
    if len(df) == 0:
        return near_ns
    start = df["start_ns"].to_numpy(np.int64)
    lo = max(near_ns - int(search_s * 1e9), int(start.min()) + int(edge_s * 1e9))
    hi = min(near_ns + int(search_s * 1e9), int(start.max()) - int(edge_s * 1e9))
    if hi <= lo:
        return near_ns
    step = int(bin_s * 1e9)
    origin = int(start.min())
    bins = (start - origin) // step
    n_bins = int(bins.max()) + 1
    server = ~df["client"].to_numpy(bool)
    values = [
        ("self", server, np.log1p(df["self"].to_numpy(np.float64) / 1e3)),
        (
            "gap",
            df["cross"].to_numpy(bool),
            np.log1p(np.clip(df["gap"].to_numpy(np.float64), 0, None) / 1e3),
        ),
        ("err", np.ones(len(df), bool), df["own_error"].to_numpy(np.float64)),
    ]
    keys = df["service"].astype(str) + "|" + df["operation"].astype(str)
    rows = []
    for name, mask, value in values:
        frame = pd.DataFrame({"key": name + "|" + keys[mask], "bin": bins[mask], "v": value[mask]})
        frame = frame[np.isfinite(frame["v"])]
        if name == "err" and not frame["v"].any():
            continue
        grid = frame.groupby(["key", "bin"])["v"].mean().unstack("bin")
        rows.append(grid.reindex(columns=range(n_bins)))
    if not rows:
        return near_ns
    table = pd.concat(rows)
    table = table[table.notna().sum(axis=1) >= max(4, n_bins // 2)]
    if table.empty:
        return near_ns
    x = table.to_numpy(np.float64)
    center = np.nanmedian(x, axis=1, keepdims=True)
    spread = np.nanmedian(np.abs(x - center), axis=1, keepdims=True) * 1.4826
    spread = np.maximum(spread, np.nanstd(x, axis=1, keepdims=True) * 0.1 + 1e-6)
    z = np.nan_to_num((x - center) / spread)
    seen = (~np.isnan(x)).astype(np.float64)
    best, best_at = -1.0, near_ns
    for b in range(1, n_bins):
        at = origin + b * step
        if at < lo or at > hi:
            continue
        n_a, n_b = seen[:, :b].sum(axis=1), seen[:, b:].sum(axis=1)
        ok = (n_a >= 2) & (n_b >= 2)
        if not ok.any():
            continue
        m_a = z[:, :b].sum(axis=1)[ok] / n_a[ok]
        m_b = z[:, b:].sum(axis=1)[ok] / n_b[ok]
        stat = float((n_a[ok] * n_b[ok] / (n_a[ok] + n_b[ok]) * (m_a - m_b) ** 2).sum())
        if stat > best:
            best, best_at = stat, at
    return best_at
