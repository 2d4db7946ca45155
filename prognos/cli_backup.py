"""`prognos db backup` and `prognos db restore`: the database with its audit anchor, as one file.

Commands read the configuration through ``prognos.cli._settings()`` (imported inside the command,
since ``prognos.cli`` imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr that follows (what, done, total) reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from prognos.cli import err

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    ) as bar:
        task = bar.add_task("", total=None, visible=False)  # shown once work starts

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None, visible=True)

        yield report


def _say(text: str, *, error: bool = False) -> None:
    from prognos.cli import console, err

    (err if error else console).print(text, markup=False, highlight=False, soft_wrap=True)


def _head(seq: int | None) -> str:
    return "no entries" if seq is None else f"entry {seq}"


def db_backup(
    file: Annotated[Path, typer.Argument(help="the backup file to write", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="replace FILE if it exists")] = False,
) -> None:
    """A consistent backup of the database with the audit anchor, while the service runs."""
    from prognos.cli import _settings
    from remediation import audit, backup

    settings = _settings()
    anchor = audit.read_checkpoint(audit.checkpoint_for(settings))
    with _progress() as report:
        manifest = backup.backup(
            settings.database_url, file, anchor=anchor, overwrite=force, on_progress=report
        )
    chain = _head(manifest.chain_head.seq if manifest.chain_head else None)
    _say(
        f"backup written to {file}: {manifest.dialect} database, schema "
        f"{manifest.schema_revision}, {manifest.size:,} bytes; audit chain at {chain}, anchor at "
        f"{_head(anchor.seq if anchor else None)}"
    )


def db_restore(
    file: Annotated[Path, typer.Argument(help="a file written by `prognos db backup`")],
    force: Annotated[
        bool, typer.Option("--force", help="replace a database that holds data (all of it)")
    ] = False,
) -> None:
    """Replace the database with a backup (stop `serve` and `daemon` first), then verify the
    audit chain against its anchor. All or nothing: a failed restore leaves the old database."""
    from core.database import safe_url
    from prognos.cli import _settings
    from remediation import audit, backup

    settings = _settings()
    anchor_path = audit.checkpoint_for(settings)
    with _progress() as report:
        restored = backup.restore(
            settings.database_url,
            file,
            anchor_path=anchor_path,
            force=force,
            on_progress=report,
        )
    manifest = restored.manifest
    _say(
        f"restored {file} (taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC, schema "
        f"{manifest.schema_revision}) into {safe_url(settings.database_url)}"
    )
    if restored.anchor_restored:
        _say(f"the audit anchor {anchor_path} was missing: set from the backup's manifest")
    result = restored.audit
    if result.ok:
        _say(result.summary())
        return
    _say(
        "warning: the restored audit chain does not match its anchor; `prognos audit verify` "
        "fails until this is resolved:",
        error=True,
    )
    for problem in result.problems:
        _say(f"  {problem}", error=True)
