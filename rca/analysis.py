"""Root-cause ranking over spans and metrics: what moved between a baseline and an incident
window, where in the call graph, and which service and operation most likely started it.

Evidence, all as robust z-scores against the baseline (median and MAD, with an IQR and a 1 %-of-
level floor so that a flat baseline does not turn noise into certainty):

- **self time** per (service, operation): a span's duration minus its children's. A slow leaf or
  a CPU-starved pod shows here at the culprit, not at its callers, whose durations only carry
  the children's time. Both directions count: a service that errors early *loses* self time.
- **edge gap** per callee: the caller's client span minus the callee's server span, i.e. time
  on the wire or in queues. A network delay at a pod shows on the edges into it, and it is the
  callee that is blamed (the caller's own code did not change).
- **errors**: the error share of a (service, operation), when spans carry a status.
- **resource metrics** (optional): per-service CPU / memory style metrics, robust z of the
  incident mean against the baseline; they weigh half as much as span evidence, and are the
  only evidence when there are no spans.
- **model scores** (optional): calibrated anomaly scores from `models`, per service.

A service's span score is the largest |z| of its operations' self time, its inbound edge gap and
its error share; each evidence kind is scaled by its largest value over services, so one kind
cannot drown the others, and the scores add. The call graph (caller -> callee from parent/child
spans) gives each suspect's call path from the entry service.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from rca.findings import Evidence, RcaReport, Suspect

#: metrics whose name contains one of these count as resource saturation evidence
RESOURCE_HINTS = ("cpu", "mem", "memory")
METRIC_WEIGHT = 0.5
MIN_BASE = 5  #: baseline spans an operation needs to be judged
MIN_INCIDENT = 3
EXCLUDE_CLIENT_SELF = True


def epoch_ns(index: pd.Index) -> np.ndarray:
    """Epoch nanoseconds of a datetime index, whatever its unit; naive times are UTC."""
    times = pd.DatetimeIndex(index)
    if times.tz is None:
        times = times.tz_localize(UTC)
    return np.asarray(times.as_unit("ns").asi8)


def robust_z(value: float, baseline: np.ndarray) -> float:
    base = baseline[np.isfinite(baseline)]
    if len(base) == 0 or not np.isfinite(value):
        return 0.0
    med = float(np.median(base))
    mad = float(np.median(np.abs(base - med))) * 1.4826
    q75, q25 = np.percentile(base, [75, 25])
    scale = max(mad, float(q75 - q25) / 1.349, 0.01 * abs(med), 1e-9)
    return (value - med) / scale


def annotate(spans: pd.DataFrame) -> pd.DataFrame:
    """Add dur, self (duration minus its children's), parent_service, cross (the parent runs in
    another service), gap (parent's duration minus this span's, for cross spans), client (the
    span's only child runs in another service) and own_error (failed, but not because a child
    did). Vectorised on row positions: 200,000 spans in well under a second."""
    df = spans.reset_index(drop=True).copy()
    n = len(df)
    dur = (df["end_ns"].to_numpy(np.int64) - df["start_ns"].to_numpy(np.int64)).astype(np.float64)
    first = ~df["span_id"].duplicated().to_numpy()
    rows = np.flatnonzero(first)
    position = pd.Index(df["span_id"].to_numpy()[first]).get_indexer(df["parent_id"].to_numpy())
    parent = np.where(position >= 0, rows[np.maximum(position, 0)], -1)
    has_parent = parent >= 0
    service = df["service"].to_numpy(dtype=object)
    parent_service = np.where(has_parent, service[np.maximum(parent, 0)], None)
    cross = has_parent & (parent_service != service)
    below = parent[has_parent]
    child_time = np.bincount(below, weights=dur[has_parent], minlength=n)
    child_count = np.bincount(below, minlength=n)
    remote_count = np.bincount(parent[cross], minlength=n)
    error = df["error"].to_numpy(dtype=bool)
    failed_children = np.bincount(parent[has_parent & error], minlength=n)
    parent_dur = np.where(has_parent, dur[np.maximum(parent, 0)], np.nan)
    df["dur"] = dur
    df["self"] = np.clip(dur - child_time, 0.0, None)
    df["parent_service"] = parent_service
    df["cross"] = cross
    df["gap"] = np.where(cross, parent_dur - dur, np.nan)
    # A client span: its only child runs in another service. Its self time is time on the
    # wire to that child, evidence about the edge (the callee's gap), not the caller's code.
    df["client"] = (child_count == 1) & (remote_count == 1)
    # An error a span only passes on from a failed child is not its own: blame the deepest.
    df["own_error"] = error & (failed_children == 0)
    return df


def call_edges(spans: pd.DataFrame) -> set[tuple[str, str]]:
    """caller -> callee service pairs seen in parent/child spans."""
    df = spans if "parent_service" in spans else annotate(spans)
    cross = df[df["cross"]]
    return set(zip(cross["parent_service"].astype(str), cross["service"], strict=True))


def entry_services(spans: pd.DataFrame) -> list[str]:
    roots = spans[spans["parent_id"] == ""]["service"]
    return list(roots.value_counts().index)


def call_path(edges: set[tuple[str, str]], entries: Sequence[str], target: str) -> list[str]:
    """Shortest caller -> callee path from an entry service to `target` (BFS)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    for entry in entries:
        seen = {entry: [entry]}
        queue = deque([entry])
        while queue:
            node = queue.popleft()
            if node == target:
                return seen[node]
            for nxt in graph.get(node, []):
                if nxt not in seen:
                    seen[nxt] = [*seen[node], nxt]
                    queue.append(nxt)
    return [target]


