"""Progress shown while a model trains: one bar of epochs with the validation loss."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models.forecasters.base import EpochCallback, EpochReport


@contextmanager
def training_progress(
    console: Console, description: str = "training"
) -> Iterator[tuple[Progress, EpochCallback]]:
    """A progress bar on `console` and the `on_epoch` callback that moves it (a star marks an
    epoch whose validation loss is the best so far)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=None, loss="")

        def epoch(report: EpochReport) -> None:
            bar.update(
                task,
                total=report.max_epochs,
                completed=report.epoch,
                loss=f"val loss {report.val_loss:.4f}{' *' if report.best else ''}",
            )

        yield bar, epoch
