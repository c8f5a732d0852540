"""Shared by the alert and dashboard tests: promtool, the metric catalogue, synthetic scrapes.

The catalogue is read from the live metric objects (the operator's ``REGISTRY`` module and a
``NodeMetrics`` instance), so a renamed metric breaks these tests rather than a dashboard in
production. prometheus_client appends ``_total`` (and ``_created``) to counters and
``_bucket``/``_sum``/``_count`` to histograms; the catalogue holds the exposed names.

Synthetic scrapes mimic what Prometheus stores for the Prometheus Operator's targets: operator
metrics with ``honorLabels: true`` (their own ``namespace`` label wins), node metrics with the
pod's ``namespace`` and ``pod`` target labels, both with ``job`` and ``instance``.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import Histogram, MetricWrapperBase

import consortium_operator.api.metrics as operator_metrics
from consortium_node.server.metrics import NodeMetrics

ROOT = Path(__file__).resolve().parents[3]
CHART_FILES = ROOT / "charts" / "consortium-operator" / "files"

# Target labels of the synthetic scrapes.
OPERATOR_TARGET = {
    "job": "consortium-operator-metrics",
    "instance": "10.1.0.5:8080",
    "pod": "consortium-operator-7c9d8-x2x4k",
    "namespace": "consortium-system",
}
NODE_JOB = "consortium-nodes"


def node_target(name: str, ordinal: int, namespace: str = "ledger") -> dict[str, str]:
    return {
        "job": NODE_JOB,
        "instance": f"10.2.0.{10 + ordinal}:8443",
        "namespace": namespace,
        "pod": name,
    }


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian package prometheus; scripts/setup-env.sh)"
    return path


def run_promtool(*args: str, cwd: Path) -> str:
    """Run promtool; fail the test with its whole output unless it exits 0."""
    done = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))
    return path


# ---------------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class MetricSpec:
    """One metric object: its family name, type, label names and histogram bounds."""

    name: str
    type: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    source: str = ""

    def exposed_names(self) -> set[str]:
        if self.type == "counter":
            return {f"{self.name}_total", f"{self.name}_created"}
        if self.type == "histogram":
            return {f"{self.name}{s}" for s in ("_bucket", "_sum", "_count", "_created")}
        if self.type == "summary":
            return {self.name, f"{self.name}_sum", f"{self.name}_count", f"{self.name}_created"}
        if self.type == "info":
            return {f"{self.name}_info"}
        return {self.name}


def _specs(objects: Iterable[Any], source: str) -> list[MetricSpec]:
    specs = []
    for obj in objects:
        if not isinstance(obj, MetricWrapperBase):
            continue
        (family,) = obj.describe()
        # Label names and bounds are not part of prometheus_client's public API.
        buckets = tuple(obj._upper_bounds) if isinstance(obj, Histogram) else ()
        specs.append(MetricSpec(family.name, family.type, tuple(obj._labelnames), buckets, source))
    return specs


@cache
def operator_specs() -> tuple[MetricSpec, ...]:
    return tuple(_specs(vars(operator_metrics).values(), "operator"))


@cache
def node_specs() -> tuple[MetricSpec, ...]:
    node = NodeMetrics(
        consortium="demo",
        node_id="00" * 32,
        name="demo-0",
        platform="insecure-virtual",
        version="0.1.0",
    )
    return tuple(_specs(vars(node).values(), "node"))


@cache
def known_metric_names() -> frozenset[str]:
    names: set[str] = set()
    for spec in (*operator_specs(), *node_specs()):
        names |= spec.exposed_names()
    return frozenset(names)


# ------------------------------------------------------------------------------ PromQL names
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
    # aggregation operators: `sum by (x) (...)` leaves `sum` not followed by "("
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (by lexing, not a full parse).

    Strings, label matchers, range/subquery brackets and grouping label lists are removed;
    what remains as an identifier not followed by ``(`` and not a keyword is a metric name.
    """
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(r"\1", s)
    names = set()
    for match in _IDENT.finditer(s):
        ident, call = match.group(1), match.group(2)
        if call or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names


# ----------------------------------------------------------------------- Grafana variables
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def variables_in(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace Grafana ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]`` by concrete values."""

    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        assert name in values, f"no test value for variable ${name}"
        return values[name]

    return _VARIABLE.sub(one, text)


# ---------------------------------------------------------------------- synthetic scrapes
LABEL_VALUES = {
    # operator
    "namespace": "ledger",
    "consortium": "demo",
    "node": "demo-0",
    "status": "Trusted",
    "kind": "Consortium",
    "reason": "none",
    "verb": "patch",
    "platform": "insecure-virtual",
    "result": "ok",
    # node
    "node_id": "ab" * 32,
    "name": "demo-0",
    "version": "0.1.0",
    "role": "primary",
    "outcome": "renewed",
    "route": "/app/transactions",
    "phase": "Open",
}
STEPS = 60  # samples per series, one a minute


def selector(name: str, labels: Mapping[str, str]) -> str:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def le_label(bound: float) -> str:
    """A bucket bound as prometheus_client exposes it: "0.005", "1.0", "+Inf"."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _series(spec: MetricSpec, labels: dict[str, str]) -> list[dict[str, str]]:
    if spec.type == "counter":
        return [{"series": selector(f"{spec.name}_total", labels), "values": f"0+1x{STEPS}"}]
    if spec.type == "histogram":
        out = [
            {
                "series": selector(f"{spec.name}_bucket", {**labels, "le": le_label(le)}),
                "values": f"0+{i + 1}x{STEPS}",
            }
            for i, le in enumerate(spec.buckets)
        ]
        out.append(
            {
                "series": selector(f"{spec.name}_count", labels),
                "values": f"0+{len(spec.buckets)}x{STEPS}",
            }
        )
        out.append({"series": selector(f"{spec.name}_sum", labels), "values": f"0+1x{STEPS}"})
        return out
    return [{"series": selector(spec.name, labels), "values": f"1x{STEPS}"}]


def synthetic_scrape() -> list[dict[str, str]]:
    """Input series for every operator and node metric: one operator and two nodes of
    ``ledger/demo``, every label set to a plausible value (LABEL_VALUES)."""
    series = []
    for spec in operator_specs():
        labels = {**OPERATOR_TARGET, **{k: LABEL_VALUES[k] for k in spec.labelnames}}
        series += _series(spec, labels)
    for ordinal in (0, 1):
        name = f"demo-{ordinal}"
        for spec in node_specs():
            own = {k: LABEL_VALUES[k] for k in spec.labelnames}
            if "name" in own:
                own["name"] = name
            if "node_id" in own:
                own["node_id"] = f"{ordinal:02x}" * 32
            series += _series(spec, {**node_target(name, ordinal), **own})
    return series
