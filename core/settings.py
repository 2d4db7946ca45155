"""Configuration: one YAML file plus PROGNOS_* environment overrides, validated up front.

The file is found at --config, else $PROGNOS_CONFIG, else ./prognos.yaml, else built-in defaults.
Environment variables win over the file: PROGNOS_<SECTION>__<KEY>, e.g. PROGNOS_DATABASE__URL.
A bad file is reported as `file:line: key: what is wrong`, never as a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.durations import format_duration, parse_duration
from core.errors import ConfigError

ENV_PREFIX = "PROGNOS_"
CONFIG_ENV = "PROGNOS_CONFIG"
DEFAULT_CONFIG_NAME = "prognos.yaml"

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusAuthSettings(_Section):
    """How Prognos authenticates to Prometheus (or a proxy in front of it)."""

    type: Literal["none", "bearer", "basic"] = "none"
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> PrometheusAuthSettings:
        if self.type == "bearer" and self.token is None and self.token_file is None:
            raise ValueError("bearer auth needs `token` or `token_file`")
        if self.type == "basic" and (self.username is None or self.password is None):
            raise ValueError("basic auth needs `username` and `password`")
        return self


class PrometheusSettings(_Section):
    url: str | None = Field(default=None, description="e.g. http://127.0.0.1:9090")
    auth: PrometheusAuthSettings = PrometheusAuthSettings()
    tls_verify: bool = True
    ca_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    retries: int = Field(default=3, ge=0, le=10)
    backoff: float = Field(default=0.5, ge=0, le=30)
    method: Literal["GET", "POST"] = "GET"
    compression: bool = Field(
        default=False,
        description="ask for gzip; it only pays off on slow links (Prometheus compresses on "
        "one core, which costs more than the transfer on a LAN)",
    )
    max_points_per_chunk: int = Field(default=10_000, ge=2, le=11_000)
    read_api: Literal["query_range", "remote_read", "auto"] = Field(
        default="query_range",
        description="how range reads (backfill, catch-up, cycles) reach Prometheus: remote_read "
        "(/api/v1/read, protobuf + snappy) serves targets whose query is a plain selector, "
        "other queries use query_range; auto also falls back when the server has no remote read",
    )
    lookback_delta: Duration = Field(
        default=timedelta(minutes=5),
        description="the server's --query.lookback-delta: remote-read points are evaluated on "
        "the step grid with it, as query_range does",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:9090")
        if parts.username or parts.password:
            raise ValueError("put credentials under prometheus.auth, not in the URL")
        return value.rstrip("/")


class ReplaySettings(_Section):
    """A folder of CSV/Parquet files played back as if Prometheus served them."""

    path: Path | None = Field(default=None, description="None: the bundled sample data")
    loop: bool = Field(default=True, description="repeat the files' timeline forever")


_TARGET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BreachSettings(_Section):
    """A limit the target's series must stay on one side of, e.g. memory / limit above 0.95 or
    p99 latency above an SLO of 0.5 s: each forecast gives P(crossing within the horizon) and an
    ETA; a warning fires once the probability reaches `probability` in `consecutive` forecasts."""

    threshold: float = Field(description="the limit, in the target's units")
    direction: Literal["above", "below"] = "above"
    # The defaults are models.breach.BreachConfig's, chosen on development scenario seeds.
    probability: float = Field(default=0.5, gt=0.0, lt=1.0)
    consecutive: int = Field(default=4, ge=1)
    hold: Duration = Field(
        default=timedelta(0),
        description="the series must stay beyond the threshold this long for the crossing to "
        "count (an alert rule's `for:`); 0: reaching it once",
    )


def _whole_seconds(value: timedelta) -> timedelta:
    seconds = value.total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise ValueError("step must be a whole number of seconds, at least 1s")
    return value


class TargetSettings(_Section):
    """A named PromQL query; every series it returns is forecast on its own."""

    name: str
    query: str = Field(min_length=1)
    step: Duration = timedelta(seconds=60)
    lookback: Duration = Field(
        default=timedelta(hours=6), description="history pulled on the first cycle"
    )
    service_label: str = "service"
    description: str = ""
    breach: BreachSettings | None = Field(
        default=None, description="warn before the series cross this limit"
    )
    detector: dict[str, Any] = Field(
        default_factory=dict, description="this target's detector settings over models.detector"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TARGET_NAME.match(value):
            raise ValueError("use letters, digits and underscores, starting with a letter")
        return value

    @field_validator("step")
    @classmethod
    def _step(cls, value: timedelta) -> timedelta:
        return _whole_seconds(value)

    @property
    def step_seconds(self) -> int:
        return int(self.step.total_seconds())


class RulesSettings(_Section):
    """Prometheus' own alerting rules as forecast targets: every rule that compares a series with
    a constant (`expr > c`, `c < expr`, ...) is forecast and warned before it fires, with the
    rule's threshold (docs/rules.md). Read from `/api/v1/rules` of `prometheus.url`."""

    enabled: bool = Field(default=False, description="read and forecast the alerting rules")
    refresh: Duration = Field(
        default=timedelta(minutes=5), description="how often the rules are read again"
    )
    step: Duration = Field(
        default=timedelta(seconds=60), description="the step of every rule's derived target"
    )
    lookback: Duration = Field(
        default=timedelta(hours=6), description="history of a rule's series pulled at first"
    )
    include: list[str] = Field(
        default_factory=list,
        description="regexes on `<group>/<alert>`: only matching rules (empty: all)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="regexes on `<group>/<alert>`: rules left out"
    )
    hold_for: bool = Field(
        default=True,
        description="warn only when the series is forecast to stay beyond the threshold for "
        "the rule's `for:` (false: as soon as it is forecast to reach it; more warnings, "
        "earlier, and more of them false)",
    )

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("step")
    @classmethod
    def _step(cls, value: timedelta) -> timedelta:
        return _whole_seconds(value)


