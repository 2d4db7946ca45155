"""The simulated shop as a metric source (ingest's `Source`): what Prometheus would answer about
it, never a point after the clock's now."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from core.clock import Clock, to_epoch
from core.settings import TargetSettings
from ingest.domain import PullResult, SeriesData, SeriesKey
from ingest.errors import QueryError
from sim.errors import SimInputError
from sim.rules import evaluate
from sim.shop import SERVICES, TARGETS, Shop


class ShopSource:
    kind = "sim"

    def __init__(self, shop: Shop, clock: Clock, *, max_points: int = 11_000) -> None:
        self.shop = shop
        self.clock = clock
        self._max_points = max_points

    @property
    def max_points_per_request(self) -> int:
        return self._max_points

    def describe(self) -> str:
        return (
            f"simulated shop (seed {self.shop.seed}, {len(SERVICES)} services, "
            f"{self.shop.step}s step)"
        )

    def check(self) -> None:
        """The simulation is always there."""

    def targets(self, defaults: Mapping[str, Any] | None = None) -> list[TargetSettings]:
        """One target per shop metric; memory and latency_p99 carry the shop's limits."""
        out = []
        for name in TARGETS:
            extra = dict(defaults or {})
            if name in self.shop.limits:
                extra.setdefault("breach", self.shop.limits[name])
            out.append(
                TargetSettings(
                    name=name,
                    query=name,
                    step=timedelta(seconds=self.shop.step),
                    service_label="service",
                    **extra,
                )
            )
        return out

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        if step % self.shop.step:
            raise QueryError(
                f"target {target.name!r}: step {step}s is not a multiple of the shop's "
                f"{self.shop.step}s",
                target=target.name,
            )
        now = to_epoch(self.clock.now())
        end = min(end, now - now % step)
        result = PullResult()
        if end < start:
            return result
        # A shop metric by its name; any other target by its query (the PromQL subset that
        # sim.rules' alerting rules use), keyed by the target's name.
        if target.name in TARGETS:
            found = self.shop.series(target.name, start, end)
        else:
            try:
                found = evaluate(self.shop, target.query, start, end)
            except SimInputError as exc:
                raise QueryError(
                    f"target {target.name!r}: {exc.message}", target=target.name
                ) from None
        # Points at multiples of `step` in [start, end] (ingest asks for aligned windows).
        for data in found:
            keep = data.timestamps % step == 0
            if keep.any():
                key = SeriesKey.of(target.name, data.key.label_dict)
                result.series.append(SeriesData(key, data.timestamps[keep], data.values[keep]))
        return result
