"""A generated microservice system whose traces carry an injected fault, for tests and benchmarks.

`System.generate(n_services, seed)` builds a random call tree: service 0 is the entry, every other
service has one caller among the services before it, and each service has 1-3 operations with
their own latencies. `System.traces(...)` produces a span frame (ingest.spans) of requests
arriving uniformly over a time range; each request walks the tree (every child called with a
per-edge probability), child spans nested inside their parent with a network gap before and after.
The same seed gives the same system and the same spans. `System.traces` takes one `fault`, or
`active`: a function (service, time) -> the fault acting on that service then (or None), for
faults that change over time (sim.shop builds its spans so).

Faults (`Fault(kind, service, operation)`, active from `start_ns`):
- "slow": the operation (or all of the service's) gets extra self time (a slow leaf);
- "errors": the service's spans fail (error=True) and, as an error propagates, so do its callers';
- "exception": the service's spans throw (error=True) but its callers catch it: their spans stay
  ok and run a new "handle error" child operation of their own;
- "vanish": the service returns early: it stops calling its callees and does a tenth of its work;
- "network": the edges into the service get extra gap (caller span minus callee span);
- "cpu": all operations of the service get slower by a factor, and `System.metrics` shows its
  CPU saturating.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ingest.spans import SPAN_COLUMNS

MS = 1_000_000
FAULT_KINDS = ("slow", "errors", "exception", "vanish", "network", "cpu")

Row = tuple[str, str, str, str, str, int, int, bool]
#: (service, time in ns) -> the fault acting on that service at that time, or None.
ActiveFault = Callable[[str, int], "Fault | None"]


@dataclass(frozen=True)
class Fault:
    kind: str  #: one of FAULT_KINDS
    service: str
    operation: str | None = None
    start_ns: int = 0
    magnitude: float = 1.0  #: scales the effect (1: clearly visible)

    def active(self, service: str, at_ns: int) -> bool:
        return service == self.service and at_ns >= self.start_ns


@dataclass
class System:
    services: list[str]
    parent: dict[str, str | None]
    operations: dict[str, list[str]]
    self_ms: dict[tuple[str, str], float]
    call_probability: dict[str, float]
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def generate(cls, n_services: int = 8, seed: int = 0) -> System:
        rng = np.random.default_rng(seed)
        names = ["frontend"] + [f"svc{i:02d}" for i in range(1, n_services)]
        parent: dict[str, str | None] = {names[0]: None}
        for i, name in enumerate(names[1:], 1):
            # Prefer recent callers a little: deeper trees than a star.
            parent[name] = names[int(rng.integers(max(0, i - 4), i))]
        operations = {s: [f"{s}/op{k}" for k in range(int(rng.integers(1, 4)))] for s in names}
        self_ms = {(s, op): float(rng.uniform(0.5, 8.0)) for s in names for op in operations[s]}
        probability = {s: float(rng.uniform(0.6, 1.0)) for s in names}
        system = cls(names, parent, operations, self_ms, probability)
        for s, p in parent.items():
            if p is not None:
                system.children.setdefault(p, []).append(s)
        return system

    def traces(
        self,
        *,
        start_ns: int,
        end_ns: int,
        requests: int,
        fault: Fault | None = None,
        active: ActiveFault | None = None,
        seed: int = 1,
    ) -> pd.DataFrame:
        if active is None:
            active = _single(fault)
        rng = np.random.default_rng(seed)
        rows: list[Row] = []
        arrivals = np.sort(rng.integers(start_ns, end_ns, size=requests))
        for r, t0 in enumerate(arrivals.tolist()):
            trace_id = f"{seed:04x}{r:012x}"
            self._span(rows, rng, trace_id, "", self.services[0], int(t0), active, [0])
        frame = pd.DataFrame(rows, columns=list(SPAN_COLUMNS))
        return frame.astype(SPAN_COLUMNS)

    def _span(
        self,
        rows: list[Row],
        rng: np.random.Generator,
        trace_id: str,
        parent_id: str,
        service: str,
        start: int,
        active: ActiveFault,
        counter: list[int],
    ) -> tuple[int, bool, bool]:
        """Append the span of `service` (and its subtree) starting at `start`; returns its end,
        whether it failed and whether it threw an exception for its caller to catch."""
        counter[0] += 1
        span_id = f"{trace_id[:4]}{trace_id[-6:]}{counter[0]:06x}"
        ops = self.operations[service]
        operation = ops[int(rng.integers(0, len(ops)))]
        fault = active(service, start)
        kind = fault.kind if fault is not None else None
        own = self.self_ms[(service, operation)] * float(rng.lognormal(0.0, 0.15))
        magnitude = fault.magnitude if fault is not None else 1.0
        if kind == "slow" and fault is not None and fault.operation in (None, operation):
            own += 25.0 * magnitude
        elif kind == "cpu":
            own *= 1.0 + 4.0 * magnitude
        elif kind == "vanish":
            own *= 0.1
        t = start + int(own * MS / 2)
        failed = kind in ("errors", "exception")
        for child in [] if kind == "vanish" else self.children.get(service, []):
            if rng.random() > self.call_probability[child]:
                continue
            # A client span in the caller wraps the callee's server span; the time between
            # them is the network (and queueing) on that edge.
            gap = int(float(rng.uniform(0.2, 0.6)) * MS)
            edge = active(child, start)
            if edge is not None and edge.kind == "network":
                gap += int(15.0 * edge.magnitude * MS)
            counter[0] += 1
            client_id = f"{trace_id[:4]}{trace_id[-6:]}{counter[0]:06x}"
            child_end, child_failed, thrown = self._span(
                rows, rng, trace_id, client_id, child, t + gap, active, counter
            )
            end = child_end + gap
            rows.append(
                (trace_id, client_id, span_id, service, f"call {child}", t, end, child_failed)
            )
            t = end
            if thrown:  # caught here: an error handler of our own runs, and we carry on
                counter[0] += 1
                handler_id = f"{trace_id[:4]}{trace_id[-6:]}{counter[0]:06x}"
                handled = t + int(float(rng.uniform(0.5, 1.5)) * MS)
                rows.append(
                    (trace_id, handler_id, span_id, service, "handle error", t, handled, False)
                )
                t = handled
            failed = failed or (child_failed and not thrown)
        end = t + int(own * MS / 2)
        rows.append((trace_id, span_id, parent_id, service, operation, start, end, failed))
        return end, failed, kind == "exception"

    def metrics(
        self,
        *,
        start_ns: int,
        end_ns: int,
        step_s: int = 15,
        fault: Fault | None = None,
        seed: int = 2,
    ) -> pd.DataFrame:
        """Per-service CPU and memory every `step_s` seconds ("<service>|cpu", "<service>|memory");
        a "cpu" fault saturates its service's CPU from the fault's start."""
        rng = np.random.default_rng(seed)
        times = np.arange(start_ns, end_ns, step_s * 10**9)
        data = {}
        for s in self.services:
            cpu = 0.3 + 0.05 * rng.standard_normal(len(times))
            memory = 200.0 + 5.0 * rng.standard_normal(len(times))
            if fault is not None and fault.kind == "cpu" and fault.service == s:
                cpu = np.where(
                    times >= fault.start_ns, 0.97 + 0.01 * rng.standard_normal(len(times)), cpu
                )
            data[f"{s}|cpu"] = cpu
            data[f"{s}|memory"] = memory
        return pd.DataFrame(data, index=pd.to_datetime(times, unit="ns", utc=True))

    def path_to(self, service: str) -> list[str]:
        path = [service]
        while (p := self.parent[path[0]]) is not None:
            path.insert(0, p)
        return path


def _single(fault: Fault | None) -> ActiveFault:
    """One fault, acting on its service from its start."""

    def active(service: str, at_ns: int) -> Fault | None:
        return fault if fault is not None and fault.active(service, at_ns) else None

    return active