class IngestSettings(_Section):
    interval: Duration = timedelta(seconds=60)
    lag: Duration = Field(
        default=timedelta(seconds=30),
        description="stay this far behind now so that the newest scrape has landed",
    )
    max_catchup: Duration = Field(
        default=timedelta(hours=24), description="after an outage, pull at most this much"
    )
    retention: Duration = Field(
        default=timedelta(days=7),
        description="samples kept in the db; a series not seen this long, with no samples left "
        "and nothing naming it (scores, feedback, proposals), is forgotten too",
    )
    run_retention: Duration = Field(
        default=timedelta(days=7),
        description="ingest run records kept (the newest of each target always stays)",
    )


class ModelSettings(_Section):
    """The forecasting model: what it is, how much history it learns from, how often."""

    forecaster: str = Field(default="lstm", description="lstm, naive, seasonal_naive, median_band")
    config: dict[str, Any] = Field(
        default_factory=lambda: {
            "context_length": 120,
            "horizon": 30,
            "hidden_size": 32,
            "max_epochs": 15,
            "windows_per_epoch": 8192,
        },
        description="the forecaster's hyper-parameters (see docs/forecasting.md)",
    )
    cold_start: str = Field(
        default="median_band",
        description="serves series too new for the model, and all series "
        "until a first model is trained",
    )
    history: Duration = Field(default=timedelta(days=7), description="training history")
    retrain_interval: Duration = Field(default=timedelta(days=1))
    holdout: float = Field(
        default=0.1,
        gt=0,
        lt=0.5,
        description="newest share of the history kept out of training to compare models",
    )
    train_workers: int = Field(
        default=1,
        ge=1,
        description="processes that train the LSTM together (data-parallel): on this host, "
        "or with `engine: ray` ranks 1..N-1 as Ray actors on the cluster; 1 trains in the "
        "calling process",
    )
    detector: dict[str, Any] = Field(
        default_factory=dict,
        description="anomaly detector settings over its defaults (window, long_halflife, "
        "long_weight, threshold, novelty_rows; see docs/forecasting.md)",
    )
    alarm_recent: int = Field(
        default=5, ge=1, description="an alarm counts as firing for this many steps after it"
    )
    score_retention: Duration = Field(
        default=timedelta(days=7),
        description="anomaly scores kept (steps with operator feedback always stay); the "
        "detector resumes from its saved state, RCA and the alarm list read recent scores only",
    )
    forecast_history_retention: Duration = Field(
        default=timedelta(days=2),
        description="forecasts made 15 minutes ahead kept for the page's chart (by the step "
        "they forecast); only the chart reads them",
    )
    artifact_store: Literal["auto", "database", "directory"] = Field(
        default="auto",
        description="where new model versions are kept: `database` (every host on the "
        "database loads them: `serve` and `daemon` on different hosts), `directory` "
        "(models.artifact_dir); auto: database on PostgreSQL, directory on SQLite",
    )
    artifact_dir: Path | None = Field(
        default=None,
        description="the `directory` store's folder (default <data_dir>/models); shared "
        "between hosts only if it is a shared mount",
    )


