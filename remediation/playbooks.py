"""Playbooks as data: YAML validated against typed models, with errors pointing at file:line.

Parameters reach steps only through `{{ params.NAME }}` and `{{ target }}` placeholders inside
string fields (argv elements, url, headers, body, queries, env values, action args); a command is
always an argv list and never runs through a shell, so a parameter can never become shell syntax.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.errors import ErrorKind, PrognosError
from core.settings import Duration, _child, _dotted

EventKind = Literal["alarm", "breach", "incident"]
ParamType = Literal["string", "int", "float", "bool"]
_ALL_KINDS: tuple[EventKind, ...] = ("alarm", "breach", "incident")
STEP_KINDS = ("http", "command", "python", "wait_until")
APPROVER_ROLES = ("approver", "admin")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_REFERENCE = re.compile(r"^\s*(?:params\.([A-Za-z_][A-Za-z0-9_]*)|(target))\s*$")


class PlaybookError(PrognosError):
    """A playbook file is unusable; `problems` holds one `FILE:LINE: field: message` per issue."""

    code = "playbook_invalid"
    kind = ErrorKind.INVALID

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, detail={"problems": problems or []})
        self.problems = problems or [message]


class InvalidParamsError(PrognosError):
    """Proposal parameters do not fit the playbook's typed parameters."""

    code = "params_invalid"
    kind = ErrorKind.INVALID


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Model):
    """Which events propose this playbook: service globs, event kinds, the targets (metric
    names) behind the event, RCA suspects only."""

    services: list[str] = Field(default_factory=lambda: ["*"])
    kinds: list[EventKind] = Field(default_factory=lambda: list(_ALL_KINDS))
    targets: list[str] = Field(
        default_factory=lambda: ["*"],
        description="globs over the targets of the series behind the event (e.g. errors, "
        "cpu); an event whose targets are unknown matches only the default ['*']",
    )
    suspects: bool = Field(
        default=False, description="only when the service is a ranked RCA suspect"
    )


class Parameter(_Model):
    type: ParamType = "string"
    default: str | int | float | bool | None = None
    description: str = ""
    pattern: str | None = Field(default=None, description="regex a string value must match")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _default_fits(self) -> Parameter:
        if self.default is not None:
            try:
                coerce_value(self, self.default)
            except ValueError as exc:
                raise ValueError(f"default: {exc}") from None
        if self.pattern is not None and self.type != "string":
            raise ValueError("pattern applies to string parameters only")
        return self

    @property
    def required(self) -> bool:
        return self.default is None


class _StepBase(_Model):
    name: str = Field(min_length=1, max_length=128)
    timeout: Duration = timedelta(seconds=60)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("timeout must be positive")
        return value