def span_evidence(
    base: pd.DataFrame,
    incident: pd.DataFrame,
    *,
    seconds: tuple[float, float] | None = None,
) -> dict[str, list[Evidence]]:
    """Per service, the evidence its spans give (all kinds; z may be small). `seconds`: the
    lengths of the baseline and incident windows, for throughput (spans per second)."""
    b = base if "self" in base else annotate(base)
    i = incident if "self" in incident else annotate(incident)
    out: dict[str, list[Evidence]] = {}
    base_ops = {key: g for key, g in b.groupby(["service", "operation"])}
    for (service, operation), g in i.groupby(["service", "operation"]):
        bo = base_ops.get((service, operation))
        if bo is None or len(bo) < MIN_BASE or len(g) < MIN_INCIDENT:
            continue
        out.setdefault(service, [])
        if EXCLUDE_CLIENT_SELF and (g["client"].sum() + bo["client"].sum()) * 2 >= len(g) + len(bo):
            # A client operation (most of its spans wrap one remote child; some lose theirs to
            # sampling or a window edge): its self time is the edge gap, judged at the callee.
            continue
        after = float(np.median(g["self"]))
        z = robust_z(after, bo["self"].to_numpy())
        out[service].append(
            Evidence(
                "self_time",
                str(operation),
                float(np.median(bo["self"])) / 1e6,
                after / 1e6,
                z,
                "median self time, ms",
            )
        )
        if bool(g["own_error"].any() or bo["own_error"].any()):
            before_share, after_share = float(bo["own_error"].mean()), float(g["own_error"].mean())
            n = len(g)
            p = max(before_share, 1.0 / (len(bo) + 1))
            z_err = (after_share - before_share) / max(np.sqrt(p * (1 - p) / n), 1e-9)
            out[service].append(
                Evidence("errors", str(operation), before_share, after_share, z_err, "error share")
            )
    if seconds is not None and min(seconds) > 0:
        # Throughput is context, not scored: a drop in load starts at the entry service and
        # shows everywhere downstream, whoever is at fault.
        base_counts = b.groupby("service").size()
        for service, count in i.groupby("service").size().items():
            before = float(base_counts.get(service, 0)) / seconds[0]
            after = float(count) / seconds[1]
            z = (after - before) / max(np.sqrt(max(before, 1.0 / seconds[0]) / seconds[1]), 1e-9)
            out.setdefault(str(service), []).append(
                Evidence("throughput", "spans/s", before, after, z, "spans started per second")
            )
    base_edges = {key: g for key, g in b[b["cross"]].groupby("service")}
    for service, g in i[i["cross"]].groupby("service"):
        bo = base_edges.get(service)
        if bo is None or len(bo) < MIN_BASE or len(g) < MIN_INCIDENT:
            continue
        after = float(np.median(g["gap"]))
        callers = ", ".join(sorted(set(g["parent_service"].astype(str))))
        out.setdefault(str(service), []).append(
            Evidence(
                "edge_gap",
                f"{callers} -> {service}",
                float(np.median(bo["gap"])) / 1e6,
                after / 1e6,
                robust_z(after, bo["gap"].to_numpy()),
                "caller's span minus callee's span, ms",
            )
        )
    return out


