"""charts/consortium-operator/files/alerts.yaml, checked and unit-tested by the real promtool.

The file is a YAML list of rule groups (a PrometheusRule's ``spec.groups``); wrapped as
``groups:`` it is a Prometheus rules file, which ``promtool check rules`` validates. Every alert
then gets at least one scenario where it fires (exact labels and rendered annotations) and one
where it must not, run by ``promtool test rules`` on synthetic series shaped like the
Prometheus Operator's scrapes (see promql.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.observability.promql import (
    CHART_FILES,
    NODE_JOB,
    OPERATOR_TARGET,
    known_metric_names,
    metric_names,
    node_target,
    run_promtool,
    selector,
    write_yaml,
)

ALERTS = CHART_FILES / "alerts.yaml"
SEVERITIES = {"warning", "critical"}


@cache
def groups() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert isinstance(loaded, list), "alerts.yaml must be a YAML list of rule groups"
    return loaded


@cache
def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for group in groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"duplicate alert {rule['alert']}"
                rules[rule["alert"]] = rule
    return rules


def rules_file(tmp_path: Path) -> Path:
    """alerts.yaml as a rules file, by text (as a chart template embeds it under `groups:`)."""
    path = tmp_path / "rules.yaml"
    path.write_text("groups:\n" + ALERTS.read_text())
    return path


# ---------------------------------------------------------------------------- scenarios
def operator_series(metric: str, values: str, /, **labels: str) -> dict[str, str]:
    """An operator metric as stored with honorLabels: its own namespace label wins."""
    return {"series": selector(metric, {**OPERATOR_TARGET, **labels}), "values": values}


def node_series(
    metric: str,
    values: str,
    /,
    *,
    node: str,
    ordinal: int,
    namespace: str = "ledger",
    **labels: str,
) -> dict[str, str]:
    """A node metric with the node pod's target labels."""
    return {
        "series": selector(metric, {**node_target(node, ordinal, namespace), **labels}),
        "values": values,
    }


def node_info(
    node: str, ordinal: int, consortium: str, namespace: str = "ledger"
) -> dict[str, str]:
    return node_series(
        "consortium_node_info",
        "1x60",
        node=node,
        ordinal=ordinal,
        namespace=namespace,
        consortium=consortium,
        node_id=f"{ordinal:02x}" * 32,
        name=node,
        platform="insecure-virtual",
        version="0.1.0",
    )


@dataclass(frozen=True)
class Fired:
    """One expected firing alert: its labels (alertname and severity added from the rule) and
    how the value-dependent template snippets render."""

    labels: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    id: str
    alert: str
    series: list[dict[str, str]]
    eval_time: str
    fired: list[Fired]
    interval: str = "1m"  # between input samples (rules are evaluated every minute)


DEMO = {"namespace": "ledger", "consortium": "demo"}
OPERATOR_UP = selector("up", OPERATOR_TARGET)
OPERATOR_DOWN_TRAPS = [
    # Node targets up, including one whose job contains "consortium-operator" (a chart would
    # name a node monitor <release>-consortium-operator-nodes): none of them is the operator.
    {"series": f'up{{job="{NODE_JOB}", instance="10.2.0.10:8443"}}', "values": "1x30"},
    {
        "series": 'up{job="ledger/rel-consortium-operator-nodes", instance="10.2.0.11:8443"}',
        "values": "1x30",
    },
]


def renew_before(seconds: int, samples: int, **labels: str) -> dict[str, str]:
    return operator_series(
        "consortium_operator_attestation_renew_before_seconds", f"{seconds}x{samples}", **labels
    )


def expiry(values: str, /, node: str, **labels: str) -> dict[str, str]:
    return operator_series(
        "consortium_operator_attestation_expiry_seconds", values, **labels, node=node
    )


def renewing(validity: int, renewed_at: int, step: int, rounds: int) -> str:
    """A node that renews: counting down by ``step`` per sample from ``validity``, back to
    ``validity`` at the first sample not above ``renewed_at`` (the primary's round)."""
    cycle = list(range(validity, renewed_at - 1, -step))
    return " ".join(str(v) for v in cycle * rounds)


