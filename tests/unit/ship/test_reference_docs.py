"""docs/reference: the generated pages are fresh and name everything they are generated from.

``gen-reference.py --check`` catches a source changed without regenerating. The other tests
enumerate the sources on their own (CRD schemas, values.yaml, the metric objects, alerts and
dashboard) and look each item up in the pages, so a generator that silently drops fields,
values, metrics or alerts fails too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.observability.promql import node_specs, operator_specs

ROOT = Path(__file__).resolve().parents[3]
GENERATOR = ROOT / "scripts" / "gen-reference.py"
REFERENCE = ROOT / "docs" / "reference"
CHART = ROOT / "charts" / "consortium-operator"
GENERATED = ("crds.md", "values.md", "metrics.md", "alerts.md")
CRDS = [
    ROOT / "crds" / f"{p}.consortium.tee.dev.yaml"
    for p in ("consortia", "members", "consortiumbackups")
]


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    # sys.executable is the venv's python when pytest runs from .venv (scripts/test.sh).
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def flat(text: str) -> str:
    """Markdown text as plain words: table escapes undone, white space folded."""
    return " ".join(text.replace(r"\|", "|").replace("&lt;", "<").split())


@cache
def page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def row(text: str, first_cell: str) -> str:
    """The one table row of ``text`` whose first cell is ``first_cell``, flattened."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one row for {first_cell}, found {len(rows)}"
    return flat(rows[0])


# ---------------------------------------------------------------------- freshness
def test_generated_pages_are_fresh() -> None:
    done = generate("--check")
    assert done.returncode == 0, f"stale reference docs:\n{done.stderr}"


