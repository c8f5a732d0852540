"""charts/consortium-operator/files/dashboard.json: structure, PromQL, metric names, data.

Grafana is not available offline, so the dashboard is checked the way Grafana would fail on it:
JSON and panel structure, variables, layout; every query (with Grafana's variables replaced by
concrete values) parses in ``promtool check rules``; every metric it reads is one the operator
or a node exports; and on a synthetic scrape of one operator and two nodes (promql.py) every
panel query returns data, so joins and label names are right, not only the syntax.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.unit.observability.promql import (
    CHART_FILES,
    LABEL_VALUES,
    known_metric_names,
    metric_names,
    run_promtool,
    substitute,
    synthetic_scrape,
    variables_in,
    write_yaml,
)

DASHBOARD = CHART_FILES / "dashboard.json"
GRID_WIDTH = 24
# Grafana's built-in variables a query may use.
BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__dashboard"}
# Concrete values for promtool: the synthetic scrape's namespace and consortium.
VALUES = {
    "namespace": LABEL_VALUES["namespace"],
    "consortium": LABEL_VALUES["consortium"],
    "datasource": "prometheus",
    "__rate_interval": "2m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
}


@cache
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels():
        for target in panel["targets"]:
            yield panel, target


def label_values_query(variable: dict[str, Any]) -> tuple[str, str]:
    """(selector, label) of a ``label_values(selector, label)`` variable query."""
    query = variable["query"]
    if isinstance(query, dict):  # newer Grafana stores {"query": ..., "refId": ...}
        query = query["query"]
    assert query.startswith("label_values(") and query.endswith(")"), query
    selector, _, label = query[len("label_values(") : -1].rpartition(",")
    return selector.strip(), label.strip()


def test_dashboard_identity() -> None:
    d = dashboard()
    assert d["title"] == "Consortium operator"
    assert d["uid"] and len(d["uid"]) <= 40  # Grafana's uid limit
    assert d["schemaVersion"] >= 36
    assert d.get("id") is None, "no fixed id: Grafana assigns one on provisioning"
    assert "__inputs" not in d, "provisioned as is (sidecar), not through the import UI"


def test_variables() -> None:
    v = variables()
    assert v["datasource"]["type"] == "datasource"
    assert v["datasource"]["query"] == "prometheus"
    for name in ("namespace", "consortium"):
        assert v[name]["type"] == "query"
        assert v[name]["datasource"]["uid"] == "${datasource}"
        selector, label = label_values_query(v[name])
        assert label == name
        (metric,) = metric_names(selector)
        assert metric.startswith("consortium_operator_"), "variables come from operator metrics"
    assert "namespace" in variables_in(label_values_query(v["consortium"])[0])


def test_panels_structure() -> None:
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert panels(), "no panels"
    for panel in panels():
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("title"), where
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge"}, where
        assert panel.get("datasource", {}).get("uid") == "${datasource}", where
        assert panel.get("targets"), f"{where}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{where}: duplicate refIds"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where}: target without expr"
            assert target.get("datasource", {}).get("uid") == "${datasource}", where


def test_layout_does_not_overlap() -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in panels():
        g = panel["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, panel["id"]
        assert g["x"] + g["w"] <= GRID_WIDTH, f"panel {panel['id']} wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


def test_only_defined_variables_are_used() -> None:
    defined = set(variables()) | BUILTINS
    text = json.dumps(dashboard()["panels"]) + json.dumps(
        [label_values_query(v)[0] for v in variables().values() if v["type"] == "query"]
    )
    used = variables_in(text)
    assert used <= defined, f"undefined variables: {sorted(used - defined)}"


def test_required_content() -> None:
    """The panels the dashboard exists for (one assertion per topic)."""
    exprs = " ".join(t["expr"] for _, t in targets())
    for needle in (
        "consortium_operator_nodes",
        "consortium_operator_attestation_expiry_seconds",
        "consortium_operator_trusted_list_version",
        "consortium_trusted_list_version",
        "consortium_join_requests_total",
        "consortium_attestation_verifications_total",
        "consortium_operator_attestation_verifications_total",
        "consortium_commit_index",
        "histogram_quantile(0.99, sum by (name, le) (rate(consortium_commit_latency_seconds_bucket",
        "consortium_operator_reconcile_errors_total",
        "consortium_operator_reconcile_duration_seconds_bucket",
        "sum by (verb) (rate(consortium_operator_api_writes_total",
        "consortium_backup_lag_seconds",
        "consortium_backup_max_lag_seconds",
        "consortium_backup_last_success_timestamp_seconds",
        "consortium_backup_failures_total",
    ):
        assert needle in exprs, needle


def test_consortium_panels_filter_on_both_variables() -> None:
    """A query that reads per-consortium data selects $namespace and $consortium; the
    operator-wide metrics (no consortium label) are titled as such."""
    for panel, target in targets():
        used = variables_in(target["expr"])
        if used & {"namespace", "consortium"}:
            assert {"namespace", "consortium"} <= used, f"panel {panel['id']}: {target['expr']}"
        else:
            assert "operator" in panel["title"].lower(), f"panel {panel['id']} reads all data"


def test_metrics_exist() -> None:
    known = known_metric_names()
    queries = [t["expr"] for _, t in targets()]
    queries += [label_values_query(v)[0] for v in variables().values() if v["type"] == "query"]
    for query in queries:
        used = metric_names(substitute(query, VALUES))
        assert used, f"no metric found in {query!r}"
        assert used <= known, f"unknown metrics {sorted(used - known)} in {query!r}"


def recording_rules() -> list[dict[str, str]]:
    return [
        {
            "record": f"dashboard:panel_{panel['id']}:{target['refId']}",
            "expr": substitute(target["expr"], VALUES),
        }
        for panel, target in targets()
    ]


def test_every_query_passes_promtool_check_rules(tmp_path: Path) -> None:
    rules = recording_rules()
    path = write_yaml(
        tmp_path / "dashboard.rules.yaml", {"groups": [{"name": "d", "rules": rules}]}
    )
    output = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_every_query_returns_data_on_a_synthetic_scrape(tmp_path: Path) -> None:
    """`count(Q) > bool 0` is {} 1 exactly when Q returns at least one series; promtool names
    the expression of any that does not."""
    write_yaml(tmp_path / "empty.rules.yaml", {"groups": []})
    queries = [rule["expr"] for rule in recording_rules()]
    for variable in variables().values():
        if variable["type"] == "query":  # the variable's label must be there too
            selector, label = label_values_query(variable)
            selector = substitute(selector, VALUES)
            if selector.endswith("}"):
                queries.append(f'{selector[:-1]}, {label}!=""}}')
            else:
                queries.append(f'{selector}{{{label}!=""}}')
    test_file = write_yaml(
        tmp_path / "dashboard_test.yaml",
        {
            "rule_files": ["empty.rules.yaml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": synthetic_scrape(),
                    "promql_expr_test": [
                        {
                            "expr": f"count({q}) > bool 0",
                            "eval_time": "30m",
                            "exp_samples": [{"labels": "{}", "value": 1}],
                        }
                        for q in queries
                    ],
                }
            ],
        },
    )
    run_promtool("test", "rules", str(test_file), cwd=tmp_path)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('x{a="$namespace"}[$__rate_interval]', 'x{a="ledger"}[2m]'),
        ("${datasource} [[consortium]] ${namespace:regex}", "prometheus demo ledger"),
    ],
)
def test_substitute(query: str, expected: str) -> None:
    assert substitute(query, VALUES) == expected
