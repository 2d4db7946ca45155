"""The global LSTM forecaster: one network for many series, quantiles for every horizon step.

Each context window is scaled on its own (median / robust scale), so series of any size share
one network; gaps enter as a mask, never as invented values. Calendar features (time of day, day
of week) let the network learn daily and weekly shapes. The head predicts all horizons at once
(direct multi-horizon) and builds the quantiles as a base plus positive increments, so they never
cross. Trained with the pinball loss, early stopping on a time-based validation split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from pydantic import model_validator
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.domain import ContextBatch, History
from models.errors import ModelInputError
from models.forecasters.base import (
    EpochCallback,
    EpochReport,
    FitReport,
    Forecaster,
    ForecasterConfig,
    robust_location_scale,
)

N_FEATURES = 6  # scaled value, observed mask, sin/cos time of day, sin/cos day of week


class LSTMConfig(ForecasterConfig):
    hidden_size: int = 48
    num_layers: int = 1
    dropout: float = 0.0
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 30
    windows_per_epoch: int = 8192
    patience: int = 4
    validation_fraction: float = 0.15
    min_observed: float = 0.5
    seed: int = 0
    num_threads: int | None = None
    predict_batch_size: int = 1024  # cache-friendly: faster than one huge batch on CPU

    @model_validator(mode="after")
    def _has_median(self) -> Self:
        if 0.5 not in self.quantiles:
            raise ValueError("the LSTM anchors its quantiles on the median: include 0.5")
        return self


class LSTMNet(nn.Module):
    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.horizon = config.horizon
        self.n_quantiles = len(config.quantiles)
        self.mid = config.quantiles.index(0.5)
        self.lstm = nn.LSTM(
            input_size=N_FEATURES,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Sequential(
            nn.Linear(config.hidden_size + 1, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.horizon * self.n_quantiles),
        )

    def forward(self, features: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """features [B, L, F], last [B, 1] (last observed scaled value) -> [B, H, Q] scaled."""
        output, _ = self.lstm(features)
        raw = self.head(torch.cat([output[:, -1, :], last], dim=1))
        raw = raw.view(-1, self.horizon, self.n_quantiles)
        # Anchor the median at the last observed value (a residual forecast) and build the
        # other quantiles outwards with positive steps, so they are ordered by construction.
        centre = last.unsqueeze(1) + raw[:, :, self.mid : self.mid + 1]
        parts = [centre]
        below = centre
        for q in range(self.mid - 1, -1, -1):
            below = below - nn.functional.softplus(raw[:, :, q : q + 1])
            parts.insert(0, below)
        above = centre
        for q in range(self.mid + 1, self.n_quantiles):
            above = above + nn.functional.softplus(raw[:, :, q : q + 1])
            parts.append(above)
        return torch.cat(parts, dim=2)


def calendar_features(end: np.ndarray, length: int, step: int) -> np.ndarray:
    """[N, L, 4]: sin/cos of time of day and day of week for each context step."""
    # A serving batch shares one end time: compute each distinct end once.
    unique, inverse = np.unique(end.astype(np.int64), return_inverse=True)
    return _calendar(unique, length, step)[inverse.reshape(-1)]


def _calendar(end: np.ndarray, length: int, step: int) -> np.ndarray:
    offsets = (np.arange(length, dtype=np.int64) - (length - 1)) * step
    ts = end[:, None].astype(np.int64) + offsets[None, :]
    day = (ts % 86_400) / 86_400.0
    week = (((ts // 86_400) + 3) % 7 + day) / 7.0  # 1970-01-01 was a Thursday; Monday = 0
    angle_d, angle_w = 2 * np.pi * day, 2 * np.pi * week
    return np.stack([np.sin(angle_d), np.cos(angle_d), np.sin(angle_w), np.cos(angle_w)], axis=-1)


def build_inputs(values: np.ndarray, end: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    """Scale each window on its own; returns features, last value, location and scale."""
    location, scale = robust_location_scale(values)
    scaled = (values - location[:, None]) / scale[:, None]
    observed = np.isfinite(scaled)
    filled = np.where(observed, scaled, 0.0)
    # The last observed value (carried forward only as the *anchor* input, not as data).
    index = np.where(observed, np.arange(values.shape[1])[None, :], -1)
    last_index = index.max(axis=1)
    last = np.where(last_index >= 0, filled[np.arange(len(filled)), np.maximum(last_index, 0)], 0.0)
    features = np.concatenate(
        [
            np.clip(filled, -50, 50)[..., None],
            observed[..., None].astype(np.float64),
            calendar_features(end, values.shape[1], step),
        ],
        axis=-1,
    )
    return features.astype(np.float32), np.clip(last, -50, 50).astype(np.float32), location, scale


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss over observed targets; pred [B,H,Q], target [B,H] with NaN for gaps."""
    mask = torch.isfinite(target)
    safe = torch.where(mask, target, torch.zeros_like(target))
    diff = safe.unsqueeze(-1) - pred
    loss = torch.maximum(quantiles * diff, (quantiles - 1) * diff)
    loss = loss * mask.unsqueeze(-1)
    return loss.sum() / (mask.sum() * len(quantiles)).clamp(min=1)


