"""The Grafana dashboards and provisioning files in deploy/grafana, checked without a Grafana:
they parse, panels have unique ids and do not overlap, every query goes to the provisioned
Prometheus, every variable used is defined, and every expression is PromQL once substituted.
(tests/integration/test_grafana_dashboards.py runs the expressions against a live Prometheus.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.support.grafana import (
    BUILTINS,
    DASHBOARDS,
    PROVISIONING,
    Query,
    dashboard_files,
    label_values,
    load,
    panels,
    provisioned_datasource,
    queries,
    references,
    resolve,
    variables,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "grafana.md"
FILES = dashboard_files()


def _ids(files: list[Path]) -> list[str]:
    return [f.name for f in files]


@pytest.fixture(params=FILES, ids=_ids(FILES))
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_the_dashboards_are_there() -> None:
    titles = {load(f)["title"] for f in FILES}
    assert titles == {
        "Prognos / Forecasts",
        "Prognos / Incidents & remediation",
        "Prognos / Health",
    }
    uids = [load(f)["uid"] for f in FILES]
    assert len(set(uids)) == len(uids), uids


def test_current_schema_and_unique_panel_ids(board: dict[str, Any]) -> None:
    assert board["schemaVersion"] >= 39
    assert board["uid"] and len(board["uid"]) <= 40
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {board['title']}"
    for panel in panels(board):
        assert panel["title"], panel["id"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"{panel['title']!r} has no query"


def test_panels_do_not_overlap(board: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def _resolved_uid(board: dict[str, Any], datasource: Any) -> str:
    assert isinstance(datasource, dict), datasource
    assert datasource.get("type") == "prometheus", datasource
    uid = str(datasource["uid"])
    names = references(uid)
    if names:
        (name,) = names
        variable = variables(board)[name]
        assert variable["type"] == "datasource" and variable["query"] == "prometheus"
        uid = str(variable["current"]["value"])
    return uid


def test_every_query_goes_to_the_provisioned_prometheus(board: dict[str, Any]) -> None:
    uid = provisioned_datasource()["uid"]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert _resolved_uid(board, panel.get("datasource")) == uid, panel["title"]
    for query in queries(board):
        assert _resolved_uid(board, query.datasource) == uid, str(query)
    for variable in variables(board).values():
        if variable["type"] == "query":
            assert _resolved_uid(board, variable["datasource"]) == uid, variable["name"]


def _texts(board: dict[str, Any]) -> list[tuple[str, str]]:
    """Every text Grafana interpolates: titles, queries, legends, variable queries."""
    out = []
    for panel in panels(board):
        out.append((f"panel {panel['title']!r}", panel["title"]))
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r}", target.get("expr", "")))
            out.append((f"panel {panel['title']!r} legend", target.get("legendFormat", "")))
    for query in queries(board):
        out.append((str(query), query.expr))
    for variable in variables(board).values():
        out.append((f"variable {variable['name']}", variable.get("definition", "")))
    return out


def test_every_variable_used_is_defined(board: dict[str, Any]) -> None:
    defined = set(variables(board))
    for where, text in _texts(board):
        unknown = references(text) - defined - set(BUILTINS)
        assert not unknown, f"{where} uses undefined {sorted(unknown)}"
    for panel in panels(board):
        if panel.get("repeat"):
            assert panel["repeat"] in defined, panel["title"]


def test_multi_value_variables_are_matched_as_regexes(board: dict[str, Any]) -> None:
    """`service="$service"` with two services selected would match nothing: a multi-value
    variable goes after =~, except in the panel repeated over it (one value per copy)."""
    multi = {n for n, v in variables(board).items() if v.get("multi") or v.get("includeAll")}
    for query in queries(board):
        for name in multi - {query.repeat}:
            assert not re.search(rf'[^~]="\$\{{?{name}\b', query.expr), str(query)


def _placeholder_values(board: dict[str, Any]) -> dict[str, list[str]]:
    """A value per variable for a syntax check: custom and textbox ones their own."""
    out: dict[str, list[str]] = {}
    for name, variable in variables(board).items():
        if variable["type"] == "query":
            out[name] = ["x"]
        elif variable["type"] in ("custom", "textbox"):
            out[name] = [str(variable["current"]["value"])]
    return out


def _all_queries() -> list[Any]:
    return [pytest.param(b, q, id=str(q)) for b in map(load, FILES) for q in queries(b)]


@pytest.mark.parametrize(("board", "query"), _all_queries())
def test_every_expression_is_promql(board: dict[str, Any], query: Query) -> None:
    expr = resolve(board, query, _placeholder_values(board))
    try:
        promql_parser.parse(expr)
    except ValueError as exc:
        pytest.fail(f"{query}: {exc}\n{expr}")


def test_query_variables_are_label_values_of_promql_selectors(board: dict[str, Any]) -> None:
    values = _placeholder_values(board)
    for variable in variables(board).values():
        if variable["type"] != "query":
            continue
        assert variable["query"]["query"] == variable["definition"], variable["name"]
        selector, _ = label_values(variable["definition"])
        probe = Query(board["title"], variable["name"], selector, None, None)
        promql_parser.parse(resolve(board, probe, values))


def test_provisioning_lines_up() -> None:
    """The datasource's uid is the one the dashboards default to; the dashboard provider loads
    files from the path docs/grafana.md mounts deploy/grafana/dashboards at."""
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource["access"] == "proxy"
    for path in FILES:
        ds = variables(load(path))["datasource"]
        assert ds["current"]["value"] == datasource["uid"], path.name
    config = yaml.safe_load((PROVISIONING / "dashboards" / "prognos.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    mounted = provider["options"]["path"]
    assert mounted.startswith("/")
    docs = DOCS.read_text()
    relative = DASHBOARDS.relative_to(DASHBOARDS.parents[2])
    assert f"{relative}:{mounted}" in docs, f"docs/grafana.md must mount {relative} at {mounted}"
    assert f"{PROVISIONING.relative_to(DASHBOARDS.parents[2])}:/etc/grafana/provisioning" in docs
