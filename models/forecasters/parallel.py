"""Data-parallel training of the global LSTM: `models.train_workers` processes, one model.

The calling process is rank 0; a launcher starts ranks 1..N-1 (by default torch.multiprocessing,
spawn, on this host; `engine: ray` passes one that runs them as Ray actors wherever Ray places
them, prognos.engine.ray_train). They meet at rank 0's address (127.0.0.1 for spawn) on a free
port (gloo, CPU), each trains on a disjoint shard of the training windows under
DistributedDataParallel (gradients all-reduced every step, so every rank holds the same
weights), and rank 0 scores the validation batch and reports progress. Rank 0 ends with the
trained network in the caller's forecaster, which the caller saves through its artifact store as
after a one-process fit: nothing is written before every rank has finished.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import torch
from torch import distributed as dist
from torch import multiprocessing

from models.domain import History
from models.errors import ModelError
from models.forecasters.base import EpochCallback, FitReport, Forecaster
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig

TIMEOUT = timedelta(minutes=5)  # rendezvous, and any one collective (a rank that stopped)


@dataclass(frozen=True)
class RankJob:
    """What every rank of one fit gets: its process group's address and size, and the data."""

    workers: int
    address: str  #: tcp://HOST:PORT of rank 0
    config: LSTMConfig
    histories: list[History]
    timeout: timedelta


class RankFailed(Exception):
    """A rank other than 0 failed; its message names the rank and its error."""


class Ranks(Protocol):
    """Ranks 1..N-1 of one fit, as a launcher started them."""

    def join(self) -> None:
        """Wait for every rank to finish (rank 0 has); raise RankFailed for one that failed."""

    def failure(self) -> str | None:
        """Rank 0's collective broke: the failed rank's own error, waiting a little for it."""

    def stop(self) -> None:
        """Stop every rank still running (after success or failure)."""


class Launcher(Protocol):
    """Starts ranks 1..N-1 of a fit, each running `run_rank`."""

    def host(self) -> str:
        """The address at which the other ranks reach rank 0 (this process)."""

    def start(self, job: RankJob) -> Ranks: ...


def fit_parallel(
    forecaster: Forecaster,
    histories: Sequence[History],
    workers: int,
    *,
    on_epoch: EpochCallback | None = None,
    timeout: timedelta = TIMEOUT,
    launcher: Launcher | None = None,
) -> FitReport:
    """Fit `forecaster` with `workers` processes, ranks 1..N-1 started by `launcher` (spawn on
    this host by default). One worker, or a forecaster with no training loop to share (the
    baselines), is the plain in-process fit: no process is started."""
    if workers <= 1 or not isinstance(forecaster, GlobalLSTMForecaster):
        return forecaster.fit(histories, on_epoch=on_epoch)
    launcher = launcher or SpawnLauncher()
    host = launcher.host()
    address = f"tcp://{host}:{free_port(host)}"
    ranks = launcher.start(RankJob(workers, address, forecaster.config, list(histories), timeout))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(_threads(forecaster.config, workers))
        dist.init_process_group(
            "gloo", init_method=address, rank=0, world_size=workers, timeout=timeout
        )
        try:
            report = forecaster.fit_rank(histories, rank=0, world=workers, on_epoch=on_epoch)
        finally:
            dist.destroy_process_group()
        ranks.join()  # raises if a worker failed after rank 0 finished
    except RankFailed as exc:
        raise ModelError(f"training with {workers} processes failed: {exc}") from exc
    except Exception as exc:
        # A rank that failed breaks rank 0's next collective (gloo: a plain RuntimeError): name
        # that rank's own error first. Rank 0's other errors are its own: nobody to wait for.
        worker = ranks.failure() if is_communication(exc) else None
        cause = f"{worker} (rank 0: {exc})" if worker else str(exc)
        raise ModelError(f"training with {workers} processes failed: {cause}") from exc
    finally:
        torch.set_num_threads(threads)
        ranks.stop()
    return report


def is_communication(exc: BaseException) -> bool:
    """Whether `exc` is what gloo raises in a rank whose peer stopped (not the rank's own)."""
    return type(exc) is RuntimeError or isinstance(exc, dist.DistError)


def run_rank(job: RankJob, rank: int, threads: int) -> None:
    """Rank `rank` (1..N-1) of `job` in this process, with `threads` PyTorch threads."""
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo", init_method=job.address, rank=rank, world_size=job.workers, timeout=job.timeout
    )
    try:
        GlobalLSTMForecaster(job.config).fit_rank(job.histories, rank=rank, world=job.workers)
    finally:
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _threads(config: LSTMConfig, workers: int) -> int:
    """Share this host's cores among the ranks unless the config fixes a thread count."""
    return config.num_threads or max(1, (os.cpu_count() or 1) // workers)


class SpawnLauncher:
    """Ranks 1..N-1 as torch.multiprocessing (spawn) processes on this host, on loopback."""

    def host(self) -> str:
        return "127.0.0.1"

    def start(self, job: RankJob) -> SpawnedRanks:
        context = multiprocessing.start_processes(
            _spawned, args=(job,), nprocs=job.workers - 1, join=False, start_method="spawn"
        )
        return SpawnedRanks(context)


def _spawned(index: int, job: RankJob) -> None:
    run_rank(job, index + 1, _threads(job.config, job.workers))


_FAILED = (multiprocessing.ProcessRaisedException, multiprocessing.ProcessExitedException)


@dataclass
class SpawnedRanks:
    context: multiprocessing.ProcessContext

    def join(self) -> None:
        try:
            self.context.join()
        except _FAILED as exc:
            raise RankFailed(_describe(exc)) from exc

    def failure(self) -> str | None:
        """The first failed worker's error (its last traceback line), waiting a little for it."""
        try:
            self.context.join(timeout=10)
        except _FAILED as exc:
            return _describe(exc)
        return None

    def stop(self) -> None:
        """Stop every worker still running: SIGTERM, then SIGKILL for one that does not exit."""
        for process in self.context.processes:
            if process.is_alive():
                process.terminate()
        for process in self.context.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def _describe(
    exc: multiprocessing.ProcessRaisedException | multiprocessing.ProcessExitedException,
) -> str:
    if isinstance(exc, multiprocessing.ProcessExitedException):
        return f"rank {exc.error_index + 1} exited with code {exc.exit_code}"
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"rank {exc.error_index + 1}: {lines[-1] if lines else exc}"