def rejections(reason: str, values: str, /, *, node: str, ordinal: int) -> list[dict[str, str]]:
    """A node's rejection counter for ``reason``, beside the other reasons' series at 0 (a
    node exposes every reason from its start)."""
    return [
        node_series(
            "consortium_trusted_list_rejections_total",
            values if other == reason else "0x50",
            node=node,
            ordinal=ordinal,
            reason=other,
        )
        for other in ("BadSignature", "Malformed", "VersionReused")
    ]


def backup_lag(lag: str, max_lag: int, /, *, node: str, ordinal: int) -> list[dict[str, str]]:
    """A node's backup lag series and its allowed lag (constant, one sample a minute)."""
    return [
        node_series("consortium_backup_lag_seconds", lag, node=node, ordinal=ordinal),
        node_series(
            "consortium_backup_max_lag_seconds", f"{max_lag}x40", node=node, ordinal=ordinal
        ),
    ]


def backup_failures(
    reason: str, values: str, /, *, node: str, ordinal: int
) -> list[dict[str, str]]:
    """A node's backup failure counter for ``reason``, beside another reason's series at 0."""
    return [
        node_series(
            "consortium_backup_failures_total",
            values if other == reason else "0x50",
            node=node,
            ordinal=ordinal,
            reason=other,
        )
        for other in sorted({reason, "EndpointUnreachable"})
    ]


# How the expiry alert words the time left (`$value`), rendered per scenario.
EXPIRY_WORDS = (
    '{{ if lt $value 0.0 }}expired {{ reReplaceAll "-" "" ($value | humanizeDuration) }} ago'
    "{{ else }}expires in {{ $value | humanizeDuration }}{{ end }}"
)
FAST = {"namespace": "ledger", "consortium": "fast"}  # validity 2m, renewBefore 1m
SLOW = {"namespace": "ledger", "consortium": "slow"}  # validity 24h, renewBefore 8h


def repairs(reason: str, values: str, /, *, node: str, ordinal: int) -> list[dict[str, str]]:
    """A node's storage-fault repair counter for ``reason``, beside another reason's at 0."""
    return [
        node_series(
            "consortium_ledger_repairs_total",
            values if other == reason else "0x130",
            node=node,
            ordinal=ordinal,
            reason=other,
        )
        for other in (reason, "missing" if reason != "missing" else "corrupted")
    ]


