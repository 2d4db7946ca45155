"""The one registry of forecasters by name, and `build` to make one from a plain config dict."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from models.errors import ModelInputError
from models.forecasters.base import Forecaster
from models.forecasters.baselines import (
    MedianBandForecaster,
    NaiveForecaster,
    SeasonalNaiveForecaster,
)
from models.forecasters.lstm import GlobalLSTMForecaster

FORECASTERS: dict[str, type[Forecaster]] = {
    GlobalLSTMForecaster.name: GlobalLSTMForecaster,
    NaiveForecaster.name: NaiveForecaster,
    SeasonalNaiveForecaster.name: SeasonalNaiveForecaster,
    MedianBandForecaster.name: MedianBandForecaster,
}


def build(name: str, config: dict[str, Any] | None = None) -> Forecaster:
    """A new, unfitted forecaster; `config` holds the fields of its `*Config` (None: defaults)."""
    cls = FORECASTERS.get(name)
    if cls is None:
        raise ModelInputError(
            f"unknown forecaster {name!r}; known: {', '.join(sorted(FORECASTERS))}",
            detail={"known": sorted(FORECASTERS)},
        )
    try:
        parsed = cls.config_class.model_validate(config or {})
    except ValidationError as exc:
        raise ModelInputError(
            f"invalid {name} config: {_one_line(exc)}", detail={"forecaster": name}
        ) from None
    return cls(parsed)


def _one_line(exc: ValidationError) -> str:
    """Pydantic's errors as `field: message; ...` (without the offending input values)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
