"""What a root-cause analysis finds: suspects with their evidence, and the report people read.

`RcaReport` is the incident contract of DESIGN.md: time window, symptom, ranked suspects at
service and operation level, each with evidence (the spans and metrics that moved, with their
before/after numbers) and the call path from the symptom to the suspect. It renders as JSON,
Markdown and self-contained HTML.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Evidence:
    """One thing that moved: `kind` is self_time, edge_gap, errors, call_pattern, throughput,
    metric or model."""

    kind: str
    subject: str  #: the operation, edge ("caller -> callee") or metric that moved
    before: float | None
    after: float | None
    z: float  #: robust z of the change (median/MAD of the baseline)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Suspect:
    service: str
    operation: str | None
    score: float
    evidence: list[Evidence] = field(default_factory=list)
    #: caller -> callee services from the symptom (the entry service) to the suspect
    path: list[str] = field(default_factory=list)
    #: the evidence kinds that made this service stand out from the others, strongest first
    named_by: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RcaReport:
    started_at: datetime
    window: tuple[datetime, datetime]
    baseline: tuple[datetime, datetime]
    symptom: str
    suspects: list[Suspect]
    operations: list[Suspect]
    method: str = "prognos"

    def ranking(self) -> list[str]:
        return [s.service for s in self.suspects]

    def to_dict(self) -> dict[str, Any]:
        def when(t: datetime) -> str:
            return t.astimezone(UTC).isoformat()

        return {
            "started_at": when(self.started_at),
            "window": [when(t) for t in self.window],
            "baseline": [when(t) for t in self.baseline],
            "symptom": self.symptom,
            "method": self.method,
            "suspects": [asdict(s) for s in self.suspects],
            "operations": [asdict(s) for s in self.operations],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RcaReport:
        def suspect(d: dict[str, Any]) -> Suspect:
            return Suspect(
                service=d["service"],
                operation=d.get("operation"),
                score=float(d["score"]),
                evidence=[Evidence(**e) for e in d.get("evidence", [])],
                path=list(d.get("path", [])),
                named_by=list(d.get("named_by", [])),
            )

        start, end = (datetime.fromisoformat(t) for t in data["window"])
        b_start, b_end = (datetime.fromisoformat(t) for t in data["baseline"])
        return cls(
            started_at=datetime.fromisoformat(data["started_at"]),
            window=(start, end),
            baseline=(b_start, b_end),
            symptom=data["symptom"],
            suspects=[suspect(s) for s in data["suspects"]],
            operations=[suspect(s) for s in data["operations"]],
            method=data.get("method", "prognos"),
        )


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000 or (x != 0 and abs(x) < 0.01):
        return f"{x:.3g}"
    return f"{x:.2f}"


def render_markdown(report: RcaReport, *, top: int = 5) -> str:
    lines = [
        f"# Incident at {report.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Symptom:** {report.symptom}",
        "",
        f"Window {report.window[0]:%H:%M:%S}-{report.window[1]:%H:%M:%S} UTC compared with the "
        f"baseline {report.baseline[0]:%H:%M:%S}-{report.baseline[1]:%H:%M:%S} UTC.",
        "",
        "## Suspects",
        "",
        "| rank | service | operation | score | named by | call path |",
        "|---|---|---|---|---|---|",
    ]
    for rank, s in enumerate(report.suspects[:top], 1):
        lines.append(
            f"| {rank} | {s.service} | {s.operation or '-'} | {s.score:.2f} | "
            f"{', '.join(s.named_by) or '-'} | {' → '.join(s.path) or s.service} |"
        )
    for rank, s in enumerate(report.suspects[:top], 1):
        if not s.evidence:
            continue
        lines += [
            "",
            f"### {rank}. {s.service}: why",
            "",
            "| evidence | what moved | before | after | z |",
            "|---|---|---|---|---|",
        ]
        for e in s.evidence:
            lines.append(
                f"| {e.kind} | {e.subject} | {_num(e.before)} | {_num(e.after)} | {e.z:.1f} |"
            )
    if report.operations:
        lines += ["", "## Operations", "", "| service | operation | score |", "|---|---|---|"]
        for s in report.operations[:top]:
            lines.append(f"| {s.service} | {s.operation} | {s.score:.2f} |")
    return "\n".join(lines) + "\n"


def render_html(report: RcaReport, *, top: int = 5) -> str:
    """A self-contained page (no external resources); every value is escaped."""
    e = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Incident {e(report.started_at.astimezone(UTC).isoformat())}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em;text-align:left}th{background:#f3f3f3}.path{font-family:monospace}"
        "</style></head><body>",
        f"<h1>Incident at {e(f'{report.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}')} UTC</h1>",
        f"<p><strong>Symptom:</strong> {e(report.symptom)}</p>",
        "<h2>Suspects</h2>",
        table(
            ["rank", "service", "operation", "score", "named by", "call path"],
            [
                [
                    str(i),
                    s.service,
                    s.operation or "-",
                    f"{s.score:.2f}",
                    ", ".join(s.named_by) or "-",
                    " → ".join(s.path) or s.service,
                ]
                for i, s in enumerate(report.suspects[:top], 1)
            ],
        ),
    ]
    for i, s in enumerate(report.suspects[:top], 1):
        if s.evidence:
            parts.append(f"<h3>{i}. {e(s.service)}: why</h3>")
            parts.append(
                table(
                    ["evidence", "what moved", "before", "after", "z"],
                    [
                        [x.kind, x.subject, _num(x.before), _num(x.after), f"{x.z:.1f}"]
                        for x in s.evidence
                    ],
                )
            )
    parts.append("</body></html>")
    return "".join(parts)