def metric_evidence(
    base: pd.DataFrame, incident: pd.DataFrame, *, resource_only: bool = False
) -> dict[str, list[Evidence]]:
    """Per service from wide metric frames whose columns are "<service>|<metric>": robust z of
    the incident mean against the baseline rows."""
    out: dict[str, list[Evidence]] = {}
    for column in incident.columns:
        service, _, metric = str(column).partition("|")
        if resource_only and not any(h in metric.lower() for h in RESOURCE_HINTS):
            continue
        if column not in base:
            continue
        b = pd.to_numeric(base[column], errors="coerce").to_numpy(dtype=np.float64)
        a = pd.to_numeric(incident[column], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(b).sum() < 3 or not np.isfinite(a).any():
            continue
        after = float(np.nanmean(a))
        out.setdefault(service, []).append(
            Evidence(
                "metric",
                metric,
                float(np.nanmedian(b)),
                after,
                robust_z(after, b),
                "mean in the window vs baseline median",
            )
        )
    return out


def _strength(evidence: Sequence[Evidence], kinds: Sequence[str]) -> float:
    values = [abs(e.z) for e in evidence if e.kind in kinds]
    return max(values) if values else 0.0


def _scaled(scores: Mapping[str, float]) -> dict[str, float]:
    top = max(scores.values(), default=0.0)
    return {k: (v / top if top > 0 else 0.0) for k, v in scores.items()}


def analyze(
    spans: pd.DataFrame | None,
    *,
    baseline: tuple[int, int],
    incident: tuple[int, int],
    metrics: pd.DataFrame | None = None,
    metric_scores: Mapping[str, float] | None = None,
    metric_windows: tuple[tuple[int, int], tuple[int, int]] | None = None,
    symptom: str | None = None,
    top_evidence: int = 4,
) -> RcaReport:
    """Rank services and operations for an incident.

    spans: a span frame (ingest.spans.SPAN_COLUMNS) covering both windows; windows are [start,
    end) in epoch ns. metrics: a wide frame indexed by UTC timestamps with columns
    "<service>|<metric>" (e.g. "cart|cpu"). metric_scores: calibrated anomaly scores per service
    from the forecasting models. Any of the three may be missing. metric_windows: (baseline,
    incident) for the metrics when they differ from the spans' (coarser metric steps need a
    longer baseline).
    """
    evidence: dict[str, list[Evidence]] = {}
    edges: set[tuple[str, str]] = set()
    entries: list[str] = []
    if spans is not None and len(spans):
        annotated = annotate(spans)
        start = annotated["start_ns"]
        in_base = (start >= baseline[0]) & (start < baseline[1])
        in_incident = (start >= incident[0]) & (start < incident[1])
        base_spans, incident_spans = annotated[in_base], annotated[in_incident]
        lengths = ((baseline[1] - baseline[0]) / 1e9, (incident[1] - incident[0]) / 1e9)
        for service, items in span_evidence(base_spans, incident_spans, seconds=lengths).items():
            evidence.setdefault(service, []).extend(items)
        edges = call_edges(annotated)
        entries = entry_services(incident_spans) or entry_services(spans)
    span_kinds = ("self_time", "edge_gap", "errors")
    span_score = _scaled({s: _strength(ev, span_kinds) for s, ev in evidence.items()})
    metric_score: dict[str, float] = {}
    if metrics is not None and len(metrics):
        stamps = epoch_ns(metrics.index)
        m_base, m_incident = metric_windows or (baseline, incident)
        b = metrics[(stamps >= m_base[0]) & (stamps < m_base[1])]
        a = metrics[(stamps >= m_incident[0]) & (stamps < m_incident[1])]
        only_resources = bool(span_score)
        for service, items in metric_evidence(b, a, resource_only=only_resources).items():
            evidence.setdefault(service, []).extend(items)
        metric_score = _scaled({s: _strength(ev, ("metric",)) for s, ev in evidence.items()})
    weight = METRIC_WEIGHT if span_score else 1.0
    model_score = _scaled(dict(metric_scores or {}))
    services = set(evidence) | set(model_score)
    total = {
        s: span_score.get(s, 0.0) + weight * metric_score.get(s, 0.0) + 0.5 * model_score.get(s, 0)
        for s in services
    }
    ranked = sorted(services, key=lambda s: (-total[s], s))
    suspects = []
    for service in ranked:
        items = sorted(
            evidence.get(service, []), key=lambda e: (e.kind == "throughput", -abs(e.z))
        )[:top_evidence]
        op = next((e.subject for e in items if e.kind in ("self_time", "errors")), None)
        suspects.append(
            Suspect(
                service, op, round(total[service], 4), items, call_path(edges, entries, service)
            )
        )
    operations = []
    for service in ranked:
        for e in evidence.get(service, []):
            if e.kind in ("self_time", "errors"):
                operations.append(Suspect(service, e.subject, round(abs(e.z), 4), [e], []))
    operations.sort(key=lambda s: -s.score)
    # One entry per (service, operation): the strongest evidence wins.
    seen: set[tuple[str, str | None]] = set()
    unique_ops = []
    for s in operations:
        if (s.service, s.operation) not in seen:
            seen.add((s.service, s.operation))
            unique_ops.append(s)
    start = datetime.fromtimestamp(incident[0] / 1e9, UTC)
    if symptom is None:
        entry = entries[0] if entries else (ranked[0] if ranked else "unknown")
        symptom = f"{entry}: latency or errors moved (entry service of the traces)"
    return RcaReport(
        started_at=start,
        window=(start, datetime.fromtimestamp(incident[1] / 1e9, UTC)),
        baseline=(
            datetime.fromtimestamp(baseline[0] / 1e9, UTC),
            datetime.fromtimestamp(baseline[1] / 1e9, UTC),
        ),
        symptom=symptom,
        suspects=suspects,
        operations=unique_ops[:20],
    )


# ------------------------------------------------------------------------- baselines


def _rank_by_metric(
    base: pd.DataFrame,
    incident: pd.DataFrame,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> list[str]:
    """Services by the largest `score(baseline values, incident values)` of their metrics."""
    scores: dict[str, float] = {}
    for column in incident.columns:
        if column not in base:
            continue
        service = str(column).partition("|")[0]
        b = pd.to_numeric(base[column], errors="coerce").dropna().to_numpy(np.float64)
        a = pd.to_numeric(incident[column], errors="coerce").dropna().to_numpy(np.float64)
        if len(b) < 3 or len(a) == 0:
            continue
        scores[service] = max(scores.get(service, 0.0), score(b, a))
    return sorted(scores, key=lambda s: (-scores[s], s))


def n_sigma(metrics_base: pd.DataFrame, metrics_incident: pd.DataFrame) -> list[str]:
    """N-Sigma: per service, the largest |mean incident - mean baseline| / std baseline."""
    return _rank_by_metric(
        metrics_base,
        metrics_incident,
        lambda b, a: abs(float(a.mean()) - float(b.mean())) / max(float(b.std()), 1e-9),
    )


def baro(metrics_base: pd.DataFrame, metrics_incident: pd.DataFrame) -> list[str]:
    """BARO-style: per service, the largest robust z (median / IQR) of any incident value."""

    def robust(b: np.ndarray, a: np.ndarray) -> float:
        q75, q25 = np.percentile(b, [75, 25])
        return float(np.max(np.abs(a - np.median(b)))) / max(float(q75 - q25), 1e-9)

    return _rank_by_metric(metrics_base, metrics_incident, robust)