class DatabaseSettings(_Section):
    url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/prognos.db"
    )
    echo: bool = False


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    metrics_require_token: bool = False
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="largest request body any route reads (spans: spans.max_request_bytes)",
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class SpanSettings(_Section):
    """Span intake (`POST /v1/traces`) and the span store."""

    retention: Duration = Field(default=timedelta(days=2), description="spans older are pruned")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="larger OTLP payloads get 413"
    )


class RcaSettings(_Section):
    """Root-cause ranking and how alarms group into incidents."""

    baseline: Duration = Field(default=timedelta(minutes=30), description="window before onset")
    join_within: Duration = Field(
        default=timedelta(minutes=5), description="alarms this close join one open incident"
    )
    clear_after: Duration = Field(
        default=timedelta(minutes=10), description="an incident closes once quiet this long"
    )
    # Defaults chosen by leave-one-fault-type-out on development cases (docs/rca.md).
    guard: Duration = Field(
        default=timedelta(seconds=30), description="the reference ends this long before onset"
    )
    incident: Duration = Field(
        default=timedelta(minutes=3), description="spans after the onset that are diagnosed"
    )
    onset_search: Duration = Field(
        default=timedelta(minutes=1),
        description="the onset is the change in the spans within this of the alarm's start",
    )
    alarm_lead: Duration = Field(
        default=timedelta(minutes=2),
        description="how long before its first alarm an incident's change is looked for",
    )
    metric_reference: Duration = Field(
        default=timedelta(hours=6),
        description="stored metrics of the incident's services this long before its onset "
        "are the reference of their robust z (spans keep rca.baseline)",
    )
    incident_retention: Duration = Field(
        default=timedelta(days=30),
        description="closed incidents kept this long after closing; open ones and those a "
        "proposal names always stay",
    )


class VaultSettings(_Section):
    """Vault / OpenBao: AppRole login for the service; per-execution child tokens."""

    url: str | None = Field(default=None, description="e.g. https://vault.example:8200")
    approle_mount: str = "approle"
    role_id: str | None = None
    secret_id: SecretStr | None = None
    secret_id_wrapped: bool = Field(
        default=False, description="secret_id is a response-wrapping token to unwrap at login"
    )
    namespace: str | None = None
    ca_file: Path | None = None
    verify: bool = True
    timeout: Duration = timedelta(seconds=10)
    check_every: Duration = Field(
        default=timedelta(minutes=1),
        description="the daemon checks Vault's health and its own token's TTL this often "
        "(prognos_vault_up, prognos_vault_token_ttl_seconds)",
    )


class RemediationSettings(_Section):
    """Playbooks, proposals and the executor."""

    playbooks_dir: Path = Field(default=Path("deploy/playbooks"), description="*.yaml playbooks")
    proposal_ttl: Duration = Field(
        default=timedelta(hours=1), description="default expiry of an unapproved proposal"
    )
    executor_lease: Duration = Field(
        default=timedelta(seconds=60), description="claim lease an executor renews while running"
    )
    audit_checkpoint: Path | None = Field(
        default=None,
        description="second sink for the audit chain head (default <data_dir>/audit-head)",
    )
    audit_verify_every: Duration = Field(
        default=timedelta(minutes=15),
        description="the daemon verifies the audit chain against its checkpoint this often "
        "(prognos_audit_chain_ok)",
    )


