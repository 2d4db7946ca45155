"""The `prognos` command line. Every command reads the same configuration (see `--config`)."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from core.clock import from_epoch, to_epoch
from core.database import create_engine, migrate, safe_url, session_scope
from core.durations import parse_duration
from core.errors import ConfigError, PrognosError
from core.logging import configure_logging
from core.settings import Settings, load_settings
from prognos.cli_backup import db_backup, db_restore
from prognos.cli_demo import demo
from prognos.cli_rca import rca_eval_app, spans_app
from prognos.cli_remediation import audit_app, playbook_app
from prognos.context import ServiceContext
from prognos.progress import training_progress

app = typer.Typer(
    name="prognos",
    help=(
        "Prognos forecasts Prometheus metrics, warns before breaches, finds root causes and runs "
        "approved playbooks.\n\n"
        "Start here: `prognos run` serves the API and runs the scheduler in one process on the "
        "embedded defaults (SQLite under ./var, the bundled sample data). Point it at "
        "Prometheus with a config file: see deploy/prognos.example.yaml."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
token_app = typer.Typer(help="API bearer tokens (stored hashed; shown once).", no_args_is_help=True)
config_app = typer.Typer(help="Check or show the effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema, backup and restore.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(rca_eval_app, name="rca-eval")
app.add_typer(spans_app, name="spans")
app.add_typer(playbook_app, name="playbook")
app.add_typer(audit_app, name="audit")
app.command()(demo)
db_app.command("backup")(db_backup)
db_app.command("restore")(db_restore)

log = logging.getLogger("prognos")
console = Console()
err = Console(stderr=True)


class _State:
    config: Path | None = None
    log_level: str | None = None


state = _State()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config (default: $PROGNOS_CONFIG, ./prognos.yaml)",
        show_default=False,
    ),
]


@app.callback()
def _main(
    config: ConfigOption = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    ] = None,
) -> None:
    state.config = config
    state.log_level = log_level


def _settings() -> Settings:
    settings = load_settings(state.config)
    level = (state.log_level or settings.logging.level).upper()
    configure_logging(level, settings.logging.format)
    return settings


def _context(settings: Settings) -> ServiceContext:
    from prognos.composition import build_context

    return build_context(settings)


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="bind address (default: api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: api.port)")] = None,
    duration: Annotated[
        str | None, typer.Option(help="stop by itself after this long, e.g. 2m (for demos)")
    ] = None,
) -> None:
    """API + scheduler + executor in one process: the embedded default."""
    from prognos.daemon import LeadingScheduler

    settings = _settings()
    context = _context(settings)
    # Leads like a daemon: beside a `prognos daemon` on the same database it stands by.
    scheduler = LeadingScheduler(context)
    context.on_start.append(scheduler.start)
    context.on_stop.append(scheduler.stop)  # lets a running cycle finish
    _serve(context, host, port, duration)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: api.port)")] = None,
) -> None:
    """The API alone (run `prognos daemon` beside it for the scheduled work)."""
    settings = _settings()
    _serve(_context(settings), host, port, None)


def _serve(
    context: ServiceContext, host: str | None, port: int | None, duration: str | None
) -> None:
    import uvicorn

    from api.app import create_app

    settings = context.settings
    config = uvicorn.Config(
        create_app(context),
        host=host or settings.api.host,
        port=settings.api.port if port is None else port,
        log_level=settings.logging.level.lower(),
        log_config=None,  # use our logging set-up, not uvicorn's own format
        access_log=False,
    )
    server = uvicorn.Server(config)
    if duration:
        seconds = parse_duration(duration).total_seconds()
        timer = threading.Timer(seconds, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    err.print(
        f"[bold]Prognos[/] on http://{config.host}:{config.port}  "
        f"(docs /docs, metrics /metrics); source: {context.source.describe()}; "
        f"database: {safe_url(str(context.engine.url))}"
    )
    server.run()


@app.command()
def daemon() -> None:
    """The scheduler alone: the cycle on its interval, pruning past retention. Stops on SIGTERM."""
    from prognos.daemon import run_daemon

    run_daemon(_context(_settings()))


@app.command()
def ingest(
    once: Annotated[
        bool, typer.Option("--once", help="one cycle over all targets, then exit")
    ] = False,
) -> None:
    """Pull new samples from the source into the database (from each target's watermark)."""
    from prognos import jobs

    settings = _settings()
    context = _context(settings)
    if not once:
        from prognos.daemon import run_daemon

        run_daemon(context)
        return
    summaries = jobs.ingest_cycle(context)
    table = Table("target", "status", "window (UTC, day hh:mm)", "series", "new", "points", "note")
    for s in summaries:
        window = (
            f"{from_epoch(s.window.start):%d %H:%M}→{from_epoch(s.window.end):%d %H:%M}"
            if s.window and s.window.points
            else "-"
        )
        table.add_row(
            s.target,
            s.status,
            window,
            str(s.series),
            str(s.new_series),
            str(s.points),
            s.error or "",
        )
    console.print(table)
    if any(s.status == "failed" for s in summaries):
        raise typer.Exit(1)


@app.command()
def backfill(
    days: Annotated[float, typer.Option(help="how many days of history to read")] = 7,
    target: Annotated[list[str] | None, typer.Option(help="only this target (repeatable)")] = None,
    refresh: Annotated[bool, typer.Option(help="ignore the cache and read again")] = False,
) -> None:
    """Read a long history for training into the Parquet cache (a second run reads the cache)."""
    from ingest.history import BlockDone, plan_blocks
    from ingest.history import backfill as run_backfill

    settings = _settings()
    context = _context(settings)
    chosen = [t for t in context.targets if not target or t.name in target]
    unknown = set(target or []) - {t.name for t in context.targets}
    if unknown:
        raise ConfigError(
            f"unknown target(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(t.name for t in context.targets)}"
        )
    now = context.clock.now()
    end = to_epoch(now - settings.ingest.lag)
    start = end - int(timedelta(days=days).total_seconds())
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[points]:,} points"),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        for t in chosen:
            from ingest.chunking import aligned_window

            blocks = plan_blocks(
                aligned_window(start, end, t.step_seconds), context.source.max_points_per_request
            )
            task = progress.add_task(f"{t.name}", total=len(blocks), points=0)
            counted = {"points": 0}

            def advance(
                done: BlockDone, task: TaskID = task, counted: dict[str, int] = counted
            ) -> None:
                counted["points"] += done.points
                progress.update(task, advance=1, points=counted["points"])

            results.append(
                run_backfill(
                    source=context.source,
                    target=t,
                    start=start,
                    end=end,
                    complete_before=end,
                    cache_dir=settings.cache_dir,
                    on_block=advance,
                    refresh=refresh,
                )
            )
    table = Table("target", "series", "points", "blocks", "from cache")
    for r in results:
        table.add_row(
            r.target, str(len(r.series)), f"{r.points:,}", str(r.blocks), str(r.blocks_from_cache)
        )
    console.print(table)
    console.print(f"cache: {settings.cache_dir}")


