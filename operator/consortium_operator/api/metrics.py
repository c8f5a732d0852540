"""The operator's Prometheus metrics (DESIGN §9), served on ``/metrics`` by ``main``.

Labels are bounded: namespace/consortium/node names of objects the operator manages, and
enumerated reasons; never transaction ids or free text.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

RECONCILE_DURATION = Histogram(
    "consortium_operator_reconcile_duration_seconds",
    "Seconds one reconcile pass took.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "consortium_operator_reconcile_errors",
    "Reconcile passes that failed, by object and reason (the exception's class).",
    ["namespace", "consortium", "kind", "reason"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "consortium_operator_last_successful_reconcile_timestamp_seconds",
    "Unix time of the last reconcile pass of a Consortium that completed without error.",
    ["namespace", "consortium"],
    registry=REGISTRY,
)
API_WRITES = Counter(
    "consortium_operator_api_writes",
    "Write calls the operator made to the Kubernetes API, by verb and kind.",
    ["verb", "kind"],
    registry=REGISTRY,
)
NODES = Gauge(
    "consortium_operator_nodes",
    "Nodes of a consortium by trust status in the verified trusted-node list.",
    ["namespace", "consortium", "status"],
    registry=REGISTRY,
)
EXPIRY = Gauge(
    "consortium_operator_attestation_expiry_seconds",
    "Seconds until a Trusted node's attestation expires.",
    ["namespace", "consortium", "node"],
    registry=REGISTRY,
)
RENEW_BEFORE = Gauge(
    "consortium_operator_attestation_renew_before_seconds",
    "The Consortium's spec.attestation.renewBefore in seconds: how long before expiry nodes are "
    "challenged to re-attest. The ConsortiumAttestationExpiringSoon alert is relative to it.",
    ["namespace", "consortium"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "consortium_operator_attestation_verifications",
    "Quotes the operator verified itself, by consortium, platform, result and reason.",
    ["namespace", "consortium", "platform", "result", "reason"],
    registry=REGISTRY,
)
LIST_VERSION = Gauge(
    "consortium_operator_trusted_list_version",
    "Version of the trusted-node list the operator last published.",
    ["namespace", "consortium"],
    registry=REGISTRY,
)
READY = Gauge(
    "consortium_operator_consortium_ready",
    "1 if the Consortium's Ready condition is True.",
    ["namespace", "consortium"],
    registry=REGISTRY,
)


def _remove(metric: Gauge | Counter, match: Callable[[tuple[str, ...]], bool]) -> None:
    for labels in list(metric._metrics):
        if match(tuple(labels)):
            metric.remove(*labels)


def forget_nodes(namespace: str, consortium: str, keep: set[str]) -> None:
    """Drop the expiry series of nodes of a Consortium that are no longer Trusted."""
    _remove(EXPIRY, lambda lb: lb[:2] == (namespace, consortium) and lb[2] not in keep)


def forget(namespace: str, consortium: str) -> None:
    """Drop the series of a deleted Consortium."""
    per_consortium = (NODES, EXPIRY, RENEW_BEFORE, LIST_VERSION, READY, LAST_SUCCESS, VERIFICATIONS)
    for metric in (*per_consortium, RECONCILE_ERRORS):  # all labelled (namespace, consortium, …)
        _remove(metric, lambda lb: lb[:2] == (namespace, consortium))