def test_check_names_stale_and_missing_pages_and_writes_nothing(tmp_path: Path) -> None:
    assert generate("--out", str(tmp_path)).returncode == 0
    for name in GENERATED:
        assert (tmp_path / name).read_text() == page(name), name
    (tmp_path / "values.md").write_text("stale\n")
    (tmp_path / "alerts.md").unlink()
    done = generate("--check", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "values.md: stale" in done.stderr and "alerts.md: stale" in done.stderr
    assert "crds.md" not in done.stderr and "metrics.md" not in done.stderr
    assert (tmp_path / "values.md").read_text() == "stale\n"
    assert not (tmp_path / "alerts.md").exists()


# ---------------------------------------------------------------------- crds.md
def schema_paths(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in node.get("properties", {}).items():
        sub = f"{path}.{key}" if path else key
        yield sub, child
        yield from schema_paths(child, sub)
    for suffix, child in (("[]", node.get("items")), (".*", node.get("additionalProperties"))):
        if isinstance(child, dict):
            yield path + suffix, child
            yield from schema_paths(child, path + suffix)


@pytest.mark.parametrize("crd_file", CRDS, ids=lambda p: p.name)
def test_crds_md_has_every_schema_field_with_its_description(crd_file: Path) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    [version] = crd["spec"]["versions"]
    fields = list(schema_paths(version["schema"]["openAPIV3Schema"]))
    assert {"spec", "status"} <= {path for path, _ in fields}
    assert len(fields) > 20
    names = crd["spec"]["names"]
    _, found, rest = page("crds.md").partition(f"\n## {names['kind']}\n")
    assert found, f"no section for {names['kind']}"
    section = rest.split("\n## ")[0]
    for path, node in fields:
        text = row(section, f"`{path}`")
        assert flat(node.get("description", "—")) in text, path
        if "default" in node:
            assert f"`{json.dumps(node['default'])}`" in text, path
        for value in node.get("enum", []):
            assert f"`{json.dumps(value)}`" in text, path
    for short in names.get("shortNames", []) + names.get("categories", []):
        assert f"`{short}`" in section
    for column in version.get("additionalPrinterColumns", []):
        assert f"`{column['jsonPath']}`" in row(section, column["name"])
    assert "kubectl explain consortium.spec --recursive" in flat(page("crds.md"))


# ---------------------------------------------------------------------- values.md
def value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        yield prefix + key, value
        if isinstance(value, dict):
            yield from value_paths(value, f"{prefix}{key}.")


def test_values_md_has_every_key_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = list(value_paths(values))
    assert len(keys) > 50
    for path, value in keys:
        text = row(page("values.md"), f"`{path}`")
        if not (isinstance(value, dict) and value):
            assert f"`{json.dumps(value)}`" in text, path


def test_values_md_has_the_comment_above_each_key() -> None:
    """The ``# --`` comment (first line) directly above a key is in that key's row."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    checked = 0
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
        above = number - 1
        while above >= 0 and lines[above].lstrip().startswith("#"):
            if lines[above].lstrip().startswith("# -- "):
                first = lines[above].lstrip()[len("# -- ") :]
                path = ".".join(k for _, k in stack)
                assert flat(first) in row(page("values.md"), f"`{path}`"), path
                checked += 1
                break
            above -= 1
    assert checked > 50


def test_chart_readme_links_to_the_values_reference_and_its_summary_is_true() -> None:
    readme = (CHART / "README.md").read_text()
    assert "(../../docs/reference/values.md)" in readme
    assert (CHART / "../../docs/reference/values.md").resolve().is_file()
    values = dict(value_paths(yaml.safe_load((CHART / "values.yaml").read_text())))
    summary = [line.split(" | ") for line in readme.splitlines() if line.startswith("| `")]
    assert len(summary) >= 8
    for first, default, *_ in summary:
        keys = re.findall(r"`([^`]+)`", first)
        for key in keys:
            assert key in values, f"chart README names {key}, which values.yaml does not have"
        defaults = re.findall(r"`([^`]+)`", default)
        if len(defaults) == 1:
            defaults *= len(keys)
        if len(defaults) == len(keys):  # one default for each key, or one for them all
            for key, shown in zip(keys, defaults, strict=True):
                assert shown in (json.dumps(values[key]), values[key]), f"{key}: {shown}"


# ---------------------------------------------------------------------- metrics.md
def test_metrics_md_has_every_metric_with_type_labels_and_help() -> None:
    specs = [*operator_specs(), *node_specs()]
    assert len(specs) >= 20
    for spec in specs:
        exposed = sorted(n for n in spec.exposed_names() if not n.endswith("_created"))
        lines = page("metrics.md").splitlines()
        text = next((flat(line) for line in lines if line.startswith(f"| `{exposed[0]}`")), "")
        assert text, f"{spec.name} ({spec.source}) is not in metrics.md"
        for name in exposed:
            assert f"`{name}`" in text, name
        assert f"| {spec.type} |" in text, spec.name
        for label in spec.labelnames:
            assert f"`{label}`" in text, f"{spec.name}: label {label}"
            explained = [line for line in lines if line.startswith(f"| `{label}` | ")]
            assert explained, f"label {label} is not explained"
            assert not any(line.endswith("| — |") for line in explained), label


# ---------------------------------------------------------------------- alerts.md
def test_alerts_md_has_every_alert_with_expr_and_annotations() -> None:
    groups = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rules = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len(rules) >= 6
    text = flat(page("alerts.md"))
    for rule in rules:
        assert f"### {rule['alert']}" in page("alerts.md")
        assert flat(rule["expr"]) in text, rule["alert"]
        for annotation in rule["annotations"].values():
            assert flat(annotation) in text, rule["alert"]
        assert f"`severity={rule['labels']['severity']}`" in text


def test_alerts_md_has_every_dashboard_panel_and_query() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    text = flat(page("alerts.md"))
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert f"| {panel['title']} |" in text
        for target in panel.get("targets", []):
            assert f"`{flat(target['expr'])}`" in text, panel["title"]


# ---------------------------------------------------------------------- hand-written pages
def test_reference_index_links_every_page() -> None:
    index = (REFERENCE / "README.md").read_text()
    for name in (*GENERATED, "security.md"):
        assert f"]({name})" in index, name
        assert (REFERENCE / name).is_file(), name
