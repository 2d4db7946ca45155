"""`prognos demo`: the story this project exists for, on a simulated shop, told as it happens.

A simulated shop (`sim.Shop`: frontend, users, orders, payment, cart) feeds the ingest layer
through `sim.ShopSource`; its platform API (`sim.PlatformServer`) restarts deployments only for a
caller holding the admin token that lives in a dev OpenBao (`sim.DevVault`). The service is the
real one — `build_context`, the daemon's `jobs.cycle`, the executor, the API — on a
`ScaledClock`: one simulated minute per wall second by default, so the proposal expiry, the
executor's lease, incident grouping and the forecasts all run on simulated time.

Why the demo feeds the ingest layer directly and not through a Prometheus: a scrape stamps each
sample with the server's own wall clock, so samples from a clock running 60 times faster cannot
go through one, and `promtool tsdb create-blocks-from` only writes the past. The source is the
same `Source` protocol the Prometheus reader implements, and the cycle is the daemon's own.

`Story` is the engine shared by the command and `bench/story.py`: `Story.run()` steps the cycle
on whatever clock it was given (a `ScaledClock` for the demo, a `FixedClock` stepped as fast as
possible for the bench) and fills a `Timeline`.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.clock import Clock, FixedClock, ScaledClock, to_epoch
from core.database import session_scope
from core.settings import Settings
from ingest.span_store import store_spans
from ingest.tables import SeriesRow
from models.forecasters.base import EpochCallback
from models.tables import BreachRow
from prognos import jobs
from prognos.context import ServiceContext
from rca.tables import IncidentRow
from remediation import audit
from remediation import service as remediation_service
from remediation.domain import FINISHED_EXECUTION_STATES
from remediation.tables import ProposalRow
from sim import scenarios

log = logging.getLogger(__name__)

#: the playbooks the demo proposes (restart through the simulated platform API)
DEMO_PLAYBOOKS = Path(__file__).resolve().parents[1] / "deploy" / "demo" / "playbooks"
#: the same, verified by a real Prometheus scraping the platform (when the binary is installed)
DEMO_PLAYBOOKS_PROMETHEUS = DEMO_PLAYBOOKS.with_name("playbooks-prometheus")
#: generated scenarios (sim.scenarios, all kinds) the LSTM learns from besides the shop's history
SCENARIO_SEEDS = 10
#: requests per simulated minute that produce spans (enough for RCA, cheap to store)
SPAN_REQUESTS_PER_MINUTE = 40


@dataclass
class StoryOptions:
    seed: int = 0
    fault: str = "leak"
    service: str = "cart"
    #: simulated seconds per wall second (the bench uses a stepped clock instead)
    rate: float = 60.0
    history: timedelta = timedelta(days=3)
    #: when the fault starts, after the service starts watching
    inject_after: timedelta = timedelta(minutes=10)
    #: the story gives up this long (simulated) after the fault started
    give_up_after: timedelta = timedelta(hours=4)
    forecaster: str = "lstm"
    forecaster_config: dict[str, Any] = field(default_factory=dict)
    #: approve at once (no pause for a person)
    approve: bool = False
    #: False: never approve; run until the limit is crossed (how early was it warned, unfixed)
    fix: bool = True
    #: how long (wall seconds) a person has to approve on the page before the demo does
    pause: float = 60.0
    port: int = 8000
    data_dir: Path = Path("var/demo")
    #: None: DEMO_PLAYBOOKS_PROMETHEUS when a Prometheus runs, else DEMO_PLAYBOOKS
    playbooks_dir: Path | None = None
    #: start a Prometheus scraping the platform to verify fixes: None = when it is installed
    prometheus: bool | None = None
    serve: bool = True
    #: a data folder to start from (e.g. one where a model was already trained: the bench)
    template: Path | None = None


@dataclass
class Timeline:
    """What happened when. Times are simulated epoch seconds unless named `wall_`."""

    fault: str
    injected_service: str
    injected_at: int
    predicted_at: int | None = None
    predicted_eta: int | None = None
    predicted_probability: float | None = None
    crossed_at: int | None = (
        None  #: when the limit was (or, without the fix, would have been) crossed
    )
    incident_id: int | None = None
    incident_opened_at: int | None = None
    top_suspect: str | None = None
    suspect_rank: int | None = None
    suspects: list[str] = field(default_factory=list)
    proposal_id: int | None = None
    proposed_at: int | None = None
    playbook: str | None = None
    approved_at: int | None = None
    approved_by: str | None = None
    first_step_at: int | None = None
    recovered_at: int | None = None
    execution_status: str | None = None
    audit_verified: bool = False
    vault_lease_revoked: bool = False
    #: what verified the recovery: "prometheus" (a real one, scraping the platform) or the
    #: platform API's status
    verified_by: str = "platform status"
    #: incidents opened before the fault: false alarms on the healthy shop
    incidents_before_fault: int = 0
    wall_approval_to_first_step: float | None = None
    wall_seconds: float | None = None

    @property
    def lead_seconds(self) -> int | None:
        if self.predicted_at is None or self.crossed_at is None:
            return None
        return self.crossed_at - self.predicted_at

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lead_seconds"] = self.lead_seconds
        data["durations"] = {
            "simulated": [
                "lead_seconds",
                "predicted_at",
                "crossed_at",
                "incident_opened_at",
                "proposed_at",
                "approved_at",
                "first_step_at",
                "recovered_at",
                "injected_at",
            ],
            "wall_clock": ["wall_approval_to_first_step", "wall_seconds"],
        }
        return data


def _iso(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%a %H:%M")


class Story:
    """The simulated shop, its platform, a dev Vault and the service watching them, stepped
    cycle by cycle on one clock. Use as a context manager: it stops what it started."""

    def __init__(
        self,
        options: StoryOptions,
        clock: Clock,
        *,
        say: Callable[[str], None] = print,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        from sim.shop import Fault, Shop

        self.options = options
        self.clock = clock
        self.say = say
        self.on_epoch = on_epoch
        self.shop = Shop(options.seed)
        self.step = self.shop.step
        self.start = to_epoch(clock.now()) // self.step * self.step
        self.fault = Fault(
            kind=options.fault,
            service=options.service,
            start=self.start + int(options.inject_after.total_seconds()),
        )
        self.timeline = Timeline(
            fault=options.fault, injected_service=options.service, injected_at=self.fault.start
        )
        self._stack: list[Callable[[], None]] = []
        self.context: ServiceContext | None = None
        self.api_url: str | None = None
        self.tokens: dict[str, str] = {}
        self._spans_until = self.start  #: spans are stored up to here (set at set-up)
        self._approval_wall: float | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def __enter__(self) -> Story:
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._stack:
            stop = self._stack.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping part of the demo failed")

    def _set_up(self) -> None:
        from prognos.composition import build_context
        from sim.openbao import DevVault
        from sim.platform import Platform, PlatformServer
        from sim.source import ShopSource

        options = self.options
        if options.data_dir.exists():
            shutil.rmtree(options.data_dir)  # every demo starts from nothing
        if options.template is not None:
            shutil.copytree(options.template, options.data_dir)
        options.data_dir.mkdir(parents=True, exist_ok=True)
        admin_token = secrets.token_urlsafe(24)
        self.platform = Platform(self.shop, self.clock)
        server = PlatformServer(self.platform, admin_token=admin_token)
        server.start()
        self._stack.append(server.stop)
        self.say(f"platform API of the simulated shop on {server.url} (admin token kept in Vault)")
        vault = DevVault(platform_url=server.url, platform_token=admin_token)
        vault.start()
        self._stack.append(vault.stop)
        self.vault = vault
        self.say(
            f"OpenBao (dev server) on {vault.url}: AppRole for Prognos, the platform token in KV"
        )
        source = ShopSource(self.shop, self.clock)
        # The first cycle reads the whole history, so the detector starts warm (it has seen
        # days of daily cycles) instead of alarming at the first morning rise.
        targets = source.targets({"lookback": options.history})
        prometheus_url = self._start_prometheus(server.url)
        playbooks = options.playbooks_dir or (
            DEMO_PLAYBOOKS_PROMETHEUS if prometheus_url else DEMO_PLAYBOOKS
        )
        settings = Settings(
            data_dir=options.data_dir,
            prometheus={"url": prometheus_url},
            targets=targets,
            models={
                "forecaster": options.forecaster,
                "config": {**Settings().models.config, **options.forecaster_config},
                "history": options.history,
            },
            vault={"url": vault.url, "role_id": vault.role_id, "secret_id": vault.secret_id},
            remediation={"playbooks_dir": playbooks},
            api={"port": options.port},
        )
        context = build_context(settings, clock=self.clock, source=(source, targets))
        self.context = context
        self._stack.append(context.engine.dispose)
        # The first cycle stores the spans of the recent past (RCA's reference) with its own:
        # a data folder saved before any cycle (the bench's trained template) holds none.
        self._spans_until = self.start - int(settings.rca.metric_reference.total_seconds())

    def _start_prometheus(self, platform_url: str) -> str | None:
        """A real Prometheus scraping the platform, when wanted and installed: its URL."""
        from sim.prometheus import DevPrometheus, prometheus_binary

        wanted = self.options.prometheus
        if wanted is False or (wanted is None and prometheus_binary() is None):
            self.say("no Prometheus installed: the fix is verified through the platform API")
            return None
        prometheus = DevPrometheus(scrape=platform_url.removeprefix("http://"))
        prometheus.start()
        self._stack.append(prometheus.stop)
        self.timeline.verified_by = "prometheus"
        self.say(f"Prometheus on {prometheus.url}, scraping the platform every second")
        return prometheus.url

    def train(self) -> None:
        """Fit the LSTM on the simulated history (what `prognos train` does)."""
        assert self.context is not None
        if self.options.forecaster in ("median_band", "naive", "seasonal_naive"):
            return
        # The shop's history is healthy: alone, it teaches the model that every excursion
        # returns to normal. Generated scenarios whose trends run into their limits (the breach
        # bench's training kinds, other seeds than it evaluates) teach it that some do not.
        extra = [s.history() for s in scenarios.suite(range(SCENARIO_SEEDS), step=self.step)]
        outcomes = jobs.retrain(self.context, on_epoch=self.on_epoch, extra=extra)
        for o in outcomes:
            self.say(
                f"trained {o.family} v{o.version} in {o.seconds:.0f}s ({o.epochs} epochs, "
                f"held-out loss {o.candidate_loss:.4f}): {'serving' if o.promoted else 'kept'}"
            )

    def serve(self) -> None:
        """Start the API (and with it the executor) on loopback in a thread; make tokens."""
        import uvicorn

        from api.app import create_app
        from api.auth import Role, create_token

        assert self.context is not None
        context = self.context
        if self.tokens:
            return  # already serving
        with session_scope(context.sessions) as session:
            for name, role in (
                ("demo-approver", Role.APPROVER),
                ("demo-approver-2", Role.APPROVER),
            ):
                _, token = create_token(session, role=role, name=name, now=self.clock.now())
                self.tokens[name] = token
            session.commit()
        if not self.options.serve:
            for start in context.on_start:
                start()
            self._stack.extend(context.on_stop)  # stopped in reverse, like the app's lifespan
            return
        config = uvicorn.Config(
            create_app(context),
            host="127.0.0.1",
            port=self.options.port,
            log_config=None,
            access_log=False,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on 127.0.0.1:{self.options.port}")
            time.sleep(0.05)

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=30)

        self._stack.append(stop)
        self.api_url = f"http://127.0.0.1:{self.options.port}"

    # -- the loop -------------------------------------------------------------------------------

    def _store_spans(self, start: int, end: int) -> None:
        assert self.context is not None
        if end <= start:
            return
        minutes = max(1, (end - start) // 60)
        frame = self.shop.spans(
            start * 10**9, end * 10**9, requests=minutes * SPAN_REQUESTS_PER_MINUTE
        )
        with session_scope(self.context.sessions) as session:
            store_spans(session, frame)
            session.commit()
        self._spans_until = end

    def cycle(self) -> None:
        """One daemon cycle at the clock's now, after the spans of the last step arrived."""
        assert self.context is not None
        now = to_epoch(self.clock.now())
        if now >= self.fault.start and self.fault not in self.shop.faults:
            self.shop.inject(self.fault)
            self.say(
                f"[{_iso(now)}] fault injected: {self.fault.kind} in {self.fault.service} "
                "(the service is not told)"
            )
            self.timeline.crossed_at = self.shop.crossing(
                self.fault.service, self._limit_target(), self.fault.start
            )
        self._store_spans(self._spans_until, now)
        jobs.cycle(self.context)
        self._observe()

    def _limit_target(self) -> str:
        return "latency_p99" if self.fault.kind == "latency" else "memory"

    def _observe(self) -> None:
        """Read what the service concluded and tell the story's next beat once."""
        assert self.context is not None
        t = self.timeline
        now = to_epoch(self.clock.now())
        with session_scope(self.context.sessions) as session:
            if t.predicted_at is None:
                row = session.execute(
                    sa.select(BreachRow.warning_since, BreachRow.eta, BreachRow.probability)
                    .join(SeriesRow, SeriesRow.id == BreachRow.series_id)
                    .where(SeriesRow.service == self.fault.service, BreachRow.warning.is_(True))
                    .order_by(BreachRow.warning_since)
                    .limit(1)
                ).first()
                if row is not None:
                    t.predicted_at, t.predicted_eta, t.predicted_probability = (
                        int(row[0] or now),
                        row[1],
                        float(row[2]),
                    )
                    self.say(
                        f"[{_iso(now)}] breach predicted for {self.fault.service}: "
                        + (
                            f"crossing at {_iso(t.predicted_eta)}"
                            if t.predicted_eta
                            else "crossing within the forecast horizon"
                        )
                        + f" (p={t.predicted_probability:.2f})"
                    )
            if t.approved_at is None and now >= self.fault.start:
                self._follow_incident(session, now)

    def _follow_incident(self, session: Session, now: int) -> None:
        """The open incident that holds the fault's service (the newest since the fault), its
        suspects as they are now, and its open proposal for the top suspect. Incidents without
        it are the service's false alarms: counted at the end, not followed."""
        t = self.timeline
        since = datetime.fromtimestamp(self.fault.start, UTC)
        rows = session.execute(
            sa.select(IncidentRow)
            .where(IncidentRow.status == "open", IncidentRow.last_alarm_at >= since)
            .order_by(IncidentRow.id.desc())
        ).scalars()
        incident = next((r for r in rows if self.fault.service in r.services), None)
        if incident is None or not incident.top_suspect:
            return
        report = incident.report or {}
        suspects = [str(s.get("service")) for s in report.get("suspects", [])]
        if (incident.id, incident.top_suspect) != (t.incident_id, t.top_suspect):
            t.incident_id, t.top_suspect, t.suspects = incident.id, incident.top_suspect, suspects
            t.incident_opened_at = to_epoch(incident.opened_at)
            ranked = self.fault.service in suspects
            t.suspect_rank = suspects.index(self.fault.service) + 1 if ranked else None
            self.say(
                f"[{_iso(now)}] incident {incident.id}: {incident.symptom}; top suspect "
                f"{incident.top_suspect} (suspects: {', '.join(suspects[:4])})"
            )
        proposals = session.execute(
            sa.select(ProposalRow)
            .where(ProposalRow.status == "proposed", ProposalRow.target == incident.top_suspect)
            .order_by(ProposalRow.id)
        ).scalars()
        proposal = next(
            (p for p in proposals if (p.evidence or {}).get("incident_id") == incident.id), None
        )
        if proposal is not None and proposal.id != t.proposal_id:
            t.proposal_id, t.playbook = proposal.id, proposal.playbook
            t.proposed_at = to_epoch(proposal.created_at)
            self.say(
                f"[{_iso(now)}] proposal {proposal.id}: {proposal.playbook} on "
                f"{proposal.target}, waiting for a human's approval"
            )

    def done(self) -> bool:
        t = self.timeline
        if not self.options.fix:  # watching only: until the crossing (if any) is behind us
            now = to_epoch(self.clock.now())
            return self._gave_up() or (t.crossed_at is not None and now > t.crossed_at + 300)
        return t.execution_status is not None or self._gave_up()

    def _gave_up(self) -> bool:
        limit = self.fault.start + int(self.options.give_up_after.total_seconds())
        return to_epoch(self.clock.now()) > limit

    def run(self, *, advance: Callable[[datetime], bool]) -> Timeline:
        """Cycle every step until the fix ran (or the story gave up). `advance(at)` brings the
        clock to `at` (sleeping or stepping) and returns False to stop early."""
        assert self.context is not None
        self.serve()
        wall_start = time.monotonic()
        next_at = self.start
        while not self.done():
            if not advance(datetime.fromtimestamp(next_at, UTC)):
                break
            self.cycle()
            t = self.timeline
            if self.options.fix and t.proposal_id is not None and t.approved_at is None:
                self._approve()
            if self.timeline.approved_at is not None:
                self._follow_execution()
            # The next step boundary after now: a cycle that ran long is not followed by a
            # burst of catch-up cycles (each cycle ingests everything up to its own now).
            next_at = max(
                next_at + self.step, (to_epoch(self.clock.now()) // self.step + 1) * self.step
            )
        if self._gave_up() and self.options.fix:
            self.say("gave up: the story did not finish within the simulated time allowed")
        self._finish()
        self.timeline.wall_seconds = round(time.monotonic() - wall_start, 1)
        return self.timeline

    # -- approval and the fix -------------------------------------------------------------------

    def _approve(self) -> None:
        t = self.timeline
        assert t.proposal_id is not None
        scaled = self.clock if isinstance(self.clock, ScaledClock) else None
        approver = "demo-approver-2"
        if not self.options.approve and self.api_url is not None:
            if scaled is not None:
                scaled.set_rate(1.0)  # the world waits (at real time) for the person
            self.say(
                f"\n  → approve it on {self.api_url}/ui (token below, role approver); "
                f"the simulated clock runs at real time while it waits\n"
                f"    {self.tokens['demo-approver']}\n"
                f"  if nobody has approved within {self.options.pause:.0f} s, the demo approves "
                f"as a second demo user ({approver})\n"
            )
            deadline = time.monotonic() + self.options.pause
            while time.monotonic() < deadline:
                if self._approved_by() is not None:
                    break
                time.sleep(0.2)
        by = self._approved_by()
        if by is None:
            self._approve_over_http(approver) if self.api_url else self._approve_directly(approver)
            by = approver
            if not self.options.approve:
                self.say(f"nobody approved within the pause: approved as {approver}")
        self._approval_wall = time.monotonic()
        if scaled is not None:
            scaled.set_rate(1.0)  # until the first step has started: wall-clock measurement
        t.approved_at, t.approved_by = to_epoch(self.clock.now()), by
        self.say(f"[{_iso(t.approved_at)}] approved by {by}; the executor starts")

    def _approved_by(self) -> str | None:
        assert self.context is not None and self.timeline.proposal_id is not None
        with session_scope(self.context.sessions) as session:
            proposal = remediation_service.get_proposal(session, self.timeline.proposal_id)
        return proposal.approvals[0].principal if proposal.approvals else None

    def _approve_over_http(self, name: str) -> None:
        """What a person's browser does: read the proposal's digest, approve with it."""
        url = f"{self.api_url}/v1/remediations/{self.timeline.proposal_id}"
        headers = {"Authorization": f"Bearer {self.tokens[name]}"}
        digest = requests.get(url, headers=headers, timeout=10).json()["digest"]
        response = requests.post(
            f"{url}/approve", json={"digest": digest}, headers=headers, timeout=10
        )
        if response.status_code != 200:
            raise RuntimeError(f"approval refused ({response.status_code}): {response.text}")

    def _approve_directly(self, name: str) -> None:
        """The same service call the API makes (for the bench, which serves no HTTP)."""
        from api.auth import Role

        context = self.context
        assert context is not None and self.timeline.proposal_id is not None
        with session_scope(context.sessions) as session:
            proposal = remediation_service.get_proposal(session, self.timeline.proposal_id)
            remediation_service.approve(
                session,
                proposal_id=proposal.id,
                principal=name,
                role=Role.APPROVER.value,
                digest=proposal.params_digest,
                playbooks=context.loaded_playbooks(),
                now=self.clock.now(),
                wake=context.wake_executor,
            )
            session.commit()

    def _follow_execution(self) -> None:
        """Wait (wall clock, polling) for the first step, then let the clock run again; note
        the end of the run when it comes."""
        context = self.context
        t = self.timeline
        assert context is not None and t.proposal_id is not None
        scaled = self.clock if isinstance(self.clock, ScaledClock) else None
        deadline = time.monotonic() + 60
        while True:
            with session_scope(context.sessions) as session:
                execution = remediation_service.execution_for(session, t.proposal_id)
            started = [s for s in (execution.steps if execution else []) if s.started_at]
            if t.first_step_at is None and started:
                t.first_step_at = to_epoch(started[0].started_at)  # type: ignore[arg-type]
                if self._approval_wall is not None:
                    t.wall_approval_to_first_step = round(time.monotonic() - self._approval_wall, 2)
                self.say(
                    f"[{_iso(t.first_step_at)}] first step {started[0].name} started "
                    f"{t.wall_approval_to_first_step} s (wall clock) after the approval"
                )
                if scaled is not None:
                    scaled.set_rate(self.options.rate)
            if execution is not None and execution.status in FINISHED_EXECUTION_STATES:
                t.execution_status = execution.status.value
                if execution.status.value == "succeeded":
                    t.recovered_at = to_epoch(execution.finished_at or self.clock.now())
                    self.say(
                        f"[{_iso(t.recovered_at)}] recovery verified: {execution.playbook} "
                        f"succeeded on {execution.target}"
                    )
                else:
                    self.say(
                        f"execution {execution.id} ended {t.execution_status}: {execution.error}"
                    )
                self._execution_id = execution.id
                self._accessor = execution.vault_token_accessor
                return
            if t.first_step_at is not None or time.monotonic() > deadline:
                return  # the next cycle looks again
            time.sleep(0.05)

    def _finish(self) -> None:
        context = self.context
        t = self.timeline
        if context is None:
            return
        with session_scope(context.sessions) as session:
            result = audit.verify(session, audit.checkpoint_for(context.settings))
            t.incidents_before_fault = int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(IncidentRow)
                    .where(IncidentRow.opened_at < datetime.fromtimestamp(self.fault.start, UTC))
                )
                or 0
            )
        t.audit_verified = bool(result.ok)
        self.say(f"audit chain verified: {result.summary()}")
        accessor = getattr(self, "_accessor", None)
        if accessor:
            t.vault_lease_revoked = not self._accessor_alive(accessor)
            self.say(
                "Vault: the execution's token and leases are "
                + ("revoked" if t.vault_lease_revoked else "STILL VALID")
            )

    def _accessor_alive(self, accessor: str) -> bool:
        """Whether Vault still knows the execution's token (looked up with the root token of
        the demo's own dev server, which never leaves this process)."""
        import hvac
        import hvac.exceptions

        client = hvac.Client(url=self.vault.url, token=self.vault.root_token.get_secret_value())
        try:
            client.auth.token.lookup_accessor(accessor)
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            return False
        return True


