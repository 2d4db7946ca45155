"""Playbook files: the shipped examples load; mistakes are reported at their file and line."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from remediation.playbooks import (
    CommandStep,
    HttpStep,
    InvalidParamsError,
    PlaybookError,
    PythonStep,
    WaitStep,
    check_text,
    load_playbooks,
    match_playbooks,
    params_digest,
    playbook_files,
    render_steps,
    render_verify,
    validate_params,
)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "playbooks"


def problems_of(text: str) -> list[str]:
    return check_text(textwrap.dedent(text).lstrip(), "pb.yaml").problems


def test_every_shipped_playbook_is_valid() -> None:
    files = playbook_files(DEPLOY)
    assert len(files) >= 4
    playbooks = load_playbooks(DEPLOY)
    assert len(playbooks) == len(files)
    assert {"restart-deployment", "scale-up", "rotate-db-credentials", "clear-queue"} <= set(
        playbooks
    )
    kinds = {step.kind for p in playbooks.values() for step in [*p.steps, *p.rollback]}
    assert kinds == {"http", "command", "python", "wait_until"}
    vault = playbooks["rotate-db-credentials"].vault
    assert vault is not None and vault.secrets[0].engine == "database"
    assert vault.secrets[0].env == {"PGUSER": "username", "PGPASSWORD": "password"}


VALID = """
name: restart
version: 1
parameters:
  deployment: {type: string}
steps:
  - kind: command
    name: restart
    argv: [kubectl, rollout, restart, "deployment/{{ params.deployment }}"]
