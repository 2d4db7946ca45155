"""A Prometheus for the demo, when the binary is installed: on loopback, scraping the simulated
platform's `/metrics` every second, so a playbook's verification asks a real Prometheus whether
the restarted service is healthy again.

    with DevPrometheus(scrape="127.0.0.1:8431") as prometheus:
        settings.prometheus.url = prometheus.url

Its samples are stamped with Prometheus' own wall clock: it sees the shop *now*, which is what a
verification needs; the history the service learns from is fed to the ingest layer directly.
"""

from __future__ import annotations

import shutil

from core.errors import ErrorKind
from sim.errors import SimError
from sim.lifecycle import ChildServer


class DevPrometheusError(SimError):
    code = "dev_prometheus_unavailable"
    kind = ErrorKind.UNAVAILABLE


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class DevPrometheus(ChildServer):
    name = "prometheus"

    def __init__(self, *, scrape: str, interval_s: int = 1, ready_timeout_s: float = 60) -> None:
        super().__init__(ready_timeout_s)
        self.scrape = scrape  #: host:port of the platform API (its /metrics)
        self.interval_s = interval_s

    def start(self) -> DevPrometheus:
        if self._proc is not None:
            return self
        binary = prometheus_binary()
        if binary is None:
            raise DevPrometheusError("Prometheus is not installed (apt-get install prometheus)")
        home = self._new_home("prognos-devprometheus-")
        (home / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {self.interval_s}s\n"
            "scrape_configs:\n"
            "  - job_name: shop\n"
            f"    static_configs: [{{targets: ['{self.scrape}']}}]\n",
            encoding="utf-8",
        )
        self._spawn(
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ]
        )
        try:
            self._wait_ready("/-/ready", DevPrometheusError)
        except BaseException:
            self.stop()
            raise
        return self
