"""Configuration as a user meets it: defaults, the YAML file, PROGNOS_* overrides, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import (
    PrometheusAuthSettings,
    PrometheusSettings,
    Settings,
    TargetSettings,
    find_config_file,
    load_settings,
)

TOKEN = "tok-3f9a7c1e5b"
PASSWORD = "pw-8d2b6e0a4c"
DB_PASSWORD = "dbpw-71c5e9a3f0"

FULL = """\
source: prometheus
data_dir: /srv/prognos
prometheus:
  url: https://prom.example.com:9090/
  auth:
    type: bearer
    token: {token}
  timeout: 45s
  retries: 2
targets:
  - name: cpu
    query: sum by (service) (rate(cpu_seconds_total[5m]))
    step: 30s
    lookback: 2h
  - name: memory
    query: container_memory_working_set_bytes
ingest:
  interval: 2m
  max_catchup: 1d
database:
  url: postgresql://prognos:{db_password}@db.example.com/prognos
api:
  port: 8080
"""


def write(tmp_path: Path, text: str, name: str = "prognos.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.message


# ----------------------------------------------------------------------------- defaults


def test_defaults_use_the_replay_source_and_sqlite_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./prognos.yaml here
    settings = load_settings()
    assert settings.effective_source == "replay"
    assert settings.replay.path is None  # the bundled sample data
    assert settings.targets == []
    assert settings.data_dir == Path("var")
    assert settings.database_url == "sqlite:///var/prognos.db"
    assert settings.cache_dir == Path("var/cache")
    assert settings.ingest.interval == timedelta(seconds=60)
    assert settings.ingest.retention == timedelta(days=7)
    assert settings.api.host == "127.0.0.1"
    assert settings.api.metrics_require_token is False


def test_sqlite_follows_a_configured_data_dir(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, f"data_dir: {tmp_path / 'state'}\n"))
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state' / 'prognos.db').as_posix()}"
    assert settings.cache_dir == tmp_path / "state" / "cache"


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "# nothing yet\n"))
    assert settings.effective_source == "replay"


# ----------------------------------------------------------------------------- the YAML file


def test_a_full_file_is_loaded_with_durations_and_nested_sections(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.format(token=TOKEN, db_password=DB_PASSWORD))
    settings = load_settings(path)
    assert settings.effective_source == "prometheus"
    assert settings.data_dir == Path("/srv/prognos")
    assert settings.prometheus.url == "https://prom.example.com:9090"  # trailing slash dropped
    assert settings.prometheus.auth.type == "bearer"
    assert settings.prometheus.auth.token is not None
    assert settings.prometheus.auth.token.get_secret_value() == TOKEN
    assert settings.prometheus.timeout == timedelta(seconds=45)
    assert [t.name for t in settings.targets] == ["cpu", "memory"]
    cpu, memory = settings.targets
    assert cpu.step_seconds == 30
    assert cpu.lookback == timedelta(hours=2)
    assert memory.step_seconds == 60  # the default step
    assert memory.lookback == timedelta(hours=6)
    assert settings.ingest.interval == timedelta(minutes=2)
    assert settings.ingest.max_catchup == timedelta(days=1)
    assert settings.database_url == f"postgresql://prognos:{DB_PASSWORD}@db.example.com/prognos"
    assert settings.api.port == 8080


def test_prometheus_url_alone_switches_auto_to_prometheus(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prometheus:\n  url: http://127.0.0.1:9090\ntargets:\n  - {name: up, query: up}\n",
    )
    assert load_settings(path).effective_source == "prometheus"


# ----------------------------------------------------------------------------- environment


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "ingest:\n  interval: 2m\n  lag: 10s\napi:\n  port: 8080\n")
    monkeypatch.setenv("PROGNOS_INGEST__INTERVAL", "5m")
    monkeypatch.setenv("PROGNOS_API__METRICS_REQUIRE_TOKEN", "true")
    monkeypatch.setenv("PROGNOS_DATA_DIR", str(tmp_path / "elsewhere"))
    settings = load_settings(path)
    assert settings.ingest.interval == timedelta(minutes=5)
    assert settings.ingest.lag == timedelta(seconds=10)  # the file's sibling key survives
    assert settings.api.port == 8080
    assert settings.api.metrics_require_token is True
    assert settings.data_dir == tmp_path / "elsewhere"


def test_nested_database_url_from_the_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "database:\n  url: sqlite:///from-file.db\n  echo: true\n")
    monkeypatch.setenv("PROGNOS_DATABASE__URL", "postgresql://u@db.internal/prognos")
    settings = load_settings(path)
    assert settings.database_url == "postgresql://u@db.internal/prognos"
    assert settings.database.echo is True  # merged, not replaced


def test_an_invalid_environment_value_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_INGEST__INTERVAL", "soon")
    message = config_error(write(tmp_path, "api:\n  port: 8080\n"))
    assert "environment PROGNOS_INGEST__INTERVAL" in message
    assert "ingest.interval" in message


def test_a_malformed_structured_environment_value_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_TARGETS", "[{name: cpu")
    with pytest.raises(ConfigError, match="PROGNOS_TARGETS"):
        load_settings(write(tmp_path, ""))


# ----------------------------------------------------------------------------- discovery


def test_prognos_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "api:\n  port: 1111\n")  # ./prognos.yaml loses to $PROGNOS_CONFIG
    chosen = write(tmp_path, "api:\n  port: 2222\n", name="chosen.yaml")
    monkeypatch.setenv("PROGNOS_CONFIG", str(chosen))
    assert find_config_file(None) == chosen
    assert load_settings().api.port == 2222


def test_explicit_config_wins_over_prognos_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_CONFIG", str(write(tmp_path, "api:\n  port: 2222\n", "env.yaml")))
    explicit = write(tmp_path, "api:\n  port: 3333\n", "explicit.yaml")
    assert load_settings(explicit).api.port == 3333


def test_prognos_yaml_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "api:\n  port: 4444\n")
    assert load_settings().api.port == 4444


def test_prognos_config_naming_a_missing_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROGNOS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"PROGNOS_CONFIG=.*nope\.yaml"):
        load_settings()


def test_a_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------- errors


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest:\n  interval: 60s\n lag: 30s\napi:\n  port: 1\n")
    message = config_error(path)
    assert f"{path}:3" in message
    assert "not valid YAML" in message


def test_a_top_level_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert f"{path}:1" in config_error(path)


def test_an_unknown_key_names_its_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 8080\nprometheus:\n  timout: 10s\n")
    message = config_error(path)
    assert f"{path}:4: prometheus.timout: unknown key" in message


def test_an_unknown_section_names_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 8080\ningestt:\n  interval: 60s\n")
    assert f"{path}:3: ingestt: unknown key" in config_error(path)


def test_a_bad_duration_in_a_target_names_the_index_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n"
        "  - name: cpu\n"
        "    query: up\n"
        "  - name: memory\n"
        "    query: mem\n"
        "    step: 5 minutes\n",
    )
    message = config_error(path)
    assert f"{path}:6: targets[1].step:" in message
    assert "5 minutes" in message


def test_a_wrongly_typed_step_names_the_index_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n  - {name: cpu, query: up}\n"
        "  - name: memory\n    query: mem\n    step: [1, 2]\n",
    )
    assert f"{path}:5: targets[1].step:" in config_error(path)


@pytest.mark.parametrize("step", ["500ms", "0s", "1500ms"])
def test_a_step_must_be_whole_seconds(tmp_path: Path, step: str) -> None:
    path = write(tmp_path, f"targets:\n  - name: cpu\n    query: up\n    step: {step}\n")
    assert "targets[0].step: step must be a whole number of seconds" in config_error(path)


@pytest.mark.parametrize("value", ["99999999999999999", "99999999999999d", ".inf"])
def test_an_overflowing_duration_is_a_config_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"ingest:\n  interval: {value}\n")
    assert f"{path}:2: ingest.interval" in config_error(path)


def test_duplicate_target_names_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n  - {name: cpu, query: up}\n  - {name: mem, query: m}\n"
        "  - {name: cpu, query: other}\n",
    )
    message = config_error(path)
    assert "unique" in message
    assert "repeated: cpu" in message


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        (
            "prometheus:\n  url: http://a:9090\napi:\n  port: 1\nprometheus:\n  timeout: 5s\n",
            5,
            "prometheus",
            1,
        ),
        (
            "prometheus:\n  url: http://a:9090\n  timeout: 5s\n  url: http://b:9090\n",
            4,
            "prometheus.url",
            2,
        ),
        (
            "targets:\n  - name: cpu\n    query: up\n  - name: mem\n    query: m\n    name: disk\n",
            6,
            "targets[1].name",
            4,
        ),
        ("api: {port: 1, port: 2}\n", 1, "api.port", 1),
    ],
)
def test_a_duplicate_key_names_its_path_and_both_lines(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    # YAML itself would keep the last one silently: the first value would be lost unseen.
    path = write(tmp_path, text)
    message = config_error(path)
    assert f"{path}:{line}: {key}: duplicate key (first at line {first})" in message


def test_a_merge_key_may_be_overridden_without_being_a_duplicate(tmp_path: Path) -> None:
    text = (
        "targets:\n  - &base {name: cpu, query: up, step: 30s}\n"
        "  - <<: *base\n    name: mem\n    query: m\n"
    )
    settings = load_settings(write(tmp_path, text))
    assert [(t.name, t.query, t.step_seconds) for t in settings.targets] == [
        ("cpu", "up", 30),
        ("mem", "m", 30),
    ]


@pytest.mark.parametrize("name", ["1cpu", "cpu-usage", "cpu usage", ""])
def test_target_names_must_be_identifiers(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"targets:\n  - name: '{name}'\n    query: up\n")
    assert "targets[0].name" in config_error(path)


def test_credentials_in_the_prometheus_url_are_refused_without_echoing_them(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        f"prometheus:\n  url: https://admin:{PASSWORD}@prom.example.com\n"
        "targets:\n  - {name: up, query: up}\n",
    )
    message = config_error(path)
    assert f"{path}:2: prometheus.url:" in message
    assert "prometheus.auth" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("url", ["prom.example.com:9090", "ftp://prom", "http://"])
def test_prometheus_url_must_be_http(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f"prometheus:\n  url: '{url}'\ntargets:\n  - {{name: up, query: up}}\n")
    assert "prometheus.url: must be an http:// or https:// URL" in config_error(path)


def test_prometheus_without_targets_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "prometheus:\n  url: http://127.0.0.1:9090\n")
    message = config_error(path)
    assert "no targets" in message
    assert "targets:" in message


def test_source_prometheus_without_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "source: prometheus\ntargets:\n  - {name: up, query: up}\n")
    assert "prometheus.url is not set" in config_error(path)


def test_bearer_auth_without_a_token_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prometheus:\n  url: http://p:9090\n  auth:\n    type: bearer\n"
        "targets:\n  - {name: up, query: up}\n",
    )
    assert "prometheus.auth: bearer auth needs `token` or `token_file`" in config_error(path)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 99999\nlogging:\n  level: LOUD\n")
    message = config_error(path)
    assert "2 problems" in message
    assert f"{path}:2: api.port" in message
    assert f"{path}:4: logging.level" in message


# ----------------------------------------------------------------------------- secrets


def secret_settings(tmp_path: Path) -> Settings:
    return load_settings(
        write(
            tmp_path,
            FULL.format(token=TOKEN, db_password=DB_PASSWORD).replace(
                f"type: bearer\n    token: {TOKEN}",
                f"type: basic\n    username: scraper\n    password: {PASSWORD}",
            )
            + f"# the old token was {TOKEN}\n",
        )
    )


def test_secrets_never_appear_in_str_or_repr(tmp_path: Path) -> None:
    settings = secret_settings(tmp_path)
    assert settings.prometheus.auth.password is not None  # loaded, just hidden
    for text in (str(settings), repr(settings), str(settings.database), repr(settings.prometheus)):
        assert PASSWORD not in text
        assert DB_PASSWORD not in text
    bearer = PrometheusAuthSettings(type="bearer", token=TOKEN)
    assert TOKEN not in repr(PrometheusSettings(url="http://p", auth=bearer))


def test_secrets_never_appear_in_config_errors(tmp_path: Path) -> None:
    text = FULL.format(token=TOKEN, db_password=DB_PASSWORD) + "logging:\n  level: LOUD\n"
    text = text.replace("    token: ", "    token_fil: ")  # a typo right next to the secret
    message = config_error(write(tmp_path, text))
    assert "prometheus.auth.token_fil: unknown key" in message
    assert TOKEN not in message
    assert DB_PASSWORD not in message


def test_a_wrongly_typed_secret_is_not_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"database:\n  url: [postgresql://u:{DB_PASSWORD}@h/db]\n",
    )
    message = config_error(path)
    assert f"{path}:2: database.url" in message
    assert DB_PASSWORD not in message


def test_target_defaults() -> None:
    target = TargetSettings(name="cpu", query="up")
    assert target.step_seconds == 60
    assert target.service_label == "service"