"""


def test_a_minimal_playbook_gets_safe_defaults() -> None:
    result = check_text(VALID, "pb.yaml")
    assert result.problems == []
    assert result.playbook is not None
    assert result.playbook.approval.quorum == 1
    assert result.playbook.approval.roles == ["approver", "admin"]
    assert result.playbook.total_timeout() == timedelta(seconds=60)


def test_a_command_string_is_refused_with_an_explanation() -> None:
    problems = problems_of(
        """
        name: restart
        version: 1
        steps:
          - kind: command
            name: restart
            argv: "kubectl rollout restart deployment/cart"
        """
    )
    assert len(problems) == 1
    assert problems[0].startswith("pb.yaml:6: steps[0].argv: a command must be an argv list")
    assert "never run through a shell" in problems[0]


def test_a_command_key_is_refused_with_the_same_explanation() -> None:
    (problem,) = problems_of(
        """
        name: restart
        version: 1
        steps:
          - kind: command
            name: restart
            command: "kubectl rollout restart deployment/cart && rm -rf /"
        """
    )
    assert "`command` is not a field" in problem and "argv list" in problem


def test_unknown_keys_are_refused_at_their_own_line() -> None:
    problems = problems_of(
        """
        name: restart
        version: 1
        steps:
          - kind: http
            name: call
            url: http://127.0.0.1/x
            retries: 3
        aproval:
          quorum: 2
        """
    )
    assert "pb.yaml:7: steps[0].retries: unknown key (check its spelling and nesting)" in problems
    assert "pb.yaml:8: aproval: unknown key (check its spelling and nesting)" in problems


def test_wrong_values_point_at_the_field_and_line() -> None:
    problems = problems_of(
        """
        name: Restart Now
        version: 0
        parameters:
          replicas: {type: int, default: lots}
        steps:
          - kind: wait_until
            name: ready
            query: up
            timeout: soon
          - kind: shell
            name: x
        approval:
          quorum: 0
          roles: [operator]
        """
    )
    text = "\n".join(problems)
    assert "pb.yaml:1: name: " in text
    assert "pb.yaml:2: version: " in text
    assert "pb.yaml:4: parameters.replicas: " in text and "expected an integer" in text
    assert "pb.yaml:9: steps[0].timeout: " in text and "invalid duration" in text
    assert "pb.yaml:10: steps[1]: " in text and "'shell'" in text
    assert "pb.yaml:13: approval.quorum: " in text
    assert "pb.yaml:14: approval.roles: " in text and "operator" in text


def test_placeholders_must_name_declared_parameters() -> None:
    problems = problems_of(
        """
        name: restart
        version: 1
        steps:
          - kind: command
            name: restart
            argv:
              - kubectl
              - "{{ params.deploymnet }}"
              - "{{ env.HOME }}"
        """
    )
    assert problems == [
        "pb.yaml:8: steps[0].argv[1]: placeholder '{{ params.deploymnet }}': "
        "no parameter 'deploymnet' declared",
        "pb.yaml:9: steps[0].argv[2]: placeholder '{{ env.HOME }}': only "
        "{{ params.NAME }} and {{ target }} are allowed",
    ]


def test_yaml_syntax_errors_have_a_line() -> None:
    (problem,) = problems_of("name: x\nsteps: [\n")
    assert problem.startswith("pb.yaml:") and "not valid YAML" in problem


def test_repeated_names_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text(VALID)
    with pytest.raises(PlaybookError) as info:
        load_playbooks(tmp_path)
    assert any("already defined" in p for p in info.value.problems)


def test_rendering_substitutes_inside_argv_elements_without_splitting() -> None:
    playbooks = load_playbooks(DEPLOY)
    restart = playbooks["restart-deployment"]
    steps = render_steps(restart, {"deployment": "cart"}, "cart")
    first = steps[0]
    assert isinstance(first, CommandStep)
    assert first.argv == ["kubectl", "rollout", "restart", "deployment/cart", "-n", "default"]
    # A value that would be shell syntax is refused by the parameter's pattern.
    with pytest.raises(InvalidParamsError):
        render_steps(restart, {"deployment": "cart; rm -rf /"}, "cart")
    rollback = render_steps(restart, {"deployment": "cart"}, "cart", phase="rollback")
    assert isinstance(rollback[0], CommandStep) and "undo" in rollback[0].argv
    verify = render_verify(restart, {"deployment": "cart"}, "cart")
    assert verify is not None and 'deployment="cart"' in verify.query

    scale = render_steps(playbooks["scale-up"], {"replicas": 3}, "checkout")
    http, wait = scale
    assert isinstance(http, HttpStep) and isinstance(wait, WaitStep)
    assert http.url == "http://127.0.0.1:8081/v1/services/checkout/scale"
    assert http.body == '{"add_replicas": 3}'
    assert wait.query == 'sum(up{service="checkout"}) >= 2'

    queue = render_steps(playbooks["clear-queue"], {"queue": "orders"}, "orders-worker")
    assert isinstance(queue[0], PythonStep)
    assert queue[0].args["queue"] == "orders" and queue[0].args["service"] == "orders-worker"


def test_parameters_are_typed_with_defaults() -> None:
    scale = load_playbooks(DEPLOY)["scale-up"]
    assert validate_params(scale, {}) == {"replicas": 2, "api": "http://127.0.0.1:8081"}
    assert validate_params(scale, {"replicas": "4"})["replicas"] == 4
    with pytest.raises(InvalidParamsError):
        validate_params(scale, {"replicas": True})
    with pytest.raises(InvalidParamsError):
        validate_params(scale, {"api": "http://x\nHost: evil"})


def test_the_digest_covers_playbook_version_params_and_target() -> None:
    base = params_digest("p", 1, {"a": 1, "b": "x"}, "cart")
    assert base == params_digest("p", 1, {"b": "x", "a": 1}, "cart")  # key order is irrelevant
    assert base != params_digest("q", 1, {"a": 1, "b": "x"}, "cart")
    assert base != params_digest("p", 2, {"a": 1, "b": "x"}, "cart")
    assert base != params_digest("p", 1, {"a": 2, "b": "x"}, "cart")
    assert base != params_digest("p", 1, {"a": 1, "b": "x"}, "orders")


def test_matching_by_kind_service_glob_and_suspect() -> None:
    playbooks = load_playbooks(DEPLOY).values()

    def names(kind: str, service: str, suspect: bool) -> set[str]:
        return {p.name for p in match_playbooks(playbooks, kind, service, suspect)}

    assert names("breach", "cart", False) == {"scale-up"}
    assert names("incident", "cart", True) == {"restart-deployment", "rotate-db-credentials"}
    assert names("incident", "orders-worker", False) == {"clear-queue"}
    assert "restart-deployment" not in names("incident", "cart", False)


def test_python_actions_can_be_checked_against_the_registry() -> None:
    text = (DEPLOY / "clear-queue.yaml").read_text()
    assert check_text(text, "q.yaml", actions={"clear_queue"}).problems == []
    (problem,) = check_text(text, "q.yaml", actions={"restart_pod"}).problems
    assert problem.startswith("q.yaml:")
    assert "steps[0].action: unknown action 'clear_queue' (known: restart_pod)" in problem