class GlobalLSTMForecaster(Forecaster):
    name = "lstm"
    config_class = LSTMConfig
    config: LSTMConfig

    def __init__(self, config: LSTMConfig | None = None) -> None:
        super().__init__(config or LSTMConfig())
        torch.manual_seed(self.config.seed)
        self.net = LSTMNet(self.config)
        self._rank = (0, 1)  # (rank, processes) while fit_rank runs

    # ------------------------------------------------------------------ training

    def fit_rank(
        self,
        histories: Sequence[History],
        *,
        rank: int,
        world: int,
        on_epoch: EpochCallback | None = None,
    ) -> FitReport:
        """One rank of data-parallel training in a process group its caller has set up
        (models.forecasters.parallel): the rank trains on its shard of the training windows,
        gradients are averaged over ranks, rank 0 scores the validation batch for all."""
        self._rank = (rank, world)
        try:
            return self.fit(histories, on_epoch=on_epoch)
        finally:
            self._rank = (0, 1)

    def _fit(self, histories: Sequence[History], on_epoch: EpochCallback | None) -> FitReport:
        cfg = self.config
        rank, world = self._rank
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        span = cfg.context_length + cfg.horizon
        train, val = _window_index(histories, span, cfg.validation_fraction)
        if not train:
            raise ModelInputError(
                f"lstm: no series has the {span} steps one training window needs "
                f"(context {cfg.context_length} + horizon {cfg.horizon})"
            )
        data = [h.values.astype(np.float32) for h in histories]
        starts = [h.start for h in histories]
        step = histories[0].step
        quantiles = torch.tensor(cfg.quantiles, dtype=torch.float32)
        # One process: the network itself. Several: DDP averages the gradients in backward.
        net: nn.Module = self.net if world == 1 else DistributedDataParallel(self.net)
        optimiser = torch.optim.AdamW(
            net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        val_batch = None
        if rank == 0:
            val_batch = _sample(
                val or train,
                data,
                starts,
                step,
                span,
                cfg,
                rng,
                min(4096, cfg.windows_per_epoch // 2),
            )
        report = FitReport(
            train_windows=sum(n for _, _, n in train), val_windows=sum(n for _, _, n in val)
        )
        batch_size = cfg.batch_size
        if world > 1:
            # Disjoint shards; the same global batch (split over ranks) and steps per epoch.
            train = _shard(train, rank, world)
            rng = np.random.default_rng([cfg.seed, rank])
            batch_size = -(-cfg.batch_size // world)
        best = math.inf
        best_state: dict[str, Any] | None = None
        stale = 0
        started = time.perf_counter()
        for epoch in range(1, cfg.max_epochs + 1):
            net.train()
            losses = []
            for _ in range(max(1, cfg.windows_per_epoch // cfg.batch_size)):
                features, last, target = _sample(
                    train, data, starts, step, span, cfg, rng, batch_size
                )
                optimiser.zero_grad()
                loss = pinball_loss(net(features, last), target, quantiles)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                optimiser.step()
                losses.append(float(loss.detach()))
            self.net.eval()
            val_loss = math.nan
            if val_batch is not None:
                with torch.inference_mode():
                    val_loss = float(
                        pinball_loss(self.net(val_batch[0], val_batch[1]), val_batch[2], quantiles)
                    )
            if world > 1:  # every rank takes rank 0's early-stopping decision
                shared = torch.tensor([val_loss], dtype=torch.float64)
                dist.broadcast(shared, src=0)
                val_loss = float(shared[0])
            improved = val_loss < best - 1e-5
            if improved:
                best, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                stale += 1
            entry = EpochReport(epoch, cfg.max_epochs, float(np.mean(losses)), val_loss, improved)
            report.history.append(entry)
            if on_epoch is not None:
                on_epoch(entry)
            if stale >= cfg.patience:
                break
        if world > 1:  # a plain network again, free of DDP's gradient hooks
            del net, optimiser
            state = best_state or self.net.state_dict()
            self.net = LSTMNet(cfg)
            self.net.load_state_dict(state)
        elif best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        report.epochs = len(report.history)
        report.best_val_loss = best
        report.seconds = time.perf_counter() - started
        return report

    # ------------------------------------------------------------------ inference

    def _predict(self, batch: ContextBatch) -> np.ndarray:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        values = _fit_length(batch.values.astype(np.float64), cfg.context_length)
        out = np.empty((len(values), cfg.horizon, len(cfg.quantiles)))
        self.net.eval()
        with torch.inference_mode():
            for lo in range(0, len(values), cfg.predict_batch_size):
                hi = lo + cfg.predict_batch_size
                features, last, location, scale = build_inputs(
                    values[lo:hi], batch.end[lo:hi], batch.step
                )
                pred = self.net(torch.from_numpy(features), torch.from_numpy(last)[:, None])
                out[lo:hi] = pred.numpy() * scale[:, None, None] + location[:, None, None]
        # A series with no data in its context gets no forecast, not one made up from nothing.
        out[~np.isfinite(values).any(axis=1)] = np.nan
        return out


def _fit_length(values: np.ndarray, length: int) -> np.ndarray:
    """Keep the newest `length` steps; pad older missing steps with NaN (= gap)."""
    if values.shape[1] >= length:
        return values[:, -length:]
    pad = np.full((values.shape[0], length - values.shape[1]), np.nan)
    return np.concatenate([pad, values], axis=1)


Pool = list[tuple[int, int, int]]  # (series, first window start, number of starts)


def _window_index(
    histories: Sequence[History], span: int, validation_fraction: float
) -> tuple[Pool, Pool]:
    """Per series: the window starts of its training part and of its later validation tail."""
    train: Pool = []
    val: Pool = []
    for i, h in enumerate(histories):
        n = len(h) - span + 1
        if n <= 0:
            continue
        n_val = int(n * validation_fraction)
        if n - n_val > 0:
            train.append((i, 0, n - n_val))
        if n_val > 0:
            val.append((i, n - n_val, n_val))
    return train, val


def _shard(pool: Pool, rank: int, world: int) -> Pool:
    """Rank `rank`'s disjoint part of every series' window starts (a contiguous run of each)."""
    shard: Pool = []
    for series, first, count in pool:
        lo, hi = count * rank // world, count * (rank + 1) // world
        if hi > lo:
            shard.append((series, first + lo, hi - lo))
    if not shard:
        raise ModelInputError(f"lstm: too few training windows for {world} training processes")
    return shard


def _sample(
    pool: Pool,
    data: list[np.ndarray],
    starts: list[int],
    step: int,
    span: int,
    cfg: LSTMConfig,
    rng: np.random.Generator,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows drawn series-first (series equally likely), then position; gappy ones skipped."""
    windows = np.empty((size, span), dtype=np.float64)
    ends = np.empty(size, dtype=np.int64)
    filled = 0
    tries = 0
    while filled < size and tries < 20:
        tries += 1
        picks = rng.integers(0, len(pool), size=size - filled)
        for p in picks:
            series, first, count = pool[p]
            offset = first + int(rng.integers(0, count))
            window = data[series][offset : offset + span]
            observed = np.isfinite(window)
            if (
                observed[: cfg.context_length].mean() < cfg.min_observed
                or not observed[cfg.context_length :].any()
            ):
                continue
            windows[filled] = window
            ends[filled] = starts[series] + (offset + cfg.context_length - 1) * step
            filled += 1
    if filled == 0:
        raise ModelInputError("lstm: every training window is mostly gaps")
    windows, ends = windows[:filled], ends[:filled]
    features, last, location, scale = build_inputs(windows[:, : cfg.context_length], ends, step)
    target = (windows[:, cfg.context_length :] - location[:, None]) / scale[:, None]
    return (
        torch.from_numpy(features),
        torch.from_numpy(last)[:, None],
        torch.from_numpy(np.clip(target, -50, 50).astype(np.float32)),
    )
