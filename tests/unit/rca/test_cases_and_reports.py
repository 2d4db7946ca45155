"""Nezha-layout folders (usable cases by rule, missing files listed), AC@k, and the report."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from rca.analysis import analyze
from rca.cases import (
    case_windows,
    metric_windows,
    nezha_cases,
    read_nezha_metrics,
    read_nezha_spans,
    service_of_pod,
)
from rca.evaluation import accuracy, evaluate_nezha
from rca.findings import RcaReport, render_html, render_markdown
from sim.traces import Fault, System

DAY = "2030-01-02"
SECOND = pd.Timedelta(seconds=1)
SYSTEM = System.generate(6, seed=5)
POD = {s: f"{s}-5f6585d649-abcde" for s in SYSTEM.services}


def write_minute(folder: Path, name: str, spans: pd.DataFrame, *, gz: bool) -> None:
    frame = pd.DataFrame(
        {
            "TraceID": spans["trace_id"],
            "SpanID": spans["span_id"],
            "ParentID": spans["parent_id"].replace("", "root"),
            "PodName": spans["service"].map(POD),
            "OperationName": spans["operation"],
            "StartTimeUnixNano": spans["start_ns"],
            "EndTimeUnixNano": spans["end_ns"],
            "Duration": (spans["end_ns"] - spans["start_ns"]) // 1000,
        }
    )
    text = frame.to_csv(index=False)
    if gz:
        (folder / f"{name}_trace.csv.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (folder / f"{name}_trace.csv").write_text(text)


def build(tmp_path: Path, *, overrun_s: int = 0, label_off_s: int = 0) -> Path:
    """Two faults: 10:05:30 on svc03 with all its minutes, 11:00:10 lacking its second minute.
    `overrun_s`: the injection-minute file runs that far past the fault's start;
    `label_off_s`: the fault list states the injection that much later than it happened."""
    root = tmp_path / "demo-system"
    day = root / "rca_data" / DAY
    (day / "trace").mkdir(parents=True)
    (day / "metric").mkdir()
    faults = {
        "10": [
            {
                "inject_time": str(pd.Timestamp(f"{DAY} 10:05:30") + label_off_s * SECOND),
                "inject_pod": POD["svc03"],
                "inject_type": "slow",
            }
        ],
        "11": [
            {"inject_time": f"{DAY} 11:00:10", "inject_pod": POD["svc02"], "inject_type": "slow"}
        ],
    }
    (day / f"{DAY}-fault_list.json").write_text(json.dumps(faults))
    at = pd.Timestamp(f"{DAY} 10:05:30", tz="UTC").value
    fault = Fault("slow", "svc03", start_ns=at)
    for k, minute in enumerate(("10_05", "10_06", "10_07")):
        start = at - 60 * 10**9 + k * 60 * 10**9
        end = start + (60 + (overrun_s if k == 0 else 0)) * 10**9
        spans = SYSTEM.traces(start_ns=start, end_ns=end, requests=150, fault=fault, seed=k + 1)
        write_minute(day / "trace", minute, spans, gz=k % 2 == 0)
    write_minute(
        day / "trace",
        "11_00",
        SYSTEM.traces(start_ns=at, end_ns=at + 10**10, requests=20),
        gz=False,
    )
    write_minute(
        day / "trace",
        "11_01",
        SYSTEM.traces(start_ns=at, end_ns=at + 10**10, requests=20),
        gz=False,
    )
    times = pd.date_range(f"{DAY} 09:30", f"{DAY} 11:10", freq="1min", tz="UTC")
    for s, pod in POD.items():
        pd.DataFrame(
            {
                "Time": [f"{t:%Y-%m-%d %H:%M:%S}.123456 +0000 UTC m=+1.0" for t in times],
                "TimeStamp": range(len(times)),
                "PodName": pod,
                "CpuUsageRate(%)": 20.0,
            }
        ).to_csv(day / "metric" / f"{pod}_metric.csv", index=False)
    return root


def test_usable_cases_follow_the_rule_and_missing_files_are_named(tmp_path: Path) -> None:
    root = build(tmp_path)
    cases = nezha_cases(root)
    assert [(c.service, c.usable) for c in cases] == [("svc03", True), ("svc02", False)]
    assert cases[1].missing() == ["trace 11_02"]
    spans = read_nezha_spans(cases[0].incident_files[0])  # type: ignore[arg-type]
    assert set(spans["service"]) <= set(SYSTEM.services) and (spans["parent_id"] != "root").all()
    metrics = read_nezha_metrics(cases[0].metric_dir)
    assert "svc03|CpuUsageRate(%)" in metrics.columns and metrics.index.tz is not None
    assert service_of_pod("cartservice-579f59597d-wc2lz") == "cartservice"


def test_case_windows_are_cut_at_the_onset_with_a_guard_band_not_at_file_edges(
    tmp_path: Path,
) -> None:
    case = nezha_cases(build(tmp_path))[0]
    label = int(case.inject_time.value)
    for guard, detect in ((0.0, False), (20.0, False), (20.0, True)):
        windows = case_windows(case, guard_s=guard, detect=detect)
        onset = windows.onset
        assert onset == label or (detect and abs(onset - label) <= 10 * 10**9)
        assert windows.baseline[1] == onset - int(guard * 1e9)  # not the injection file's end
        assert windows.incident[0] == onset
        starts = windows.spans["start_ns"]
        assert (
            starts.min() == windows.baseline[0] and not windows.spans["span_id"].duplicated().any()
        )
    metrics = read_nezha_metrics(case.metric_dir)
    reference, incident = metric_windows(case, metrics, guard_s=60.0)
    assert reference == (int(metrics.index.min().value), label - 60 * 10**9)  # the whole history
    assert incident[0] == label


def test_an_overrunning_minute_file_and_a_late_label_leave_the_reference_clean(
    tmp_path: Path,
) -> None:
    root = build(tmp_path, overrun_s=40, label_off_s=25)
    case = nezha_cases(root)[0]
    fault_start = pd.Timestamp(f"{DAY} 10:05:30", tz="UTC").value
    assert case.inject_time.value == fault_start + 25 * 10**9
    # Cut at the label with no guard band, 25 s of the fault (from a file that ran past its
    # minute) would sit in the reference; the defaults keep it out.
    assert case_windows(case, guard_s=0.0, detect=False).baseline[1] > fault_start
    assert case_windows(case).baseline[1] <= fault_start
    assert evaluate_nezha(root).report()["overall"]["AC@1"] == 1.0


def test_the_evaluation_runs_the_usable_case_and_lists_the_other(tmp_path: Path) -> None:
    evaluation = evaluate_nezha(build(tmp_path))
    report = evaluation.report()
    assert report["overall"]["cases"] == 1 and report["overall"]["AC@1"] == 1.0
    assert [s["case"] for s in report["skipped"]] == [f"{DAY} 11:00:10 slow svc02"]
    assert set(report["baselines"]) == {"n-sigma", "baro"}
    assert report["by_fault_type"]["slow"]["cases"] == 1


def test_accuracy_at_k() -> None:
    results = [("a", ["a", "b"]), ("b", ["a", "c", "d", "e", "b"]), ("c", ["x"])]
    scores = accuracy(results)
    assert scores["AC@1"] == 1 / 3 and scores["AC@3"] == 1 / 3 and scores["AC@5"] == 2 / 3
    assert abs(scores["Avg@5"] - (1 / 3 * 4 + 2 / 3) / 5) < 1e-12
    assert accuracy([])["cases"] == 0


def test_reports_say_why_and_escape_what_they_show() -> None:
    system = System.generate(5, seed=9)
    t0 = 1_700_000_000 * 10**9
    fault = Fault("slow", "svc04", start_ns=t0 + 60 * 10**9)
    spans = system.traces(start_ns=t0, end_ns=t0 + 120 * 10**9, requests=300, fault=fault)
    spans.loc[spans["service"] == "frontend", "operation"] = "GET /<script>alert(1)</script>"
    report = analyze(
        spans,
        baseline=(t0, t0 + 60 * 10**9),
        incident=(t0 + 60 * 10**9, t0 + 120 * 10**9),
        symptom="frontend p99 latency <up>",
    )
    markdown = render_markdown(report)
    assert (
        "svc04" in markdown
        and "self_time" in markdown
        and " → ".join(system.path_to("svc04")) in markdown
    )
    page = render_html(report)
    assert "<script>" not in page  # whatever operation names it shows are escaped
    assert "&lt;up&gt;" in page and "http" not in page  # no external resources
    again = RcaReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
