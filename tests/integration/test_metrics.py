"""/metrics is valid Prometheus text (checked by the real promtool) with the DESIGN §9 names."""

from __future__ import annotations

import shutil
import subprocess

from tests.integration.conftest import Consortium

EXPECTED = [
    'consortium_node_info{consortium="test"',
    'platform="insecure-virtual"',
    "consortium_commit_index ",
    "consortium_term ",
    'consortium_node_role{role="primary"} 1.0',
    "consortium_transactions_committed_total ",
    "consortium_commit_latency_seconds_bucket",
    "consortium_signature_transactions_total",
    "consortium_trusted_list_version ",
    'consortium_nodes{status="Trusted"} 1.0',
    "consortium_attestation_expiry_seconds{",
    'consortium_attestation_verifications_total{platform="insecure-virtual",reason="",result="ok"}',
    "consortium_http_requests_total{",
    "consortium_ledger_bytes ",
]


def test_metrics_pass_promtool_and_cover_design(consortium: Consortium) -> None:
    consortium.node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"m": "1"}}] * 3}, consortium.user
    )
    status, body, headers = consortium.node.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for needle in EXPECTED:
        assert needle in text, needle
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; scripts/setup-env.sh)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    committed = [
        line
        for line in text.splitlines()
        if line.startswith("consortium_transactions_committed_total ")
    ]
    assert float(committed[0].split()[-1]) >= 3