def run_demo(
    options: StoryOptions,
    *,
    say: Callable[[str], None] = print,
    on_epoch: EpochCallback | None = None,
    json_path: Path | None = None,
) -> Timeline:
    """The demo: history, training, the service on a scaled clock, the fault, the story."""
    clock = ScaledClock(demo_start(datetime.now(UTC)), options.rate)
    stop = threading.Event()

    def advance(at: datetime) -> bool:
        return clock.wait_until(at, stop)

    with Story(options, clock, say=say, on_epoch=on_epoch) as story:
        clock.pause()  # the world holds still while the model trains
        story.train()
        story.serve()
        clock.resume()
        say(f"the service is watching the shop; simulated time runs {options.rate:g}x")
        try:
            timeline = story.run(advance=advance)
        except KeyboardInterrupt:
            stop.set()
            timeline = story.timeline
    if json_path is not None:
        json_path.write_text(json.dumps(timeline.to_json(), indent=2) + "\n", encoding="utf-8")
    return timeline


def demo_start(now: datetime) -> datetime:
    """Where simulated time starts: a Monday 09:00 UTC at least a day before `now` (so the
    same seed tells the same story whenever it runs, and the simulation stays in the past)."""
    day = (now - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    if day > now - timedelta(days=1):
        day -= timedelta(days=1)
    return day - timedelta(days=day.weekday())


def stepped_clock(start: datetime) -> tuple[FixedClock, Callable[[datetime], bool]]:
    """A clock the bench steps as fast as the cycle runs."""
    clock = FixedClock(start)

    def advance(at: datetime) -> bool:
        clock.set(max(at, clock.now()))
        return True

    return clock, advance