backtest_app = typer.Typer(
    help="Backtests on recorded data (quality benchmarks).", no_args_is_help=True
)
app.add_typer(backtest_app, name="backtest")


@backtest_app.command("nab")
def backtest_nab(
    data: Annotated[Path, typer.Option(help="a NAB-layout folder holding data/ and labels/")],
    out: Annotated[Path, typer.Option(help="results go to OUT/<detector>/<folder>/...")],
    detector: Annotated[str, typer.Option(help="detector name (no underscore)")] = "prognos",
    folder: Annotated[
        list[str] | None, typer.Option(help="only this data folder (repeatable)")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="files scored at once (default: every CPU, the cluster's with ray)"),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="local: a process pool here; ray: one Ray task per file on the cluster of "
            "`ray.address` (default: the config's `engine`)"
        ),
    ] = None,
) -> None:
    """Run the service's anomaly detector (its configured defaults, `models.detector`) over every
    CSV under DATA/data, each file a fresh deployment."""
    import time

    from models.detector import detector_config
    from models.evaluation.backtest import run_nab_backtest
    from prognos.engine import batch_mapper

    configure_logging(state.log_level or "WARNING")
    settings = _settings()
    engine = engine or settings.engine
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r}: expected local or ray")
    mapper = batch_mapper(engine, settings.ray)
    if not (data / "data").is_dir():
        raise ConfigError(f"{data} has no data/ folder (expected NAB's layout: data/, labels/)")
    files = sorted((data / "data").glob("*/*.csv"))
    if folder:
        files = [f for f in files if f.parent.name in set(folder)]
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("backtest", total=len(files))
        results = run_nab_backtest(
            data,
            out,
            config=detector_config(settings.models.detector),
            detector=detector,
            folders=folder,
            workers=workers,
            mapper=mapper,
            on_file=lambda r: progress.update(task, advance=1, description=r.relpath),
        )
    console.print(
        f"{len(results)} files, {sum(r.rows for r in results):,} rows in "
        f"{time.perf_counter() - started:.1f}s → {out / detector}"
    )


