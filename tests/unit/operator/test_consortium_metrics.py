"""The operator's per-Consortium gauges: set on every pass, gone with the Consortium.

``consortium_operator_attestation_renew_before_seconds`` is what the expiry alert measures
against, so it must be there from the first pass. The registry is process-wide: the tests use
a namespace of their own and remove what they set.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from consortium_operator.api import metrics
from consortium_operator.consortium.report import publish_metrics
from tests.unit.operator.support import T0

NAMESPACE = "metrics-test"


def renew_before(consortium: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "consortium_operator_attestation_renew_before_seconds",
        {"namespace": NAMESPACE, "consortium": consortium},
    )


def test_a_pass_exports_renew_before_even_before_a_list_exists() -> None:
    attestation = SimpleNamespace(renew_before=timedelta(minutes=1))
    p = SimpleNamespace(
        namespace=NAMESPACE, spec=SimpleNamespace(name="fast", attestation=attestation), now=T0
    )
    try:
        publish_metrics(p, SimpleNamespace(trusted_list=None, published_version=None))
        assert renew_before("fast") == 60.0
    finally:
        metrics.forget(NAMESPACE, "fast")


def test_forget_drops_renew_before_of_that_consortium_only() -> None:
    for name, seconds in (("gone", 60.0), ("kept", 28800.0)):
        metrics.RENEW_BEFORE.labels(NAMESPACE, name).set(seconds)
    try:
        metrics.forget(NAMESPACE, "gone")
        assert renew_before("gone") is None
        assert renew_before("kept") == 28800.0
    finally:
        metrics.forget(NAMESPACE, "kept")
    assert renew_before("kept") is None
