"""`prognos rca-eval …` and `prognos spans …`: root-cause evaluation and span import.

Commands read the configuration through ``prognos.cli._settings()`` (imported inside the command,
since ``prognos.cli`` imports this module).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

rca_eval_app = typer.Typer(
    help="Root-cause ranking evaluated on labelled cases (Nezha layout, RCD Sock Shop layout).",
    no_args_is_help=True,
)
spans_app = typer.Typer(help="Import spans from files into the span store.", no_args_is_help=True)


def evaluation_table(evaluation: Any, title: str) -> Any:
    """Ours and the baselines, overall and per fault type (also used by bench/rca.py)."""
    from rich.table import Table

    from rca.evaluation import METHODS

    table = Table(title=title)
    for column in ("method", "fault type", "cases", "AC@1", "AC@3", "AC@5", "Avg@5", "s/case"):
        table.add_column(column, justify="left" if column in ("method", "fault type") else "right")
    types = sorted({o.fault_type for o in evaluation.outcomes})
    for method in METHODS:
        summary = evaluation.to_dict(method)
        rows = [("all", summary["overall"])] + [(t, summary["by_fault_type"][t]) for t in types]
        for label, s in rows:
            table.add_row(
                method if label == "all" else "",
                label,
                str(s["cases"]),
                f"{s['AC@1']:.3f}",
                f"{s['AC@3']:.3f}",
                f"{s['AC@5']:.3f}",
                f"{s['Avg@5']:.3f}",
                f"{summary['seconds_per_case']:.3f}" if label == "all" else "",
            )
    return table


def _run_eval(kind: str, data: Path, json_out: Path | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from core.errors import ConfigError
    from prognos.cli import console, err
    from rca import evaluation as ev
    from rca.cases import nezha_cases, rcd_cases

    if not data.is_dir():
        raise ConfigError(f"{data} is not a folder")
    run: Callable[..., Any]
    if kind == "nezha":
        if not (data / "rca_data").is_dir():
            raise ConfigError(f"{data} has no rca_data/ folder (expected the Nezha layout)")
        total = sum(c.usable for c in nezha_cases(data))
        run = ev.evaluate_nezha
    else:
        total = len(rcd_cases(data))
        if total == 0:
            raise ConfigError(f"{data} has no <service>-<fault>/<run>/normal.csv + anomalous.csv")
        run = ev.evaluate_rcd
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    ) as bar:
        task = bar.add_task("cases", total=total)
        result = run(data, on_case=lambda name: bar.update(task, advance=1, description=name))
    console.print(
        evaluation_table(
            result, f"root-cause ranking on {data.name} ({len(result.outcomes)} cases)"
        )
    )
    for skipped in result.skipped:
        console.print(f"skipped {skipped['case']}: missing {', '.join(skipped['missing'])}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.report(), indent=2), encoding="utf-8")
        console.print(f"wrote {json_out}")


DataOption = Annotated[Path, typer.Option("--data", help="the dataset folder")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the results as JSON")]


@rca_eval_app.command("nezha")
def rca_eval_nezha(data: DataOption, json_out: JsonOption = None) -> None:
    """Rank root-cause services for every usable case of a Nezha-layout folder (rca_data/<day>/
    fault list, per-minute traces, per-pod metrics); AC@1/3/5 and Avg@5, overall and per fault
    type, against N-Sigma and BARO. Cases whose files are missing are listed and skipped."""
    _run_eval("nezha", data, json_out)


@rca_eval_app.command("sockshop")
def rca_eval_sockshop(data: DataOption, json_out: JsonOption = None) -> None:
    """The same for an RCD-layout folder (<service>-<fault>/<run>/normal.csv + anomalous.csv,
    metrics only), e.g. the Sock Shop cases."""
    _run_eval("rcd", data, json_out)


@spans_app.command("import")
def spans_import(
    files: Annotated[list[Path], typer.Argument(help="span files (.gz is read too)")],
    fmt: Annotated[
        str, typer.Option("--format", help="otlp-json, jaeger or nezha (per-minute trace CSV)")
    ] = "otlp-json",
) -> None:
    """Import span files into the span store (each file in one transaction; a re-import stores
    nothing twice). Spans older than `spans.retention` are pruned by the daemon."""
    from core.database import session_scope
    from ingest.span_files import FORMATS, SpanFileError, read_span_file
    from ingest.span_store import store_spans
    from prognos.cli import _context, _settings, console
    from rca.cases import read_nezha_spans

    if fmt not in (*FORMATS, "nezha"):
        raise SpanFileError(f"unknown format {fmt!r}; use otlp-json, jaeger or nezha")
    context = _context(_settings())
    total = 0
    for path in files:
        if fmt == "nezha":
            if not path.is_file():
                raise SpanFileError(f"{path} does not exist")
            try:
                frame = read_nezha_spans(path)
            except (KeyError, ValueError) as exc:
                raise SpanFileError(f"{path}: not a Nezha trace CSV ({exc})") from None
        else:
            frame = read_span_file(path, fmt)
        with session_scope(context.sessions) as session:
            stored = store_spans(session, frame)
            session.commit()
        total += stored
        services = frame["service"].nunique() if len(frame) else 0
        console.print(f"{path}: {stored:,} spans of {services} services")
    console.print(f"imported {total:,} spans from {len(files)} file(s)")