@app.command("nab-score")
def nab_score(
    data: Annotated[Path, typer.Option(help="the NAB-layout folder (data/ and labels/)")],
    results: Annotated[Path, typer.Option(help="OUT/<detector> written by `backtest nab`")],
    folder: Annotated[list[str] | None, typer.Option(help="score only this folder")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
    per_file: Annotated[bool, typer.Option(help="list each file's raw score")] = False,
) -> None:
    """Score a detector's results by NAB's rules: standard, reward-low-FP, reward-low-FN."""
    import json

    from models.evaluation.nab import format_table, score_corpus

    report = score_corpus(data / "data", results, labels=data / "labels", folders=folder)
    console.print(format_table(report, per_file=per_file), markup=False, highlight=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_json(), indent=2))


models_app = typer.Typer(
    help="The model registry: versions, promotion, rollback.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@app.command()
def train() -> None:
    """Train a new model version on `models.history`; promote it only if it beats the active one
    on held-out recent data (what the daemon does every `models.retrain_interval`)."""
    from prognos import jobs

    settings = _settings()
    context = _context(settings)
    with training_progress(err) as (_, epoch):
        outcomes = jobs.retrain(context, on_epoch=epoch)
    table = Table("family", "version", "epochs", "held-out loss", "active's loss", "result")
    for o in outcomes:
        table.add_row(
            o.family,
            str(o.version),
            str(o.epochs),
            f"{o.candidate_loss:.4f}",
            "-" if o.active_loss is None else f"{o.active_loss:.4f}",
            "promoted" if o.promoted else "rejected: the active model is better",
        )
    console.print(table)


@models_app.command("list")
def models_list() -> None:
    """Model versions with their state and held-out metrics."""
    from models import registry

    context = _context(_settings())
    with session_scope(context.sessions) as session:
        table = Table(
            "id",
            "family",
            "version",
            "forecaster",
            "status",
            "trained on",
            "series",
            "held-out loss",
            "note",
        )
        for row in registry.list_models(session):
            loss = row.metrics.get("holdout_pinball")
            table.add_row(
                str(row.id),
                row.family,
                str(row.version),
                row.forecaster,
                row.status,
                f"{row.train_start:%m-%d %H:%M} → {row.train_end:%m-%d %H:%M}",
                str(row.series_count),
                "-" if loss is None else f"{loss:.4f}",
                row.note or "",
            )
    console.print(table)


@models_app.command("promote")
def models_promote(model_id: Annotated[int, typer.Argument(help="id from `models list`")]) -> None:
    """Make a version active (refused if its artifact does not load)."""
    from models import registry

    context = _context(_settings())
    with session_scope(context.sessions) as session:
        row = registry.promote(
            session, model_id=model_id, now=context.clock.now(), note="promoted by hand"
        )
        session.commit()
        err.print(f"{row.family} v{row.version} is now active")


@models_app.command("rollback")
def models_rollback(family: Annotated[str, typer.Argument(help="e.g. step60s")]) -> None:
    """Return to the newest earlier version whose artifact still loads."""
    from models import registry

    context = _context(_settings())
    with session_scope(context.sessions) as session:
        row = registry.rollback(session, family=family, now=context.clock.now())
        session.commit()
        err.print(f"{row.family} is back on v{row.version}")


@app.command("series")
def list_series(
    target: Annotated[str | None, typer.Option(help="only this target")] = None,
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 50,
) -> None:
    """Show the series stored so far, with their newest value."""
    import sqlalchemy as sa

    from ingest.tables import SampleRow, SeriesRow

    settings = _settings()
    context = _context(settings)
    with session_scope(context.sessions) as session:
        query = sa.select(SeriesRow).order_by(SeriesRow.target, SeriesRow.id).limit(limit)
        if target:
            query = query.where(SeriesRow.target == target)
        if service:
            query = query.where(SeriesRow.service == service)
        rows = list(session.scalars(query))
        table = Table("id", "target", "service", "labels", "points", "newest (UTC)", "value")
        for row in rows:
            count, newest = session.execute(
                sa.select(sa.func.count(), sa.func.max(SampleRow.ts)).where(
                    SampleRow.series_id == row.id
                )
            ).one()
            value = (
                session.scalar(
                    sa.select(SampleRow.value).where(
                        SampleRow.series_id == row.id, SampleRow.ts == newest
                    )
                )
                if newest is not None
                else None
            )
            labels = ",".join(f"{k}={v}" for k, v in sorted(row.labels.items()) if k != "service")
            table.add_row(
                str(row.id),
                row.target,
                row.service or "-",
                labels,
                str(count),
                f"{from_epoch(newest):%Y-%m-%d %H:%M}" if newest else "-",
                f"{value:.4g}" if value is not None else "-",
            )
    console.print(table)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="viewer, operator, approver, admin, ingest or alerts")],
    name: Annotated[str | None, typer.Option(help="who or what holds it (shown in audits)")] = None,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from api.auth import Role, create_token

    try:
        chosen = Role(role)
    except ValueError:
        raise ConfigError(
            f"unknown role {role!r}; choose one of {', '.join(r.value for r in Role)}"
        ) from None
    settings = _settings()
    context = _context(settings)
    with session_scope(context.sessions) as session:
        row, plaintext = create_token(
            session, role=chosen, name=name or f"{role}-token", now=context.clock.now()
        )
        session.commit()
        token_id = row.token_id
    err.print(f"token {token_id} ({chosen.value}) created; it is shown only this once:")
    print(plaintext)