class AlertmanagerSettings(_Section):
    """Alertmanager both ways: where predicted breaches and open incidents are posted
    (`POST /api/v2/alerts` on every URL: an HA pair receives every alert), and how alerts
    received on `POST /v1/alerts/alertmanager` age."""

    urls: list[str] = Field(
        default_factory=list, description="Alertmanagers to post to, e.g. http://127.0.0.1:9093"
    )
    timeout: Duration = Field(default=timedelta(seconds=5), description="per request")
    resend_every: Duration = Field(
        default=timedelta(minutes=1),
        description="a firing alert is re-posted this often (keep it under Alertmanager's "
        "resolve_timeout); each post says it ends 4 resends (or cycles) later",
    )
    public_url: str | None = Field(
        default=None,
        description="Prognos' address as a browser reaches it, for the alerts' runbook_url and "
        "generatorURL (default http://<api.host>:<api.port>)",
    )
    breach_severity: str = "warning"
    incident_severity: str = "critical"
    received_stale_after: Duration = Field(
        default=timedelta(hours=5),
        description="a received firing alert that Alertmanager has not repeated for this long "
        "(its repeat_interval is 4h by default) stops keeping its incident open",
    )

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_http_url(u) for u in value]

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None


class RemoteWriteSettings(_Section):
    """Where each cycle's forecasts, scores and breach probabilities (the samples /metrics
    shows) are pushed with Prometheus remote-write 1.0; no URL: nothing is pushed."""

    url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:9090/api/v1/write (the full endpoint)"
    )
    auth: PrometheusAuthSettings = PrometheusAuthSettings()
    tls_verify: bool = True
    ca_file: Path | None = None
    timeout: Duration = Field(default=timedelta(seconds=10), description="per request")
    max_samples_per_request: int = Field(default=5_000, ge=1, le=1_000_000)
    max_pending_samples: int = Field(
        default=200_000,
        ge=0,
        description="samples of failed pushes kept in memory and sent again first next cycle "
        "(oldest dropped beyond this)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None


class ExportSettings(_Section):
    remote_write: RemoteWriteSettings = RemoteWriteSettings()


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{value!r} must be an http:// or https:// URL, e.g. http://127.0.0.1:9093"
        )
    if parts.username or parts.password:
        raise ValueError("no credentials in the URL")
    return value.rstrip("/")


class ShardSettings(_Section):
    """How the forecast/score stage splits the series (docs/scale.md)."""

    batch_series: int = Field(
        default=50_000,
        ge=1,
        description="at most this many series per worker transaction: bounds a worker's memory "
        "and a transaction's size (the shards a worker owns are taken in groups up to this)",
    )


class RaySettings(_Section):
    """`engine: ray`: shard workers as Ray actors (needs the `ray` extra and PostgreSQL)."""

    address: str = Field(
        default="local",
        description="the Ray cluster to join: `local` starts one in this process (loopback "
        "only), `auto` or `HOST:PORT` joins a running one",
    )
    workers: int = Field(default=2, ge=1, le=256, description="shard workers (Ray actors)")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="Ray CPUs each actor reserves")
    max_restarts: int = Field(
        default=3, ge=0, description="times Ray restarts a failed worker (its task is retried)"
    )
    spread: bool = Field(
        default=False,
        description="place the workers with Ray's SPREAD strategy, across the cluster's nodes "
        "(false: Ray's default placement, which favours the daemon's own node)",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    source: Literal["auto", "prometheus", "replay"] = "auto"
    data_dir: Path = Path("var")
    prometheus: PrometheusSettings = PrometheusSettings()
    replay: ReplaySettings = ReplaySettings()
    targets: list[TargetSettings] = Field(default_factory=list)
    rules: RulesSettings = RulesSettings()
    ingest: IngestSettings = IngestSettings()
    models: ModelSettings = ModelSettings()
    database: DatabaseSettings = DatabaseSettings()
    engine: Literal["local", "ray"] = Field(
        default="local", description="where the forecast/score stage runs (docs/scale.md)"
    )
    shards: ShardSettings = ShardSettings()
    ray: RaySettings = RaySettings()
    spans: SpanSettings = SpanSettings()
    rca: RcaSettings = RcaSettings()
    vault: VaultSettings = VaultSettings()
    remediation: RemediationSettings = RemediationSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    export: ExportSettings = ExportSettings()
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        if self.source == "prometheus" and self.prometheus.url is None:
            raise ValueError("source is prometheus but prometheus.url is not set")
        if self.engine == "ray" and not self.database_url.startswith("postgresql"):
            raise ValueError("engine: ray needs PostgreSQL (database.url): its workers share it")
        if self.effective_source == "prometheus" and not self.targets and not self.rules.enabled:
            raise ValueError(
                "Prometheus is configured but there are no targets: add at least one under "
                "`targets:` (name + PromQL query), or forecast its alerting rules "
                "(`rules: {enabled: true}`)"
            )
        return self

    @property
    def effective_source(self) -> Literal["prometheus", "replay"]:
        if self.source == "auto":
            return "prometheus" if self.prometheus.url else "replay"
        return self.source

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'prognos.db').as_posix()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def model_dir(self) -> Path:
        return self.models.artifact_dir or self.data_dir / "models"

    @property
    def effective_artifact_store(self) -> Literal["database", "directory"]:
        if self.models.artifact_store == "auto":
            return "database" if self.database_url.startswith("postgresql") else "directory"
        return self.models.artifact_store


