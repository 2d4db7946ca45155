"""`prognos rca-eval …` and `prognos spans …`: root-cause evaluation and span import.

Commands read the configuration through ``prognos.cli._settings()`` (imported inside the command,
since ``prognos.cli`` imports this module).
"""

from __future__ import annotations

import typer

rca_eval_app = typer.Typer(
    help="Root-cause ranking evaluated on labelled cases (Nezha layout, RCD Sock Shop layout).",
    no_args_is_help=True,
)
spans_app = typer.Typer(help="Import spans from files into the span store.", no_args_is_help=True)