@token_app.command("list")
def token_list() -> None:
    """List tokens (ids, names, roles; never the secrets)."""
    from api.auth import list_tokens

    context = _context(_settings())
    with session_scope(context.sessions) as session:
        table = Table("id", "name", "role", "created", "last used", "revoked")
        for row in list_tokens(session):
            table.add_row(
                row.token_id,
                row.name,
                row.role,
                f"{row.created_at:%Y-%m-%d %H:%M}",
                f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "-",
                f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
            )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the id shown by `token list`")],
) -> None:
    """Revoke a token; requests that use it are refused from now on."""
    from api.auth import revoke_token

    context = _context(_settings())
    with session_scope(context.sessions) as session:
        revoke_token(session, token_id=token_id, now=context.clock.now())
        session.commit()
    err.print(f"token {token_id} revoked")


@config_app.command("check")
def config_check() -> None:
    """Validate the configuration and say where it came from."""
    settings = _settings()
    from core.settings import find_config_file

    path = find_config_file(state.config)
    console.print(
        f"configuration OK ({path or 'built-in defaults'}); source: "
        f"{settings.effective_source}; {len(settings.targets)} target(s) configured"
    )


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as YAML, secrets masked."""
    import yaml

    settings = _settings()
    data = settings.model_dump(mode="json")
    console.print(yaml.safe_dump(data, sort_keys=False), end="", markup=False, highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (every command also does this at start)."""
    settings = _settings()
    engine = create_engine(settings.database_url)
    migrate(engine)
    console.print(f"database at {safe_url(settings.database_url)} is up to date")


def main() -> None:
    try:
        app()
    except PrognosError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False, markup=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        logging.shutdown()


if __name__ == "__main__":
    main()
