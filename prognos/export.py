"""The cycle's export stage: the predictions `/metrics` shows, pushed by remote write when
`export.remote_write.url` is set (models/remote_write.py holds the protocol)."""

from __future__ import annotations

import logging

from core.clock import to_epoch
from models.remote_write import ExportSample, PushResult, RemoteWriter
from prognos.context import ServiceContext

log = logging.getLogger(__name__)

#: The families of /metrics that are predictions (the service's own metrics stay scraped).
EXPORTED = frozenset(
    {
        "prognos_forecast",
        "prognos_anomaly_score",
        "prognos_anomaly",
        "prognos_breach_probability",
        "prognos_breach_eta_seconds",
    }
)

# One writer per running context: it holds the batches a failed push left for the next cycle.
_WRITERS: dict[int, RemoteWriter] = {}


def exported_samples(context: ServiceContext) -> list[ExportSample]:
    """The prediction samples of /metrics, with the names and labels a scrape would see."""
    # /metrics' own collector is the one place that names and labels them. Imported here, and
    # only when pushing is on: the daemon starts without the web package (api/metrics.py
    # itself imports no web framework).
    from api.metrics import build_registry

    return [
        (sample.name, sample.labels, sample.value)
        for family in build_registry(context, "").collect()
        if family.name in EXPORTED
        for sample in family.samples
    ]


def export_predictions(context: ServiceContext) -> PushResult | None:
    """Push the newest forecasts, scores and breach probabilities, stamped with the cycle's
    time. A receiver that fails never fails the cycle: what it missed goes first next cycle."""
    settings = context.settings.export.remote_write
    if settings.url is None:
        return None
    writer = _writer(context)
    result = writer.push(
        exported_samples(context), timestamp_ms=to_epoch(context.clock.now()) * 1000
    )
    if result.sent:
        log.info(
            "remote write: %d samples in %d request(s) to %s",
            result.sent,
            result.requests,
            writer.url,
        )
    return result


def _writer(context: ServiceContext) -> RemoteWriter:
    key = id(context)
    writer = _WRITERS.get(key)
    if writer is None or writer.settings is not context.settings.export.remote_write:
        writer = _WRITERS[key] = RemoteWriter(context.settings.export.remote_write)
        context.on_stop.append(lambda: _close(key))
    return writer


def _close(key: int) -> None:
    writer = _WRITERS.pop(key, None)
    if writer is not None:
        writer.close()
