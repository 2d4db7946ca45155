"""The span frame: the one in-memory shape spans take between intake, the span store and RCA.

Every span source (OTLP/HTTP, OTLP JSON files, Jaeger JSON, the Nezha CSV layout) produces a
pandas DataFrame with exactly these columns; the span store writes and reads it; ``rca`` ranks
suspects from it. Times are integer nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: column -> dtype. ``parent_id`` is "" for a root span. ``error`` is True when the span's status
#: is an error (OTLP STATUS_CODE_ERROR, an HTTP 5xx / gRPC error tag, or an ``error`` tag).
SPAN_COLUMNS: dict[str, str] = {
    "trace_id": "object",
    "span_id": "object",
    "parent_id": "object",
    "service": "object",
    "operation": "object",
    "start_ns": "int64",
    "end_ns": "int64",
    "error": "bool",
}


def empty_spans() -> pd.DataFrame:
    """A span frame with no rows and the right dtypes."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in SPAN_COLUMNS.items()})


def normalize_spans(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the span columns, in order, with their dtypes.

    Raises ``ValueError`` naming the missing columns; fills ``parent_id`` gaps with "" and
    ``error`` gaps with False; drops rows whose end is before their start.
    """
    missing = [name for name in SPAN_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"span frame lacks column(s): {', '.join(missing)}")
    out = frame.loc[:, list(SPAN_COLUMNS)].copy()
    out["parent_id"] = out["parent_id"].fillna("").astype(str)
    out["error"] = out["error"].fillna(False).astype(bool)
    for name in ("trace_id", "span_id", "service", "operation"):
        out[name] = out[name].astype(str)
    for name in ("start_ns", "end_ns"):
        out[name] = out[name].astype(np.int64)
    out = out[out["end_ns"] >= out["start_ns"]]
    return out.reset_index(drop=True)
