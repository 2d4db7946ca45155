"""Labelled root-cause cases on disk: the Nezha layout (traces + per-pod metrics) and the RCD
layout (metrics only), read into span frames and wide metric frames for `rca.analysis`.

Nezha layout (any system): `rca_data/<day>/<day>-fault_list.json` (per hour, faults with
`inject_time` UTC, `inject_pod`, `inject_type`), `rca_data/<day>/trace/<HH_MM>_trace.csv[.gz]`
(one file per minute; the file named HH_MM holds spans that started in roughly the minute before
it), `rca_data/<day>/metric/<pod>_metric.csv` (1-minute rows, `Time` in UTC text), and
`construct_data/<day>/trace/` with fault-free minutes. A case is usable when the two trace
minutes after the injection minute exist (the incident window) and either the injection-minute
file or a fault-free construct_data minute exists (the baseline). A service is its pod name
minus the last two dash-separated parts.

RCD layout: `<service>-<fault>/<run>/{normal,anomalous}.csv`, wide tables with a `time` column
and `<service>_<metric>` columns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.spans import normalize_spans
from rca.analysis import epoch_ns
from rca.windows import DETECT_ONSET, GUARD_S, detect_onset, onset_windows

NEZHA_SPAN_COLUMNS = {
    "TraceID": "trace_id",
    "SpanID": "span_id",
    "ParentID": "parent_id",
    "PodName": "service",
    "OperationName": "operation",
    "StartTimeUnixNano": "start_ns",
    "EndTimeUnixNano": "end_ns",
}
_RCD_METRIC = re.compile(r"^(?P<service>.+)_(?P<metric>cpu|mem|lod|lat_\d+)$")


def service_of_pod(pod: str) -> str:
    parts = str(pod).split("-")
    return "-".join(parts[:-2]) if len(parts) > 2 else str(pod)


@dataclass(frozen=True)
class NezhaCase:
    system: str  #: the folder's name
    day: str
    inject_time: pd.Timestamp
    pod: str
    service: str
    fault_type: str
    incident_files: tuple[Path | None, ...]
    baseline_file: Path | None
    metric_dir: Path

    @property
    def usable(self) -> bool:
        return self.baseline_file is not None and all(self.incident_files)

    @property
    def name(self) -> str:
        return f"{self.day} {self.inject_time:%H:%M:%S} {self.fault_type} {self.service}"

    def missing(self) -> list[str]:
        out = []
        minute = self.inject_time.floor("min")
        for k, f in enumerate(self.incident_files, 1):
            if f is None:
                out.append(f"trace {(minute + pd.Timedelta(minutes=k)):%H_%M}")
        if self.baseline_file is None:
            out.append(f"baseline trace {minute:%H_%M} (and no fault-free minute)")
        return out


def _trace_file(folder: Path, minute: pd.Timestamp) -> Path | None:
    for suffix in (".csv", ".csv.gz"):
        path = folder / f"{minute:%H_%M}_trace{suffix}"
        if path.is_file():
            return path
    return None


def nezha_cases(root: Path) -> list[NezhaCase]:
    """Every fault listed under `root/rca_data`, usable or not, in time order."""
    out = []
    for day_dir in sorted(p for p in (root / "rca_data").glob("*") if p.is_dir()):
        fault_file = next(iter(sorted(day_dir.glob("*fault_list.json"))), None)
        if fault_file is None:
            continue
        faults = json.loads(fault_file.read_text(encoding="utf-8"))
        construct = root / "construct_data" / day_dir.name / "trace"
        quiet = sorted(construct.glob("*_trace.csv*")) if construct.is_dir() else []
        for items in faults.values():
            for fault in items:
                at = pd.Timestamp(fault["inject_time"], tz="UTC")
                minute = at.floor("min")
                trace_dir = day_dir / "trace"
                incident = tuple(
                    _trace_file(trace_dir, minute + pd.Timedelta(minutes=k)) for k in (1, 2)
                )
                baseline = _trace_file(trace_dir, minute) or (quiet[0] if quiet else None)
                out.append(
                    NezhaCase(
                        system=root.name,
                        day=day_dir.name,
                        inject_time=at,
                        pod=str(fault["inject_pod"]),
                        service=service_of_pod(fault["inject_pod"]),
                        fault_type=str(fault["inject_type"]),
                        incident_files=incident,
                        baseline_file=baseline,
                        metric_dir=day_dir / "metric",
                    )
                )
    return sorted(out, key=lambda c: c.inject_time)


def read_nezha_spans(path: Path) -> pd.DataFrame:
    """One Nezha minute file (CSV or gzip CSV) as a span frame; Nezha spans carry no status."""
    raw = pd.read_csv(path, usecols=list(NEZHA_SPAN_COLUMNS), dtype={"ParentID": str})
    frame = raw.rename(columns=NEZHA_SPAN_COLUMNS)
    frame["parent_id"] = frame["parent_id"].fillna("").replace("root", "")
    frame["service"] = frame["service"].map(service_of_pod)
    frame["error"] = False
    return normalize_spans(frame)


def read_nezha_metrics(metric_dir: Path) -> pd.DataFrame:
    """Per-pod metric files as one wide frame: UTC index, columns "<service>|<metric>" (the
    per-minute mean when a service has several pods)."""
    frames = []
    for path in sorted(metric_dir.glob("*_metric.csv")):
        raw = pd.read_csv(path)
        if "Time" not in raw:
            continue
        when = pd.to_datetime(raw["Time"].astype(str).str.slice(0, 19), utc=True)
        values = raw.drop(columns=[c for c in ("Time", "TimeStamp", "PodName") if c in raw])
        values = values.apply(pd.to_numeric, errors="coerce")
        values = values[[c for c in values.columns if not c.startswith("Node")]]
        service = service_of_pod(path.name[: -len("_metric.csv")])
        values.columns = [f"{service}|{c}" for c in values.columns]
        values.index = when.dt.floor("min")
        frames.append(values.groupby(level=0).mean())
    if not frames:
        return pd.DataFrame()
    wide = pd.concat(frames, axis=1)
    return wide.T.groupby(level=0).mean().T.sort_index()


@dataclass
class NezhaWindows:
    spans: pd.DataFrame
    baseline: tuple[int, int]
    incident: tuple[int, int]
    onset: int  #: epoch ns: the labelled injection time, or the change found near it


def case_windows(
    case: NezhaCase, *, guard_s: float = GUARD_S, detect: bool = DETECT_ONSET
) -> NezhaWindows:
    """The case's spans (baseline file + the two incident files) and onset-relative windows in
    epoch ns (`rca.windows.onset_windows`), from the labelled injection time or, with `detect`,
    from the change in the spans nearest it (`rca.windows.detect_onset`).

    Minute files overlap and run past their minute, so the windows are cut by span start time,
    never at a file boundary: the reference is every span that started before the onset minus
    the guard band, the incident every span from the onset on. A fault-free minute recorded at
    another time is moved to end just before that reference ends (and is not searched for the
    onset: its seam is no change of the system's)."""
    if not case.usable:
        raise ValueError(f"case {case.name} lacks {', '.join(case.missing())}")
    assert case.baseline_file is not None
    parts = [read_nezha_spans(p) for p in case.incident_files if p is not None]
    quiet = read_nezha_spans(case.baseline_file)
    same_day = case.baseline_file.parent == case.metric_dir.parent / "trace"
    if same_day:
        parts.append(quiet)  # the injection minute: same time line
    live = pd.concat(parts, ignore_index=True).drop_duplicates("span_id", ignore_index=True)
    onset = int(case.inject_time.as_unit("ns").value)
    if detect:
        onset = detect_onset(live, onset)
    guard_end = onset - int(guard_s * 1e9)
    spans = live
    if not same_day:
        shift = int(quiet["start_ns"].max()) - min(int(live["start_ns"].min()), guard_end) + 1
        moved = quiet.assign(start_ns=quiet["start_ns"] - shift, end_ns=quiet["end_ns"] - shift)
        spans = pd.concat([live, moved], ignore_index=True)
        spans = spans.drop_duplicates("span_id", ignore_index=True)
    starts = spans["start_ns"]
    reference, incident = onset_windows(
        onset, start_ns=int(starts.min()), end_ns=int(starts.max()) + 1, guard_s=guard_s
    )
    return NezhaWindows(spans, reference, incident, onset)


def metric_windows(
    case: NezhaCase,
    metrics: pd.DataFrame,
    *,
    guard_s: float = GUARD_S,
    onset_ns: int | None = None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(reference, incident) in epoch ns for a case's 1-minute metrics: everything recorded
    before the onset (the labelled one unless given) minus the guard band (whole days here), and
    the incident from the onset."""
    onset = int(case.inject_time.as_unit("ns").value) if onset_ns is None else onset_ns
    stamps = epoch_ns(metrics.index) if len(metrics) else np.array([onset])
    return onset_windows(
        onset, start_ns=int(stamps.min()), end_ns=int(stamps.max()) + 1, guard_s=guard_s
    )


@dataclass(frozen=True)
class RcdCase:
    name: str
    service: str
    fault_type: str
    normal: Path
    anomalous: Path


def rcd_cases(root: Path) -> list[RcdCase]:
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        service, _, fault = folder.name.rpartition("-")
        for run in sorted(p for p in folder.glob("*") if p.is_dir()):
            normal, anomalous = run / "normal.csv", run / "anomalous.csv"
            if normal.is_file() and anomalous.is_file():
                out.append(RcdCase(f"{folder.name}/{run.name}", service, fault, normal, anomalous))
    return out


def read_rcd_metrics(path: Path) -> pd.DataFrame:
    """A wide RCD table with columns renamed to "<service>|<metric>"."""
    raw = pd.read_csv(path)
    frame = raw.drop(columns=["time"]).apply(pd.to_numeric, errors="coerce")
    names = {}
    for column in frame.columns:
        match = _RCD_METRIC.match(str(column))
        if match:
            names[column] = f"{match['service']}|{match['metric']}"
    frame = frame[list(names)].rename(columns=names)
    frame.index = pd.to_datetime(raw["time"].to_numpy(dtype=np.int64), unit="s", utc=True)
    return frame