class HttpStep(_StepBase):
    kind: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204], min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(https?://|\{\{)", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


_ARGV_HINT = (
    "a command must be an argv list, not a string: commands never run through a shell, so "
    "write each argument as its own item, e.g. argv: [kubectl, rollout, restart, "
    '"deployment/{{ params.deployment }}"]'
)


class CommandStep(_StepBase):
    kind: Literal["command"] = "command"
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_shell_string(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("command", "cmd", "shell", "script"):
                if key in data:
                    raise ValueError(f"`{key}` is not a field; {_ARGV_HINT}")
        return data

    @field_validator("argv", mode="before")
    @classmethod
    def _argv_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(_ARGV_HINT)
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _IDENT.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return value


class PythonStep(_StepBase):
    kind: Literal["python"] = "python"
    action: str = Field(min_length=1, description="a name in the executor's action registry")
    args: dict[str, Any] = Field(default_factory=dict)


class WaitStep(_StepBase):
    kind: Literal["wait_until"] = "wait_until"
    query: str = Field(min_length=1, description="PromQL that must return a non-empty result")
    interval: Duration = timedelta(seconds=10)


Step = Annotated[HttpStep | CommandStep | PythonStep | WaitStep, Field(discriminator="kind")]


class Verify(_Model):
    """After the steps: a PromQL condition that must hold (non-empty / true) within `timeout`."""

    query: str = Field(min_length=1)
    timeout: Duration = timedelta(minutes=5)
    interval: Duration = timedelta(seconds=15)


class SecretSpec(_Model):
    engine: Literal["database", "kv", "ssh_otp"]
    path: str = Field(min_length=1, description="e.g. database/creds/readonly")
    env: dict[str, str] = Field(
        default_factory=dict, description="ENV_VAR -> field of the secret's data"
    )
    params: dict[str, str] = Field(default_factory=dict, description="e.g. ip for ssh_otp")

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _IDENT.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return value


class VaultSpec(_Model):
    policies: list[str] = Field(min_length=1)
    secrets: list[SecretSpec] = Field(default_factory=list)


class Guards(_Model):
    cooldown: Duration = timedelta(minutes=10)
    breaker_max_runs: int = Field(default=3, ge=1)
    breaker_window: Duration = timedelta(hours=1)


class ApprovalPolicy(_Model):
    quorum: int = Field(default=1, ge=1, le=10)
    roles: list[str] = Field(default_factory=lambda: list(APPROVER_ROLES), min_length=1)
    expires_after: Duration = timedelta(hours=1)

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        wrong = [r for r in value if r not in APPROVER_ROLES]
        if wrong:
            raise ValueError(
                f"only {' and '.join(APPROVER_ROLES)} may approve; not {', '.join(wrong)}"
            )
        return value

    @field_validator("expires_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("expires_after must be positive")
        return value


class Playbook(_Model):
    name: str
    version: int = Field(ge=1)
    description: str = ""
    match: Match = Match()
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    verify: Verify | None = None
    rollback: list[Step] = Field(default_factory=list)
    vault: VaultSpec | None = None
    risk: Literal["low", "medium", "high"] = "medium"
    guards: Guards = Guards()
    approval: ApprovalPolicy = ApprovalPolicy()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use lower-case letters, digits, '-' and '_' (e.g. restart-deployment)"
            )
        return value

    @field_validator("parameters")
    @classmethod
    def _param_names(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        for name in value:
            if not _IDENT.match(name):
                raise ValueError(f"parameter name {name!r}: use letters, digits and underscores")
        return value

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Playbook:
        context = info.context if isinstance(info.context, dict) else {}
        problems = _semantic_problems(self, context.get("actions"))
        collect = context.get("problems")
        if problems and isinstance(collect, list):
            collect.extend(problems)  # the loader reports them with their lines
        elif problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        return self

    def total_timeout(self) -> timedelta:
        """The longest a run can take: every step, verification and every rollback step."""
        total = sum((s.timeout for s in self.steps), timedelta())
        total += sum((s.timeout for s in self.rollback), timedelta())
        if self.verify is not None:
            total += self.verify.timeout
        return total


Loc = tuple[int | str, ...]


def _semantic_problems(
    playbook: Playbook, actions: Collection[str] | None = None
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for phase in ("steps", "rollback"):
        steps: list[Any] = getattr(playbook, phase)
        seen: set[str] = set()
        for index, step in enumerate(steps):
            if step.name in seen:
                problems.append(((phase, index, "name"), f"step name {step.name!r} is repeated"))
            seen.add(step.name)
            if actions is not None and isinstance(step, PythonStep) and step.action not in actions:
                known = ", ".join(sorted(actions)) or "none registered"
                problems.append(
                    ((phase, index, "action"), f"unknown action {step.action!r} (known: {known})")
                )
            for loc, text in _string_fields(step):
                for message in _placeholder_problems(text, playbook.parameters):
                    problems.append(((phase, index, *loc), message))
    if playbook.verify is not None:
        for message in _placeholder_problems(playbook.verify.query, playbook.parameters):
            problems.append((("verify", "query"), message))
    return problems


def _placeholder_problems(text: str, parameters: Mapping[str, Parameter]) -> list[str]:
    out = []
    for match in _PLACEHOLDER.finditer(text):
        ref = _REFERENCE.match(match.group(1))
        if ref is None:
            out.append(
                f"placeholder {match.group(0)!r}: only {{{{ params.NAME }}}} and "
                "{{ target }} are allowed"
            )
        elif ref.group(1) and ref.group(1) not in parameters:
            out.append(f"placeholder {match.group(0)!r}: no parameter {ref.group(1)!r} declared")
    return out


def _string_fields(step: Any) -> list[tuple[Loc, str]]:
    """The fields placeholders may appear in, with their location inside the step."""
    fields: list[tuple[Loc, str]] = []
    if isinstance(step, HttpStep):
        fields.append((("url",), step.url))
        fields += [(("headers", k), v) for k, v in step.headers.items()]
        if step.body is not None:
            fields.append((("body",), step.body))
    elif isinstance(step, CommandStep):
        fields += [(("argv", i), a) for i, a in enumerate(step.argv)]
        fields += [(("env", k), v) for k, v in step.env.items()]
    elif isinstance(step, PythonStep):
        fields += [(("args", k), v) for k, v in step.args.items() if isinstance(v, str)]
    elif isinstance(step, WaitStep):
        fields.append((("query",), step.query))
    return fields


# -- parameters ------------------------------------------------------------------------------


def coerce_value(parameter: Parameter, value: Any) -> str | int | float | bool:
    """One value converted to the parameter's type; ValueError says why it does not fit."""
    kind = parameter.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("expected true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
            return int(value)
        raise ValueError("expected an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError("expected a number") from None
        else:
            raise ValueError("expected a number")
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        return number
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if any(ch in value for ch in "\x00\r\n"):
        raise ValueError("must not contain NUL or line breaks")
    if len(value) > 1024:
        raise ValueError("longer than 1024 characters")
    if parameter.pattern is not None and not re.fullmatch(parameter.pattern, value):
        raise ValueError(f"does not match the pattern {parameter.pattern!r}")
    return value


def validate_params(playbook: Playbook, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The proposal's parameters, typed, with defaults applied; unknown or missing ones refused."""
    given = dict(params or {})
    problems = [
        f"{name}: unknown parameter" for name in sorted(given) if name not in playbook.parameters
    ]
    out: dict[str, Any] = {}
    for name, parameter in playbook.parameters.items():
        if name not in given or given[name] is None:
            if parameter.required:
                problems.append(f"{name}: required")
                continue
            value: Any = parameter.default
        else:
            value = given[name]
        try:
            out[name] = coerce_value(parameter, value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise InvalidParamsError(
            f"parameters do not fit playbook {playbook.name!r}: " + "; ".join(problems),
            detail={"problems": problems},
        )
    return out


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def params_digest(
    playbook: str,
    version: int,
    params: Mapping[str, Any],
    target: str,
    *,
    dry_run: bool = False,
) -> str:
    """sha256 binding playbook name + version + validated parameters + target (+ dry run).

    An approval carries this digest, so changing any of them needs a new approval.
    """
    payload: dict[str, Any] = {
        "playbook": playbook,
        "version": version,
        "params": dict(params),
        "target": target,
    }
    if dry_run:
        payload["dry_run"] = True
    return hashlib.sha256(canonical_json(payload)).hexdigest()


# -- rendering -------------------------------------------------------------------------------


def render_text(text: str, params: Mapping[str, Any], target: str) -> str:
    def replace(match: re.Match[str]) -> str:
        ref = _REFERENCE.match(match.group(1))
        if ref is None:
            raise PlaybookError(f"unsupported placeholder {match.group(0)!r}")
        if ref.group(2):
            return target
        value = params[ref.group(1)]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _PLACEHOLDER.sub(replace, text)


def _render_step(step: Any, params: Mapping[str, Any], target: str) -> Any:
    def r(text: str) -> str:
        return render_text(text, params, target)

    if isinstance(step, HttpStep):
        return step.model_copy(
            update={
                "url": r(step.url),
                "headers": {k: r(v) for k, v in step.headers.items()},
                "body": None if step.body is None else r(step.body),
            }
        )
    if isinstance(step, CommandStep):
        return step.model_copy(
            update={
                "argv": [r(a) for a in step.argv],
                "env": {k: r(v) for k, v in step.env.items()},
            }
        )
    if isinstance(step, PythonStep):
        args = {k: r(v) if isinstance(v, str) else v for k, v in step.args.items()}
        return step.model_copy(update={"args": args})
    return step.model_copy(update={"query": r(step.query)})


def render_steps(
    playbook: Playbook,
    params: Mapping[str, Any],
    target: str,
    *,
    phase: Literal["main", "rollback"] = "main",
) -> list[Step]:
    """The steps with `{{ params.X }}` / `{{ target }}` substituted (argv stays a list)."""
    typed = validate_params(playbook, params)
    steps = playbook.steps if phase == "main" else playbook.rollback
    return [_render_step(step, typed, target) for step in steps]


def render_verify(playbook: Playbook, params: Mapping[str, Any], target: str) -> Verify | None:
    if playbook.verify is None:
        return None
    typed = validate_params(playbook, params)
    return playbook.verify.model_copy(
        update={"query": render_text(playbook.verify.query, typed, target)}
    )


# -- matching --------------------------------------------------------------------------------


def matches(
    playbook: Playbook,
    *,
    kind: str,
    service: str | None,
    suspect: bool,
    targets: Collection[str] | None = None,
) -> bool:
    rule = playbook.match
    if kind not in rule.kinds:
        return False
    if rule.suspects and not suspect:
        return False
    wanted = rule.targets != ["*"]
    if wanted and not any(fnmatchcase(t, p) for t in targets or () for p in rule.targets):
        return False
    name = service or ""
    return any(fnmatchcase(name, pattern) for pattern in rule.services)


def match_playbooks(
    playbooks: Iterable[Playbook],
    kind: str,
    service: str | None,
    suspect: bool = False,
    targets: Collection[str] | None = None,
) -> list[Playbook]:
    """The playbooks whose `match` accepts this event, lowest risk first, then by name."""
    risk_order = {"low": 0, "medium": 1, "high": 2}
    found = [
        p
        for p in playbooks
        if matches(p, kind=kind, service=service, suspect=suspect, targets=targets)
    ]
    return sorted(found, key=lambda p: (risk_order[p.risk], p.name))


# -- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    path: Path
    playbook: Playbook | None
    problems: list[str]


def _line_of(root: yaml.Node | None, loc: Loc, *, key: bool) -> int | None:
    node = root
    line = None
    for depth, part in enumerate(loc):
        child = _child(node, part, key=key and depth == len(loc) - 1)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _clean_loc(loc: Loc) -> Loc:
    """Drop the discriminator tag pydantic inserts after a step's index."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and part in STEP_KINDS and out and isinstance(out[-1], int):
            continue
        out.append(part)
    return tuple(out)


def check_text(
    text: str, source: str | Path, *, actions: Collection[str] | None = None
) -> LoadResult:
    """Parse and validate one playbook document; problems read `FILE:LINE: field: message`."""
    path = Path(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return LoadResult(path, None, [f"{path}:{line}: not valid YAML: {problem}"])
    if not isinstance(data, dict):
        return LoadResult(path, None, [f"{path}:1: a playbook must be a mapping of fields"])
    collected: list[tuple[Loc, str]] = []
    problems: list[str] = []
    playbook: Playbook | None = None
    try:
        playbook = Playbook.model_validate(
            data, context={"problems": collected, "actions": actions}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _clean_loc(tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            unknown = error["type"] == "extra_forbidden"
            if unknown:
                message = "unknown key (check its spelling and nesting)"
            line = _line_of(root, loc, key=unknown) or 1
            field = _dotted(loc)
            problems.append(f"{path}:{line}: {field + ': ' if field else ''}{message}")
    for loc, message in collected:
        line = _line_of(root, loc, key=False) or 1
        problems.append(f"{path}:{line}: {_dotted(loc)}: {message}")
    if problems:
        return LoadResult(path, None, problems)
    return LoadResult(path, playbook, [])


def check_file(path: Path, *, actions: Collection[str] | None = None) -> LoadResult:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return LoadResult(path, None, [f"{path}: cannot read: {exc.strerror}"])
    return check_text(text, path, actions=actions)


def load_playbook(path: Path, *, actions: Collection[str] | None = None) -> Playbook:
    """One playbook; `actions` (the executor's registry names) also checks python steps."""
    result = check_file(path, actions=actions)
    if result.playbook is None:
        raise PlaybookError(
            f"invalid playbook {path}:\n  " + "\n  ".join(result.problems), result.problems
        )
    return result.playbook


def playbook_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_playbooks(
    directory: Path, *, actions: Collection[str] | None = None
) -> dict[str, Playbook]:
    """Every playbook in a folder by name; any invalid file or repeated name is an error."""
    if not directory.is_dir():
        return {}
    found: dict[str, Playbook] = {}
    problems: list[str] = []
    origin: dict[str, Path] = {}
    for path in playbook_files(directory):
        result = check_file(path, actions=actions)
        problems += result.problems
        if result.playbook is None:
            continue
        name = result.playbook.name
        if name in found:
            problems.append(f"{path}:1: name: {name!r} is already defined in {origin[name]}")
            continue
        found[name] = result.playbook
        origin[name] = path
    if problems:
        raise PlaybookError(
            f"invalid playbooks in {directory}:\n  " + "\n  ".join(problems), problems
        )
    return found