def find_config_file(explicit: Path | None) -> Path | None:
    """--config, else $PROGNOS_CONFIG, else ./prognos.yaml if present, else None (defaults)."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={from_env} does not name an existing file")
        return path
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_settings(config: Path | None = None, *, search: bool = True) -> Settings:
    """Read and validate the configuration; raise ConfigError with file, line and key."""
    path = find_config_file(config) if search else config
    data: dict[str, Any] = {}
    root: yaml.Node | None = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{where}: not valid YAML: {problem}") from None
        duplicate = _duplicate_key(root)
        if duplicate is not None:
            key, line, first = duplicate
            raise ConfigError(f"{path}:{line}: {key}: duplicate key (first at line {first})")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}:1: the top level must be a mapping of sections")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, root, data)) from None
    except SettingsError as exc:
        # An environment override that should hold JSON (a list or section) does not parse.
        match = re.search(r'"(\w+)"', str(exc))
        field = match.group(1) if match else "a setting"
        env_name = f"{ENV_PREFIX}{field.upper()}"
        raise ConfigError(
            f"environment {env_name}: not valid JSON for `{field}` (a list or section needs "
            'JSON, e.g. PROGNOS_TARGETS=\'[{"name": "cpu", "query": "up"}]\')'
        ) from None


def _duplicate_key(root: yaml.Node | None) -> tuple[str, int, int] | None:
    """The first key given twice in one mapping: (dotted key, its line, the first one's line).

    YAML keeps the last value silently, so the first would be lost unseen. This looks at the
    composed nodes, not at construction, so a key overriding one brought in by a merge key
    (`<<: *base`) is no duplicate, and an anchored node is looked at once.
    """
    seen: set[int] = set()
    pending: list[tuple[yaml.Node, tuple[int | str, ...]]] = [(root, ())] if root else []
    while pending:
        node, loc = pending.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend((item, (*loc, index)) for index, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        lines: dict[tuple[str, str], int] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            identity = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if identity in lines:
                return _dotted((*loc, key_node.value)), line, lines[identity]
            lines[identity] = line
            pending.append((value, (*loc, key_node.value)))
    return None


def _describe(
    exc: ValidationError, path: Path | None, root: yaml.Node | None, data: Mapping[str, Any]
) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        key = _dotted(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        where = _where(loc, path, root, data, key_line=error["type"] == "extra_forbidden")
        lines.append(f"{where}{key + ': ' if key else ''}{message}")
    header = f"invalid configuration ({len(lines)} problem{'s' if len(lines) != 1 else ''}):"
    return "\n  ".join([header, *lines])


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _where(
    loc: tuple[int | str, ...],
    path: Path | None,
    root: yaml.Node | None,
    data: Mapping[str, Any],
    *,
    key_line: bool = False,
) -> str:
    env_name = ENV_PREFIX + "__".join(str(p).upper() for p in loc if isinstance(p, str))
    if loc and os.environ.get(env_name) is not None:
        return f"environment {env_name}: "
    top = ENV_PREFIX + str(loc[0]).upper() if loc else ""
    if loc and os.environ.get(top) is not None:
        return f"environment {top}: "
    node = root
    line = None
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        node = _child(node, part, key=key_line and last)
        if node is None:
            break
        line = node.start_mark.line + 1
    if path is None:
        return ""
    return f"{path}:{line}: " if line else f"{path}: "


def _child(node: yaml.Node | None, part: int | str, *, key: bool = False) -> yaml.Node | None:
    """The value node under `part` (or its key node, whose line is the key's own line)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if key_node.value == part:
                child_node: yaml.Node = key_node if key else value
                return child_node
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None
