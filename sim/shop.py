"""A deterministic microservice shop: per-pod metrics and spans of five services under a daily and
weekly load, with faults injected on any service and restarts / scaling that change them.

The call graph (`CALLS`): frontend calls users, orders and cart; orders calls payment and users;
cart calls users. A caller feels a callee's trouble a little (`CALLER_SHARE` per hop).

Load is one shape for the whole shop: a daily cycle peaking in the afternoon (UTC, the hour drawn
per seed), 28 % lower at weekends, so the weekly peak is 1. A pod's load is its service's load
times (initial replicas / current replicas). Per pod and target (`TARGETS`):

- memory (bytes): a base plus a load share, pinned at the pod's limit (`MEMORY_LIMIT`: the cgroup
  cannot hold more);
- cpu (share of a core, 0..1), requests (per second), latency_p99 (seconds), errors (share of
  requests that fail).

Normal daily peaks stay at or under ~60 % of the limits (`limits`); only a fault crosses them.

Faults (`Fault(kind, service, start, magnitude)`; magnitude 1 is clearly visible):

- leak: every pod's memory grows linearly from `start`, or from the pod's last restart or birth
  after it (the leak is in the code, so it stays and grows again: a restart shows as a drop). At
  magnitude 1 it takes ~75 min (`LEAK_RAMP`) from the normal level to the limit. Near the limit
  garbage collection costs the pods some CPU and latency, and their spans slow a little.
- latency: the service's p99 creeps up linearly, reaching the SLO (`LATENCY_SLO`) ~75 min
  (`LATENCY_RAMP`) after `start`; its spans get that much slower (half of it, the mean not p99).
- errors: a share (`ERROR_BURST` x magnitude) of the service's requests fail; its spans throw
  ("exception" in sim.traces: the span is an error and the caller runs an error handler); callers
  see a few more errors and a little more latency (retries).
- cpu: the service's CPU saturates within 5 min; its latency and spans get slower.

Simplification: a restart of the service ends a latency, errors or cpu fault (the bad state was in
the process); a leak restarts from zero. Restarts and scaling act on every pod of the service.

Deterministic: a value depends only on (seed, series, timestamp) and the faults, restarts and
scaling, never on the window that asked for it (noise is drawn per series and UTC day).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.settings import BreachSettings
from ingest.domain import SeriesData, SeriesKey
from sim import traces
from sim.errors import SimInputError, UnknownServiceError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SERVICES: tuple[str, ...] = ("frontend", "users", "orders", "payment", "cart")
CALLS: dict[str, tuple[str, ...]] = {
    "frontend": ("users", "orders", "cart"),
    "orders": ("payment", "users"),
    "cart": ("users",),
    "users": (),
    "payment": (),
}
TARGETS: tuple[str, ...] = ("memory", "cpu", "requests", "latency_p99", "errors")
FAULT_KINDS: tuple[str, ...] = ("leak", "latency", "errors", "cpu")
REPLICAS: dict[str, int] = {"frontend": 2, "users": 2, "orders": 2, "payment": 1, "cart": 1}

MINUTE = 60
HOUR = 3_600
DAY = 86_400
MEMORY_LIMIT = 1e9  #: bytes per pod
LATENCY_SLO = 0.5  #: seconds, p99 of every service
LEAK_RAMP = 75 * MINUTE  #: magnitude 1: from the normal memory level to the limit
LATENCY_RAMP = 75 * MINUTE  #: magnitude 1: from the normal p99 to the SLO
CPU_RAMP = 5 * MINUTE  #: a cpu hog saturates its service this fast
ERROR_BURST = 0.2  #: share of failing requests at magnitude 1
CALLER_SHARE = 0.25  #: how much of a callee's trouble a caller shows, per hop
NORMAL_LOAD = 0.6  #: the load the ramps start from ("the normal level")


@dataclass(frozen=True)
class Fault:
    kind: str  #: one of FAULT_KINDS
    service: str
    start: int  #: epoch seconds
    magnitude: float = 1.0


@dataclass(frozen=True)
class _Profile:
    """One service's behaviour at load u (0..1 per pod)."""

    rps: float  #: requests per second of the whole service at load 1
    memory_base: float  #: bytes
    memory_load: float  #: bytes added at load 1
    cpu_base: float
    cpu_load: float
    latency: float  #: p99 seconds at load 0; load 1 adds 60 %
    operations: tuple[tuple[str, float], ...]  #: (span operation, self time in ms)
    call_probability: float  #: how often a caller calls it per request


