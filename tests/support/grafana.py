"""The Grafana dashboards in deploy/grafana as a test reads them: every PromQL expression (panel
targets and annotations) with where it comes from, the variables it uses, and the expression
with those variables substituted the way Grafana does for a Prometheus datasource."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"

#: What Grafana puts for its built-in interval variables, as a query over the last hours at
#: a one-minute step would get them (a 30 s scrape interval: $__rate_interval is 4 scrapes).
BUILTINS = {
    "__interval": "1m",
    "__rate_interval": "2m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}

#: $name, ${name}, ${name:format} and the old [[name]]
_REFERENCE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.DOTALL)


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def provisioned_datasource() -> dict[str, Any]:
    """The one datasource the provisioning file defines."""
    config = yaml.safe_load((PROVISIONING / "datasources" / "prognos.yaml").read_text())
    (datasource,) = config["datasources"]
    result: dict[str, Any] = datasource
    return result


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(board: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board.get("templating", {}).get("list", [])}


def references(text: str) -> set[str]:
    """The variable names `text` refers to."""
    return {next(g for g in m.groups() if g) for m in _REFERENCE.finditer(text)}


def substitute(text: str, value: Callable[[str], str]) -> str:
    """`text` with each variable reference replaced by `value(name)`."""
    return _REFERENCE.sub(lambda m: value(next(g for g in m.groups() if g)), text)


def label_values(definition: str) -> tuple[str, str]:
    """`label_values(selector, label)` → (selector, label)."""
    found = _LABEL_VALUES.match(definition)
    if found is None:
        raise ValueError(f"not a label_values() query: {definition!r}")
    return found.group(1).strip(), found.group(2)


def current(variable: Mapping[str, Any]) -> str | list[str]:
    value: str | list[str] = variable.get("current", {}).get("value", "")
    return value


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: a panel target or an annotation."""

    dashboard: str
    where: str  #: "panel 'Title' (A)" or "annotation 'Name'"
    expr: str
    repeat: str | None  #: the variable the panel repeats over (one value per copy)
    datasource: Mapping[str, Any] | None

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def queries(board: Mapping[str, Any]) -> list[Query]:
    title = board["title"]
    out = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            out.append(
                Query(
                    title,
                    f"panel {panel['title']!r} ({target.get('refId', '?')})",
                    target["expr"],
                    panel.get("repeat"),
                    target.get("datasource", panel.get("datasource")),
                )
            )
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("builtIn"):
            continue
        out.append(
            Query(
                title,
                f"annotation {annotation['name']!r}",
                annotation["expr"],
                None,
                annotation.get("datasource"),
            )
        )
    return out


def resolve(board: Mapping[str, Any], query: Query, values: Mapping[str, list[str]]) -> str:
    """The query's expression as Grafana sends it: `values` are the values each variable has
    (a query variable's, from the server; else its own options); a multi-value variable
    selected as All becomes its allValue, several values `(a|b)`; in a panel repeated over a
    variable, that variable is one value (the first)."""
    defined = variables(board)

    def value(name: str) -> str:
        if name in BUILTINS:
            return BUILTINS[name]
        variable = defined[name]
        chosen = current(variable)
        options = values.get(name, [])
        if name == query.repeat:
            return options[0] if options else str(chosen)
        if variable.get("multi") or variable.get("includeAll"):
            chosen = chosen if isinstance(chosen, list) else [chosen]
            if "$__all" in chosen:
                if variable.get("allValue"):
                    return str(variable["allValue"])
                chosen = options
            return "(" + "|".join(_regex_escape(v) for v in chosen) + ")"
        if isinstance(chosen, list):
            chosen = chosen[0]
        if variable["type"] == "query" and options and chosen not in options:
            return options[0]  # Grafana falls back to the first value the query found
        return str(chosen)

    return substitute(query.expr, value)


def _regex_escape(value: str) -> str:
    """A regex metacharacter escaped inside a PromQL string, as Grafana does (`.` → `\\\\.`)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)