SCENARIOS = [
    # -- ConsortiumAttestationExpiringSoon: relative to each consortium's renewBefore
    Scenario(
        "expiring-quiet-while-short-validities-renew",
        "ConsortiumAttestationExpiringSoon",
        [
            # Sampled every 15 s for 40 minutes: renewed at ~58 s left, back to 118 s. A fixed
            # threshold (the old `< 2h`) fired on every node of such a consortium.
            renew_before(60, 160, **FAST),
            expiry(renewing(118, 58, 15, 32), node="fast-0", **FAST),
            # One node renews late every time (a slow quote), never under half of renewBefore.
            expiry(renewing(118, 40, 13, 24), node="fast-1", **FAST),
        ],
        "40m",
        [],
        interval="15s",
    ),
    Scenario(
        "expiring-fires-when-a-short-renewal-is-stuck",
        "ConsortiumAttestationExpiringSoon",
        [
            renew_before(60, 80, **FAST),
            expiry(renewing(118, 58, 15, 16), node="fast-0", **FAST),
            # Not renewed (no primary): under 30 s from 1m30s, so firing from 6m30s; the list
            # still says Trusted, so the series goes on below zero.
            expiry("118-15x80", node="fast-1", **FAST),
        ],
        "10m",
        [Fired({**FAST, "node": "fast-1"}, {EXPIRY_WORDS: "expired 8m 2s ago"})],
        interval="15s",
    ),
    Scenario(
        "expiring-quiet-while-long-validities-renew",
        "ConsortiumAttestationExpiringSoon",
        [
            renew_before(28800, 310, **SLOW),
            # Renewed at 8h left after 5 minutes, then counting down from 24h.
            expiry("29100-60x5 86395-60x300", node="slow-0", **SLOW),
            expiry("50000-60x305", node="slow-1", **SLOW),
        ],
        "300m",
        [],
    ),
    Scenario(
        "expiring-fires-when-a-long-renewal-is-stuck-in-its-consortium-only",
        "ConsortiumAttestationExpiringSoon",
        [
            renew_before(28800, 310, **SLOW),
            # Not renewed since 8h were left: under 4h at 245m, firing from 250m.
            expiry("29100-60x305", node="slow-0", **SLOW),
            expiry("86395-60x305", node="slow-1", **SLOW),
            # The same remaining time in a consortium renewing 1h ahead is healthy there.
            renew_before(3600, 310, namespace="other", consortium="slow"),
            expiry("29100-60x305", node="slow-0", namespace="other", consortium="slow"),
        ],
        "300m",
        [Fired({**SLOW, "node": "slow-0"}, {EXPIRY_WORDS: "expires in 3h 5m 0s"})],
    ),
    Scenario(
        "expiring-quiet-for-a-retired-node",
        "ConsortiumAttestationExpiringSoon",
        [
            renew_before(28800, 60, **DEMO),
            expiry("80000-60x60", node="demo-0", **DEMO),
            # Retired at 20m with 1h left: the operator drops its series.
            expiry("3600-60x20 _x40", node="demo-2", **DEMO),
        ],
        "45m",
        [],
    ),
    # -- ConsortiumNodeRetired
    Scenario(
        "retired-fires-after-an-increase",
        "ConsortiumNodeRetired",
        [
            operator_series("consortium_operator_nodes", "0x20 1x20", **DEMO, status="Retired"),
            operator_series("consortium_operator_nodes", "3x20 2x20", **DEMO, status="Trusted"),
            # Another consortium with old retirements only.
            operator_series(
                "consortium_operator_nodes",
                "2x40",
                namespace="ledger",
                consortium="other",
                status="Retired",
            ),
        ],
        "25m",
        [Fired(DEMO, {"{{ $value }}": "1"})],
    ),
    Scenario(
        "retired-quiet-for-old-retirements-and-removals",
        "ConsortiumNodeRetired",
        [
            operator_series("consortium_operator_nodes", "2x40", **DEMO, status="Retired"),
            operator_series(
                "consortium_operator_nodes",
                "1x20 0x20",
                namespace="ledger",
                consortium="other",
                status="Retired",
            ),
        ],
        "25m",
        [],
    ),
    Scenario(
        "retired-resolves-15m-after-the-increase",
        "ConsortiumNodeRetired",
        [operator_series("consortium_operator_nodes", "0x20 1x30", **DEMO, status="Retired")],
        "40m",
        [],
    ),
    # -- ConsortiumNotReady
    Scenario(
        "not-ready-fires-after-10m",
        "ConsortiumNotReady",
        [
            operator_series("consortium_operator_consortium_ready", "1x5 0x30", **DEMO),
            operator_series(
                "consortium_operator_consortium_ready", "1x35", namespace="ledger", consortium="ok"
            ),
        ],
        "20m",
        [Fired(DEMO)],
    ),
    Scenario(
        "not-ready-quiet-when-ready-or-recovered",
        "ConsortiumNotReady",
        [
            operator_series("consortium_operator_consortium_ready", "1x35", **DEMO),
            # Not ready for 8 minutes (genesis), then Ready: never 10 minutes in a row.
            operator_series(
                "consortium_operator_consortium_ready",
                "0x8 1x30",
                namespace="ledger",
                consortium="young",
            ),
        ],
        "20m",
        [],
    ),
    # -- ConsortiumTrustedListDistributionStuck
    Scenario(
        "distribution-fires-when-the-nodes-are-ahead",
        "ConsortiumTrustedListDistributionStuck",
        [
            operator_series("consortium_operator_trusted_list_version", "3x40", **DEMO),
            node_series("consortium_trusted_list_version", "3x10 4x30", node="demo-0", ordinal=0),
            node_series("consortium_trusted_list_version", "3x10 4x30", node="demo-1", ordinal=1),
            node_info("demo-0", 0, "demo"),
            node_info("demo-1", 1, "demo"),
            # Same consortium name in another namespace, in sync at version 7: must neither
            # fire nor mask ledger/demo.
            operator_series(
                "consortium_operator_trusted_list_version",
                "7x40",
                namespace="other",
                consortium="demo",
            ),
            node_series(
                "consortium_trusted_list_version",
                "7x40",
                node="demo-0",
                ordinal=5,
                namespace="other",
            ),
            node_info("demo-0", 5, "demo", namespace="other"),
        ],
        "25m",
        [Fired(DEMO, {"{{ $value }}": "1"})],
    ),
    Scenario(
        "distribution-quiet-when-published-in-time-or-nodes-behind",
        "ConsortiumTrustedListDistributionStuck",
        [
            # ledger/demo: published 2 minutes after the nodes got version 4.
            operator_series("consortium_operator_trusted_list_version", "3x12 4x30", **DEMO),
            node_series("consortium_trusted_list_version", "3x10 4x30", node="demo-0", ordinal=0),
            node_info("demo-0", 0, "demo"),
            # other/demo: a node still on an older list than the published one.
            operator_series(
                "consortium_operator_trusted_list_version",
                "7x40",
                namespace="other",
                consortium="demo",
            ),
            node_series(
                "consortium_trusted_list_version",
                "6x40",
                node="demo-0",
                ordinal=5,
                namespace="other",
            ),
            node_info("demo-0", 5, "demo", namespace="other"),
        ],
        "25m",
        [],
    ),
    # -- ConsortiumTrustedListRejected
    Scenario(
        "list-rejected-fires-on-a-forged-list",
        "ConsortiumTrustedListRejected",
        [
            *rejections("BadSignature", "0x10 1x20", node="demo-0", ordinal=0),
            *rejections("BadSignature", "0x11 1x19", node="demo-1", ordinal=1),
            *rejections("VersionReused", "0x30", node="demo-0", ordinal=0),
            node_info("demo-0", 0, "demo"),
            node_info("demo-1", 1, "demo"),
            # Another consortium's nodes only see older lists: stale, not rejected.
            *rejections("BadSignature", "0x30", node="other-0", ordinal=5),
            node_series("consortium_trusted_list_stale_total", "0+1x30", node="other-0", ordinal=5),
            node_info("other-0", 5, "other"),
        ],
        "15m",
        [Fired({**DEMO, "reason": "BadSignature"})],
    ),
    Scenario(
        "list-rejected-quiet-for-stale-lists-and-old-rejections",
        "ConsortiumTrustedListRejected",
        [
            # The ConfigMap lagging behind the nodes on every re-attestation round.
            *rejections("BadSignature", "0x40", node="demo-0", ordinal=0),
            node_series("consortium_trusted_list_stale_total", "0+1x40", node="demo-0", ordinal=0),
            node_info("demo-0", 0, "demo"),
            # A forged list refused 30 minutes ago, and a node restart (counter reset) since.
            *rejections("Malformed", "0x5 1x15 0x20", node="old-0", ordinal=6),
            node_info("old-0", 6, "old"),
        ],
        "40m",
        [],
    ),
    # -- ConsortiumBackupLagging: the primary's lag (the others export 0) against its allowed lag
    Scenario(
        "backup-lagging-fires-when-the-primary-falls-behind",
        "ConsortiumBackupLagging",
        [
            # Shipping stalls at 2m: the oldest unshipped entry ages a minute per minute.
            *backup_lag("0x2 60+60x38", 60, node="demo-0", ordinal=0),
            *backup_lag("0x40", 60, node="demo-1", ordinal=1),
            node_info("demo-0", 0, "demo"),
            node_info("demo-1", 1, "demo"),
            # Another consortium shipping in time, its lag below its maxLag of 30s.
            *backup_lag("0 12 25 0 7x37", 30, node="ok-0", ordinal=5),
            node_info("ok-0", 5, "ok"),
        ],
        "15m",
        [Fired(DEMO, {"{{ $value | humanizeDuration }}": "12m 0s"})],
    ),
    Scenario(
        "backup-lagging-quiet-for-short-stalls-and-schedules",
        "ConsortiumBackupLagging",
        [
            # Over maxLag for 3 minutes (a slow upload), then caught up.
            *backup_lag("0x5 70 130 190 0x32", 60, node="demo-0", ordinal=0),
            node_info("demo-0", 0, "demo"),
            # Mode Scheduled every 6h: hours of lag are within period + 60s.
            *backup_lag("3000+60x40", 21660, node="sched-0", ordinal=6),
            node_info("sched-0", 6, "sched"),
            # Backups not configured: nothing exported.
            node_info("plain-0", 7, "plain"),
        ],
        "30m",
        [],
    ),
    # -- ConsortiumRecoveryRecordStale
    Scenario(
        "recovery-record-stale-fires-when-no-record-can-be-written",
        "ConsortiumRecoveryRecordStale",
        [
            # A threshold above the recovery members from 5m on: every node sees it.
            node_series("consortium_recovery_record_stale", "0x5 1x30", node="demo-0", ordinal=0),
            node_series("consortium_recovery_record_stale", "0x5 1x30", node="demo-1", ordinal=1),
            node_info("demo-0", 0, "demo"),
            node_info("demo-1", 1, "demo"),
        ],
        "25m",
        [Fired(DEMO)],
    ),
    Scenario(
        "recovery-record-stale-quiet-while-the-primary-writes-it",
        "ConsortiumRecoveryRecordStale",
        [
            # Stale for a minute after each membership change, then written.
            node_series(
                "consortium_recovery_record_stale", "0x5 1 0x10 1 0x15", node="demo-0", ordinal=0
            ),
            node_info("demo-0", 0, "demo"),
            # No recovery member at all: nothing to cover.
            node_series("consortium_recovery_record_stale", "0x32", node="plain-0", ordinal=7),
            node_info("plain-0", 7, "plain"),
        ],
        "30m",
        [],
    ),
    # -- ConsortiumBackupFailing
    Scenario(
        "backup-failing-fires-when-rounds-keep-failing",
        "ConsortiumBackupFailing",
        [
            # (promtool's clock starts at 0: "no manifest for 15 minutes" can hold from 15m on.)
            *backup_failures("BucketNotFound", "0+2x50", node="demo-0", ordinal=0),
            node_series(
                "consortium_backup_last_success_timestamp_seconds", "0x50", node="demo-0", ordinal=0
            ),
            node_info("demo-0", 0, "demo"),
            # A follower ships nothing and fails nothing.
            *backup_failures("BucketNotFound", "0x50", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
        ],
        "40m",
        [Fired({**DEMO, "reason": "BucketNotFound"})],
    ),
    Scenario(
        "backup-failing-quiet-between-successes-and-after-recovery",
        "ConsortiumBackupFailing",
        [
            # A failure now and then, but a manifest every minute (time() is 60 s per sample).
            *backup_failures("UploadFailed", "0+1x40", node="flaky-0", ordinal=4),
            node_series(
                "consortium_backup_last_success_timestamp_seconds",
                "0+60x40",
                node="flaky-0",
                ordinal=4,
            ),
            node_info("flaky-0", 4, "flaky"),
            # Failed for 10 minutes, then the credentials were fixed and nothing failed since.
            *backup_failures("InvalidCredentials", "0+1x10 10x30", node="demo-0", ordinal=0),
            node_series(
                "consortium_backup_last_success_timestamp_seconds",
                "0x11 660+60x29",
                node="demo-0",
                ordinal=0,
            ),
            node_info("demo-0", 0, "demo"),
        ],
        "35m",
        [],
    ),
    # -- ConsortiumLedgerStorageFault: any repair in the last hour
    Scenario(
        "storage-fault-fires-on-a-repair",
        "ConsortiumLedgerStorageFault",
        [
            # The node restarted after the fault (a new series from 0), repaired at minute 3.
            *repairs("corrupted", "0 0 0 1x20", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
            *repairs("corrupted", "0x23", node="demo-0", ordinal=0),
            node_info("demo-0", 0, "demo"),
        ],
        "10m",
        [Fired({**DEMO, "pod": "demo-1", "reason": "corrupted"})],
    ),
    Scenario(
        "storage-fault-quiet-an-hour-after-the-repair",
        "ConsortiumLedgerStorageFault",
        [
            *repairs("missing", "0 1x129", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
        ],
        "125m",
        [],
    ),
    # -- ConsortiumLedgerRecovering / ConsortiumLedgerDiverged: 1 stuck, 2 contradicted
    Scenario(
        "ledger-recovering-fires-when-a-repair-is-stuck",
        "ConsortiumLedgerRecovering",
        [
            node_series("consortium_ledger_recovering", "0 1x30", node="demo-2", ordinal=2),
            node_info("demo-2", 2, "demo"),
            node_series("consortium_ledger_recovering", "0 1 1 0x28", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
        ],
        "15m",
        [Fired({**DEMO, "pod": "demo-2"})],
    ),
    Scenario(
        "ledger-recovering-quiet-for-quick-repairs-and-divergence",
        "ConsortiumLedgerRecovering",
        [
            node_series("consortium_ledger_recovering", "0 1x5 0x24", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
            node_series("consortium_ledger_recovering", "2x30", node="demo-2", ordinal=2),
            node_info("demo-2", 2, "demo"),
        ],
        "20m",
        [],
    ),
    Scenario(
        "ledger-diverged-fires-on-a-contradicting-history",
        "ConsortiumLedgerDiverged",
        [
            node_series("consortium_ledger_recovering", "1 1 2x20", node="demo-2", ordinal=2),
            node_info("demo-2", 2, "demo"),
            node_series("consortium_ledger_recovering", "1x22", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
        ],
        "10m",
        [Fired({**DEMO, "pod": "demo-2"})],
    ),
    Scenario(
        "ledger-diverged-quiet-while-recovering",
        "ConsortiumLedgerDiverged",
        [
            node_series("consortium_ledger_recovering", "1x20 0x10", node="demo-1", ordinal=1),
            node_info("demo-1", 1, "demo"),
        ],
        "25m",
        [],
    ),
    # -- ConsortiumOperatorReconcileErrors
    Scenario(
        "reconcile-errors-fire-when-continuous",
        "ConsortiumOperatorReconcileErrors",
        [
            operator_series(
                "consortium_operator_reconcile_errors_total",
                "0+2x40",
                kind="Consortium",
                reason="ApiException",
                **DEMO,
            )
        ],
        "30m",
        [
            Fired(
                {
                    **DEMO,
                    "job": OPERATOR_TARGET["job"],
                    "kind": "Consortium",
                    "reason": "ApiException",
                },
                {"{{ $value | humanize }}": "33.33m"},
            )
        ],
    ),
    Scenario(
        "reconcile-errors-quiet-once-they-stop",
        "ConsortiumOperatorReconcileErrors",
        [
            operator_series(
                "consortium_operator_reconcile_errors_total",
                "0+1x10 10x30",
                kind="Consortium",
                reason="ApiException",
                **DEMO,
            )
        ],
        "35m",
        [],
    ),
    # -- ConsortiumOperatorDown
    Scenario(
        "operator-down-fires-when-its-target-is-down",
        "ConsortiumOperatorDown",
        [
            {"series": OPERATOR_UP, "values": "0x30"},
            *OPERATOR_DOWN_TRAPS,
        ],
        "10m",
        [Fired({})],
    ),
    Scenario(
        "operator-down-fires-when-there-is-no-target",
        "ConsortiumOperatorDown",
        OPERATOR_DOWN_TRAPS,
        "10m",
        [Fired({})],
    ),
    Scenario(
        "operator-down-quiet-when-up",
        "ConsortiumOperatorDown",
        [
            {"series": OPERATOR_UP, "values": "1x30"},
            *OPERATOR_DOWN_TRAPS,
        ],
        "10m",
        [],
    ),
    Scenario(
        "operator-down-quiet-when-one-replica-of-two-is-up",
        "ConsortiumOperatorDown",
        [
            {"series": OPERATOR_UP, "values": "0x30"},
            # jobLabel: app.kubernetes.io/name gives the job "consortium-operator".
            {
                "series": 'up{job="consortium-operator", instance="10.1.0.6:8080"}',
                "values": "1x30",
            },
        ],
        "10m",
        [],
    ),
]

_LABEL_REF = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def render(template: str, labels: dict[str, str], values: dict[str, str]) -> str:
    """Render the small template subset the alerts use: $labels.x, and the value snippets the
    scenario spells out (so a changed formatting is noticed)."""
    out = _LABEL_REF.sub(lambda m: labels[m.group(1)], template)
    for snippet, rendered in values.items():
        out = out.replace(snippet, rendered)
    assert "{{" not in out, f"unrendered template left in {out!r}"
    return out


def expected_alert(rule: dict[str, Any], fired: Fired) -> dict[str, Any]:
    labels = {**fired.labels, **rule.get("labels", {})}
    all_labels = {**labels, "alertname": rule["alert"]}
    return {
        "exp_labels": labels,
        "exp_annotations": {
            key: render(text, all_labels, fired.values)
            for key, text in rule.get("annotations", {}).items()
        },
    }


def test_rules_file_passes_promtool_check(tmp_path: Path) -> None:
    output = run_promtool("check", "rules", str(rules_file(tmp_path)), cwd=tmp_path)
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups())} rules found" in output


def test_also_valid_when_reserialised_under_groups(tmp_path: Path) -> None:
    """A template that does `fromYamlArray | toYaml` instead of embedding the text."""
    path = write_yaml(tmp_path / "rules.yaml", {"groups": groups()})
    run_promtool("check", "rules", str(path), cwd=tmp_path)


def test_group_and_alert_conventions() -> None:
    assert [g["name"] for g in groups()], "at least one group"
    assert len({g["name"] for g in groups()}) == len(groups()), "group names are unique"
    for name, rule in alert_rules().items():
        assert re.fullmatch(r"Consortium[A-Z][A-Za-z]+", name), name
        assert rule.get("for"), f"{name}: needs a `for:`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        assert {"summary", "description"} <= annotations.keys(), f"{name}: annotations"
        if not rule["expr"].lstrip().startswith("absent("):  # absent() keeps no labels
            for key in ("summary", "description"):
                assert "$labels." in annotations[key], f"{name}: {key} names no $labels"


def test_alerts_use_only_exported_metrics() -> None:
    known = known_metric_names() | {"up"}
    for name, rule in alert_rules().items():
        used = metric_names(rule["expr"])
        assert used, f"{name}: no metric found in {rule['expr']!r}"
        assert used <= known, f"{name}: unknown metrics {sorted(used - known)}"


def test_every_alert_has_a_firing_and_a_quiet_scenario() -> None:
    for name in alert_rules():
        mine = [s for s in SCENARIOS if s.alert == name]
        assert any(s.fired for s in mine), f"{name}: no scenario where it fires"
        assert any(not s.fired for s in mine), f"{name}: no scenario where it stays quiet"
    assert {s.alert for s in SCENARIOS} <= alert_rules().keys()
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


def test_all_scenarios_with_promtool(tmp_path: Path) -> None:
    """All scenarios in one `promtool test rules` run (one process: fast); on failure promtool
    names the scenario (test group name) and shows got/expected."""
    rules_file(tmp_path)
    tests = []
    for scenario in SCENARIOS:
        rule = alert_rules()[scenario.alert]
        tests.append(
            {
                "name": scenario.id,
                "interval": scenario.interval,
                "input_series": scenario.series,
                "alert_rule_test": [
                    {
                        "eval_time": scenario.eval_time,
                        "alertname": scenario.alert,
                        "exp_alerts": [expected_alert(rule, f) for f in scenario.fired],
                    }
                ],
            }
        )
    test_file = write_yaml(
        tmp_path / "alerts_test.yaml",
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests},
    )
    output = run_promtool("test", "rules", str(test_file), cwd=tmp_path)
    assert "SUCCESS" in output


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.fired], ids=lambda s: s.id)
def test_firing_scenario_is_not_vacuous(scenario: Scenario, tmp_path: Path) -> None:
    """Guard against a scenario that passes because exp_alerts matches nothing: expecting no
    alert where one fires must make promtool fail."""
    rules_file(tmp_path)
    test_file = write_yaml(
        tmp_path / "alerts_test.yaml",
        {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": scenario.interval,
                    "input_series": scenario.series,
                    "alert_rule_test": [
                        {"eval_time": scenario.eval_time, "alertname": scenario.alert}
                    ],
                }
            ],
        },
    )
    with pytest.raises(AssertionError, match="FAILED"):
        run_promtool("test", "rules", str(test_file), cwd=tmp_path)