PROFILES: dict[str, _Profile] = {
    "frontend": _Profile(
        120.0,
        380e6,
        180e6,
        0.10,
        0.45,
        0.16,
        (("GET /", 3.0), ("GET /product", 5.0), ("POST /checkout", 8.0)),
        1.0,
    ),
    "users": _Profile(
        150.0, 420e6, 150e6, 0.08, 0.35, 0.05, (("GetUser", 1.5), ("Authenticate", 3.0)), 0.9
    ),
    "orders": _Profile(
        40.0, 450e6, 160e6, 0.12, 0.40, 0.12, (("CreateOrder", 6.0), ("ListOrders", 4.0)), 0.5
    ),
    "payment": _Profile(25.0, 300e6, 120e6, 0.06, 0.30, 0.10, (("Charge", 12.0),), 0.8),
    "cart": _Profile(
        60.0, 350e6, 140e6, 0.07, 0.38, 0.06, (("GetCart", 2.0), ("AddItem", 3.0)), 0.7
    ),
}


class Shop:
    def __init__(
        self, seed: int = 0, *, step: int = 60, replicas: Mapping[str, int] | None = None
    ) -> None:
        if step < 1 or DAY % step:
            raise SimInputError(f"step {step}s must divide a day")
        self.seed = seed
        self.step = step
        self.services = list(SERVICES)
        self.calls = dict(CALLS)
        self.initial = {s: int((replicas or {}).get(s, REPLICAS[s])) for s in SERVICES}
        for service, count in self.initial.items():
            _check_replicas(service, count)
        self.limits: dict[str, BreachSettings] = {
            "memory": BreachSettings(threshold=MEMORY_LIMIT, direction="above"),
            "latency_p99": BreachSettings(threshold=LATENCY_SLO, direction="above"),
        }
        self.faults: list[Fault] = []
        self.restarts: dict[str, list[int]] = {s: [] for s in SERVICES}
        self._scales: dict[str, list[tuple[int, int]]] = {s: [] for s in SERVICES}
        self._peak_hour = float(np.random.default_rng([seed]).uniform(13.0, 16.0))
        self._weights = _caller_weights()
        self._system = _system()

    # -- changes --------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self._service(fault.service)
        if fault.kind not in FAULT_KINDS:
            raise SimInputError(f"fault kind {fault.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if not fault.magnitude > 0:
            raise SimInputError(f"fault magnitude {fault.magnitude} must be positive")
        self.faults.append(fault)

    def restart(self, service: str, at: int) -> None:
        """Every pod of the service restarts at `at`."""
        self._service(service)
        self.restarts[service] = sorted([*self.restarts[service], int(at)])

    def scale(self, service: str, replicas: int, at: int) -> None:
        """From `at` on the service runs `replicas` pods; new pods start fresh."""
        self._service(service)
        _check_replicas(service, replicas)
        events = [*self._scales[service], (int(at), int(replicas))]
        self._scales[service] = sorted(events, key=lambda e: e[0])  # stable: later call wins

    def pods(self, service: str, at: int | None = None) -> list[str]:
        """The pods of the service at `at` (default: after every scaling)."""
        self._service(service)
        count = self._replicas(service, np.array([at if at is not None else 2**62]))[0]
        return [f"{service}-{i}" for i in range(int(count))]

    # -- metrics --------------------------------------------------------------------------------
    def series(self, target: str, start: int, end: int) -> list[SeriesData]:
        """Every pod's series of `target` at the step-aligned times in [start, end]."""
        return self._series(target, start, end, self.services)

    def at(self, target: str, service: str, ts: int) -> dict[str, float]:
        """Each pod's value of `target` at the second `ts`, between steps too (what a status
        check sees right after a restart)."""
        self._service(service)
        if target not in TARGETS:
            raise SimInputError(f"target {target!r} is not one of {', '.join(TARGETS)}")
        when = np.array([int(ts)], dtype=np.int64)
        load, replicas = self._load(when), self._replicas(service, when)
        return {
            f"{service}-{pod}": float(self._values(target, service, pod, when, load, replicas)[0])
            for pod in range(int(replicas[0]))
        }

    def crossing(self, service: str, target: str, after: int) -> int | None:
        """The first step-aligned time >= `after` (within a day) at which a pod of the service
        is at or past the target's limit, given the faults, restarts and scaling so far."""
        self._service(service)
        limit = self.limits.get(target)
        if limit is None:
            raise SimInputError(f"target {target!r} has no limit in the shop")
        first: int | None = None
        for data in self._series(target, after, after + DAY, [service]):
            values = data.values
            hit = (
                values >= limit.threshold
                if limit.direction == "above"
                else values <= limit.threshold
            )
            if hit.any():
                ts = int(data.timestamps[int(np.argmax(hit))])
                first = ts if first is None else min(first, ts)
        return first

    def _series(
        self, target: str, start: int, end: int, services: Sequence[str]
    ) -> list[SeriesData]:
        if target not in TARGETS:
            raise SimInputError(f"target {target!r} is not one of {', '.join(TARGETS)}")
        first = -(-int(start) // self.step) * self.step
        grid = np.arange(first, int(end) + 1, self.step, dtype=np.int64)
        load = self._load(grid)
        out: list[SeriesData] = []
        for service in services:
            replicas = self._replicas(service, grid)
            for pod in range(int(replicas.max(initial=0))):
                exists = replicas > pod
                if not exists.any():
                    continue
                ts = grid[exists]
                values = self._values(target, service, pod, ts, load[exists], replicas[exists])
                key = SeriesKey.of(target, {"service": service, "pod": f"{service}-{pod}"})
                out.append(SeriesData(key, ts, values))
        return out

    def _values(
        self,
        target: str,
        service: str,
        pod: int,
        ts: IntArray,
        load: FloatArray,
        replicas: IntArray,
    ) -> FloatArray:
        profile = PROFILES[service]
        u = load * self.initial[service] / replicas
        z = self._noise(target, service, pod, ts)
        if target == "requests":
            return profile.rps * load / replicas * np.exp(0.05 * z)
        if target == "memory":
            return np.minimum(self._memory(service, pod, ts, u) + 6e6 * z, MEMORY_LIMIT)
        gc = self._gc(service, pod, ts, u)
        if target == "cpu":
            cpu = profile.cpu_base + profile.cpu_load * u + 0.015 * z + 0.15 * gc
            for fault, age in self._bad_states(service, ts, "cpu"):
                cpu += (0.97 - cpu) * _ramp(age, fault.magnitude)
            return np.clip(cpu, 0.0, 1.0)
        if target == "errors":
            share = 0.002 * np.exp(0.3 * z)
            for fault, age in self._bad_states(service, ts, "errors"):
                weight = self._weights[service][fault.service]
                share += np.where(age >= 0, ERROR_BURST * fault.magnitude * weight, 0.0)
            return np.clip(share, 0.0, 1.0)
        # latency_p99
        latency = profile.latency * (1.0 + 0.6 * u) * np.exp(0.06 * z) * (1.0 + 0.3 * gc)
        for fault, age in self._bad_states(service, ts, None):
            weight = self._weights[service][fault.service]
            if fault.kind == "latency":
                latency += weight * self._creep(fault) * np.maximum(age, 0.0)
            elif fault.kind == "cpu":
                latency *= 1.0 + 1.5 * weight * _ramp(age, fault.magnitude)
            elif fault.kind == "errors" and fault.service != service:
                latency *= 1.0 + np.where(age >= 0, 0.4 * weight * fault.magnitude, 0.0)
        return latency

    # -- the pieces -----------------------------------------------------------------------------
    def _load(self, ts: IntArray) -> FloatArray:
        hours = (ts % DAY) / HOUR
        daily = 0.3 + 0.7 * ((1.0 + np.cos(2 * np.pi * (hours - self._peak_hour) / 24)) / 2) ** 1.5
        weekday = (ts // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        return np.asarray(daily * np.where(weekday >= 5, 0.72, 1.0), dtype=np.float64)

    def _replicas(self, service: str, ts: IntArray) -> IntArray:
        events = self._scales[service]
        counts = np.full(ts.shape, self.initial[service], dtype=np.int64)
        if events:
            times = np.array([at for at, _ in events], dtype=np.int64)
            values = np.array([n for _, n in events], dtype=np.int64)
            idx = np.searchsorted(times, ts, side="right") - 1
            counts = np.where(idx >= 0, values[np.maximum(idx, 0)], counts)
        return counts

    def _resets(self, service: str, pod: int) -> list[int]:
        """When the pod started afresh: the service's restarts and the pod's births."""
        births, count = [], self.initial[service]
        for at, replicas in self._scales[service]:
            if count <= pod < replicas:
                births.append(at)
            count = replicas
        return sorted([*self.restarts[service], *births])

    def _memory(self, service: str, pod: int, ts: IntArray, u: FloatArray) -> FloatArray:
        """Memory without noise (and not yet pinned at the limit)."""
        profile = PROFILES[service]
        memory = profile.memory_base + profile.memory_load * u + 15e6 * self._offset(service, pod)
        leaks = [f for f in self.faults if f.kind == "leak" and f.service == service]
        if not leaks:
            return memory
        # The last restart or birth at or before each time (long ago when none).
        resets = np.array([np.iinfo(np.int64).min, *self._resets(service, pod)], dtype=np.int64)
        last = resets[np.searchsorted(resets, ts, side="right") - 1]
        normal = profile.memory_base + profile.memory_load * NORMAL_LOAD
        spread = 1.0 + 0.08 * self._offset(service, pod + 100)
        for fault in leaks:
            since = np.maximum(last, fault.start)
            rate = (MEMORY_LIMIT - normal) / LEAK_RAMP * fault.magnitude * spread
            memory = memory + np.where(ts >= fault.start, rate * (ts - since), 0.0)
        return memory

    def _gc(self, service: str, pod: int, ts: IntArray, u: FloatArray) -> FloatArray:
        """0..1: how hard garbage collection works as a leaking pod nears its limit."""
        if not any(f.kind == "leak" and f.service == service for f in self.faults):
            return np.zeros(ts.shape)
        fraction = np.minimum(self._memory(service, pod, ts, u), MEMORY_LIMIT) / MEMORY_LIMIT
        return np.asarray(np.clip((fraction - 0.75) / 0.25, 0.0, 1.0), dtype=np.float64)

    def _bad_states(
        self, service: str, ts: IntArray, kind: str | None
    ) -> list[tuple[Fault, FloatArray]]:
        """Faults (other than leaks) felt by `service` (its own, or a callee's), each with its age
        at `ts`: seconds since its start; -1 before it and after the restart that ended it."""
        out = []
        for fault in self.faults:
            if fault.kind == "leak" or (kind is not None and fault.kind != kind):
                continue
            if self._weights[service].get(fault.service, 0.0) == 0.0:
                continue
            ended = next((r for r in self.restarts[fault.service] if r > fault.start), None)
            live = ts >= fault.start
            if ended is not None:
                live &= ts < ended
            out.append((fault, np.where(live, (ts - fault.start).astype(np.float64), -1.0)))
        return out

    def _creep(self, fault: Fault) -> float:
        """Seconds of p99 a latency fault adds per second."""
        profile = PROFILES[fault.service]
        normal = profile.latency * (1.0 + 0.6 * NORMAL_LOAD)
        return (LATENCY_SLO - normal) / LATENCY_RAMP * fault.magnitude

    def _noise(self, target: str, service: str, pod: int, ts: IntArray) -> FloatArray:
        index = _series_index(target, f"{service}-{pod}")
        days = ts // DAY
        per_day = DAY // self.step
        out = np.empty(ts.shape, dtype=np.float64)
        for day in np.unique(days).tolist():
            mask = days == day
            block = _noise_block(self.seed, index, int(day), per_day)
            out[mask] = block[(ts[mask] - day * DAY) // self.step]
        return out

    def _offset(self, service: str, pod: int) -> float:
        """A fixed per-pod deviation in [-1, 1]."""
        index = _series_index("offset", f"{service}-{pod}")
        return float(np.random.default_rng([self.seed, index]).uniform(-1.0, 1.0))

    def _service(self, service: str) -> None:
        if service not in SERVICES:
            raise UnknownServiceError(
                f"no service {service!r} in the shop (services: {', '.join(SERVICES)})"
            )

    # -- spans ----------------------------------------------------------------------------------
    def spans(self, start_ns: int, end_ns: int, *, requests: int) -> pd.DataFrame:
        """`requests` traces arriving uniformly in [start_ns, end_ns), with the faults acting
        then (span frame of ingest.spans)."""
        seed = zlib.crc32(f"{self.seed}:{start_ns}:{end_ns}:{requests}".encode())
        return self._system.traces(
            start_ns=start_ns, end_ns=end_ns, requests=requests, active=self._span_fault, seed=seed
        )

    def _span_fault(self, service: str, at_ns: int) -> traces.Fault | None:
        if not any(f.service == service for f in self.faults):
            return None  # a callee's trouble shows through the span tree itself
        at = np.array([at_ns // 1_000_000_000], dtype=np.int64)
        for fault, age in self._bad_states(service, at, None):
            if fault.service != service or age[0] < 0:
                continue
            if fault.kind == "latency":
                extra_ms = self._creep(fault) * float(age[0]) * 1000.0 / 2  # the mean, not p99
                return traces.Fault("slow", service, magnitude=extra_ms / 25.0)
            if fault.kind == "cpu":
                return traces.Fault("cpu", service, magnitude=float(_ramp(age, fault.magnitude)[0]))
            if _chance(self.seed, at_ns) < ERROR_BURST * fault.magnitude:
                return traces.Fault("exception", service)
        load = self._load(at) * self.initial[service] / self._replicas(service, at)
        gc = float(self._gc(service, 0, at, load)[0])
        if gc > 0:
            return traces.Fault("cpu", service, magnitude=0.2 * gc)  # GC pauses: modest
        return None


def _check_replicas(service: str, replicas: int) -> None:
    if not 1 <= replicas <= 20:
        raise SimInputError(f"{service}: replicas must be 1..20, not {replicas}")


def _ramp(age: FloatArray, magnitude: float) -> FloatArray:
    return np.asarray(np.clip(age / CPU_RAMP, 0.0, 1.0) * min(1.0, magnitude), dtype=np.float64)


def _chance(seed: int, at_ns: int) -> float:
    """A deterministic uniform number in [0, 1) for a moment (which requests fail)."""
    return (zlib.crc32(f"{seed}:{at_ns}".encode()) & 0xFFFFFF) / float(1 << 24)


def _series_index(target: str, pod: str) -> int:
    return zlib.crc32(f"{target}/{pod}".encode())


@lru_cache(maxsize=4096)
def _noise_block(seed: int, index: int, day: int, points: int) -> FloatArray:
    block = np.random.default_rng([seed, index, day]).standard_normal(points)
    block.setflags(write=False)
    return block


def _caller_weights() -> dict[str, dict[str, float]]:
    """weights[a][b]: how much of b's trouble a shows: 1 for itself, CALLER_SHARE per hop from a
    caller down to b (the shortest path), 0 when a never calls b."""
    weights: dict[str, dict[str, float]] = {}
    for service in SERVICES:
        hops = {service: 0}
        frontier = [service]
        while frontier:
            nxt = []
            for caller in frontier:
                for callee in CALLS[caller]:
                    if callee not in hops:
                        hops[callee] = hops[caller] + 1
                        nxt.append(callee)
            frontier = nxt
        weights[service] = {s: CALLER_SHARE**h for s, h in hops.items()}
    return weights


def _system() -> traces.System:
    """The shop's call graph as a sim.traces System (its span generator)."""
    parent: dict[str, str | None] = {"frontend": None}
    for caller in SERVICES:
        for callee in CALLS[caller]:
            parent.setdefault(callee, caller)
    system = traces.System(
        services=list(SERVICES),
        parent=parent,
        operations={s: [op for op, _ in PROFILES[s].operations] for s in SERVICES},
        self_ms={(s, op): ms for s in SERVICES for op, ms in PROFILES[s].operations},
        call_probability={s: PROFILES[s].call_probability for s in SERVICES},
    )
    system.children = {s: list(CALLS[s]) for s in SERVICES if CALLS[s]}
    return system
