"""Data-parallel training of the global LSTM: `models.train_workers` processes, one model.

The calling process is rank 0; ranks 1..N-1 are started with torch.multiprocessing (spawn).
They meet on 127.0.0.1 at a free port (gloo, CPU), each trains on a disjoint shard of the
training windows under DistributedDataParallel (gradients all-reduced every step, so every rank
holds the same weights), and rank 0 scores the validation batch and reports progress. Rank 0 ends
with the trained network in the caller's forecaster, which the caller saves through its artifact
store as after a one-process fit: nothing is written before every rank has finished.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import timedelta

import torch
from torch import distributed as dist
from torch import multiprocessing

from models.domain import History
from models.errors import ModelError
from models.forecasters.base import EpochCallback, FitReport, Forecaster
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig

TIMEOUT = timedelta(minutes=5)  # rendezvous, and any one collective (a rank that stopped)


def fit_parallel(
    forecaster: Forecaster,
    histories: Sequence[History],
    workers: int,
    *,
    on_epoch: EpochCallback | None = None,
    timeout: timedelta = TIMEOUT,
) -> FitReport:
    """Fit `forecaster` with `workers` processes. One worker, or a forecaster with no training
    loop to share (the baselines), is the plain in-process fit: no process is started."""
    if workers <= 1 or not isinstance(forecaster, GlobalLSTMForecaster):
        return forecaster.fit(histories, on_epoch=on_epoch)
    address = f"tcp://127.0.0.1:{free_port()}"
    histories = list(histories)
    context = multiprocessing.start_processes(
        _worker,
        args=(workers, address, forecaster.config, histories, timeout),
        nprocs=workers - 1,
        join=False,
        start_method="spawn",
    )
    threads = torch.get_num_threads()
    try:
        _set_threads(forecaster.config, workers)
        dist.init_process_group(
            "gloo", init_method=address, rank=0, world_size=workers, timeout=timeout
        )
        try:
            report = forecaster.fit_rank(histories, rank=0, world=workers, on_epoch=on_epoch)
        finally:
            dist.destroy_process_group()
        context.join()  # raises if a worker failed after rank 0 finished
    except Exception as exc:
        # A rank that failed breaks rank 0's next collective (gloo: a plain RuntimeError): name
        # that rank's own error first. Rank 0's other errors are its own: nobody to wait for.
        communication = type(exc) is RuntimeError or isinstance(exc, dist.DistError)
        worker = _worker_failure(context) if communication else None
        cause = f"{worker} (rank 0: {exc})" if worker else str(exc)
        raise ModelError(f"training with {workers} processes failed: {cause}") from exc
    finally:
        torch.set_num_threads(threads)
        _stop(context)
    return report


def _stop(context: multiprocessing.ProcessContext) -> None:
    """Stop every worker still running: SIGTERM, then SIGKILL for one that does not exit."""
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _set_threads(config: LSTMConfig, workers: int) -> None:
    """Share the cores among the ranks unless the config fixes a thread count."""
    if not config.num_threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker(
    index: int,
    workers: int,
    address: str,
    config: LSTMConfig,
    histories: list[History],
    timeout: timedelta,
) -> None:
    _set_threads(config, workers)
    dist.init_process_group(
        "gloo", init_method=address, rank=index + 1, world_size=workers, timeout=timeout
    )
    try:
        GlobalLSTMForecaster(config).fit_rank(histories, rank=index + 1, world=workers)
    finally:
        dist.destroy_process_group()


def _worker_failure(context: multiprocessing.ProcessContext) -> str | None:
    """The first failed worker's error (its last traceback line), waiting a little for it."""
    try:
        context.join(timeout=10)
    except multiprocessing.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return f"rank {exc.error_index + 1}: {lines[-1] if lines else exc}"
    except multiprocessing.ProcessExitedException as exc:
        return f"rank {exc.error_index + 1} exited with code {exc.exit_code}"
    return None
