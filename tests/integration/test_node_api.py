"""The node API on a real process: behaviour, authentication and bad input."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from consortium_node.attestation import Policy
from consortium_node.attestation.insecure_virtual import InsecureVirtualVerifier
from consortium_node.identity import keys
from consortium_node.identity.certs import load_certificate
from consortium_node.identity.trusted_list import NodeStatus, verify_trusted_list
from consortium_node.ledger.receipt import verify_receipt
from tests.integration.conftest import Consortium
from tests.support.wait import wait_for


def write(c: Consortium, writes: dict[str, Any], n: int = 1) -> list[str]:
    status, body = c.node.post_json(
        "/app/transactions", {"transactions": [{"writes": writes}] * n}, c.user
    )
    assert status == 200, body
    return [t["txid"] for t in body["transactions"]]


def receipt(c: Consortium, txid: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body = c.node.get(f"/app/receipt?txid={txid}", c.user)
        assert status in (200, 202), body
        return body if status == 200 else None

    result: dict[str, Any] = wait_for(f"receipt of {txid}", ready, 10, interval=0.05)
    return result


def service_cert(c: Consortium) -> Any:
    return load_certificate(c.node.service_cert.read_bytes())


def test_state_reports_a_trusted_primary(consortium: Consortium) -> None:
    status, state = consortium.node.get("/node/state")
    assert status == 200
    assert state["role"] == "primary" and state["status"] == "Trusted"
    assert state["platform"] == "insecure-virtual"
    cert = service_cert(consortium)
    assert (
        state["service_certificate_sha256"]
        == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    )
    assert state["commit_index"] >= 2 and state["trusted_list_version"] >= 1


def test_quote_binds_node_key_and_nonce(consortium: Consortium) -> None:
    nonce = bytes(range(32))
    status, body = consortium.node.get(f"/node/quote?nonce={nonce.hex()}")
    assert status == 200
    public_der = keys.public_key_der(keys.load_public_key(body["public_key"].encode()))
    assert hashlib.sha256(public_der).hexdigest() == body["node_id"]
    _, state = consortium.node.get("/node/state")
    verifier = InsecureVirtualVerifier(
        (consortium.workdir / "platform/platform-root.pem").read_bytes()
    )
    policy = Policy(
        allowed_measurements=frozenset({state["measurement"]}),
        allowed_host_data=frozenset({state["host_data"]}),
    )
    result = verifier.verify(body["quote"], public_key_der=public_der, nonce=nonce, policy=policy)
    assert result.ok, result.detail
    other = verifier.verify(
        body["quote"], public_key_der=public_der, nonce=b"x" * 32, policy=policy
    )
    assert not other.ok and other.reason is not None and other.reason.value == "NonceMismatch"


def test_trusted_list_verifies_with_only_the_service_certificate(consortium: Consortium) -> None:
    status, envelope, headers = consortium.node.request("GET", "/node/trusted-list")
    assert status == 200 and headers["Content-Type"] == "application/cose"
    lst = verify_trusted_list(envelope, service_cert(consortium), consortium="test")
    _, state = consortium.node.get("/node/state")
    assert lst.version == state["trusted_list_version"]
    (own,) = lst.nodes
    assert own.node_id == state["node_id"] and own.status is NodeStatus.TRUSTED
    _, payload = consortium.node.get("/node/trusted-list?format=json")
    assert payload["version"] == lst.version


def test_write_read_and_receipt_verified_offline(consortium: Consortium) -> None:
    (txid,) = write(consortium, {"colour": "green", "count": 3})
    status, body = consortium.node.get("/app/kv/colour", consortium.user)
    assert status == 200 and body["value"] == "green" and body["txid"] == txid
    assert int(body["commit"]["commit_index"]) >= int(txid.split(".")[1])
    rec = receipt(consortium, txid)
    verified = verify_receipt(rec, service_cert(consortium))
    assert str(verified.txid) == txid
    status, tx = consortium.node.get(f"/app/transaction?txid={txid}", consortium.member)
    assert status == 200 and tx["writes"] == {"app": {"colour": "green", "count": 3}}


def test_batch_gets_consecutive_txids_and_delete(consortium: Consortium) -> None:
    txids = write(consortium, {"k": "v"}, n=100)
    indices = [int(t.split(".")[1]) for t in txids]
    assert indices == list(range(indices[0], indices[0] + 100))
    write(consortium, {"k": None})
    status, body = consortium.node.get("/app/kv/k", consortium.user)
    assert status == 404 and body["error"]["field"] == "key"


def commit_index(c: Consortium) -> int:
    return int(c.node.get("/node/commit")[1]["commit_index"])


def quiescent_commit_index(c: Consortium) -> int:
    """The commit index once the last signature covers everything (no write pending)."""

    def settled() -> int | None:
        state = c.node.get("/node/state")[1]
        return (
            state["commit_index"] if state["last_signed_index"] == state["commit_index"] else None
        )

    return int(
        wait_for("the last signature to cover every transaction", settled, 10, interval=0.05)
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "/app/transactions", b"{not json", 400, "body"),
        ("POST", "/app/transactions", b'{"transactions": [], "extra": 1}', 400, "extra"),
        (
            "POST",
            "/app/transactions",
            b'{"transactions": [{"writes": {"a": 1}, "b": 2}]}',
            400,
            "transactions[0].b",
        ),
        (
            "POST",
            "/app/transactions",
            b'{"transactions": [{"writes": 5}]}',
            400,
            "transactions[0].writes",
        ),
        (
            "POST",
            "/app/transactions",
            b'{"transactions": [{"writes": {"a": "' + b"x" * 2_000_000 + b'"}}]}',
            413,
            "body",
        ),
        ("GET", "/node/quote?nonce=xyz", None, 400, "nonce"),
        ("GET", "/node/quote", None, 400, "nonce"),
        ("GET", "/app/receipt?txid=banana", None, 400, "txid"),
        ("GET", "/app/receipt?txid=1.999999", None, 404, "txid"),
        ("GET", "/app/receipt?txid=77.2", None, 404, "txid"),
        ("GET", "/app/transaction?txid=1.999999", None, 404, "txid"),
        ("GET", "/app/kv/never-written", None, 404, "key"),
        ("GET", "/node/state?verbose=1", None, 400, "verbose"),
        ("GET", "/no/such/route", None, 404, None),
        ("DELETE", "/node/state", None, 405, None),
    ],
)
def test_bad_input_is_a_json_4xx_and_changes_nothing(
    consortium: Consortium,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    field: str | None,
) -> None:
    before = quiescent_commit_index(consortium)
    got, raw, headers = consortium.node.request(
        method, path, body, consortium.user, {"Content-Type": "application/json"}
    )
    assert got == status, raw[:300]
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert error["reason"]
    assert error.get("field") == field
    assert commit_index(consortium) == before


def test_app_endpoints_need_a_registered_client_certificate(consortium: Consortium) -> None:
    status, body = consortium.node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"a": "1"}}]}, None
    )
    assert status == 401 and body["error"]["field"] == "client_certificate"
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        consortium.node.post_json(
            "/app/transactions", {"transactions": [{"writes": {"a": "1"}}]}, consortium.stranger
        )


def test_operator_identity_keeps_the_network_running_but_never_touches_app_data(
    consortium: Consortium,
) -> None:
    c = consortium
    txid = write(c, {"secret": "for members only"})[0]
    for method, path in (
        ("POST", "/app/transactions"),
        ("GET", "/app/kv/secret"),
        ("GET", f"/app/receipt?txid={txid}"),
        ("GET", f"/app/transaction?txid={txid}"),
    ):
        if method == "POST":
            status, body = c.node.post_json(
                path, {"transactions": [{"writes": {"x": "1"}}]}, c.operator
            )
        else:
            status, body = c.node.get(path, c.operator)
        assert status == 403, (path, body)
        assert body["error"]["field"] == "client_certificate"
        assert "not the operator identity" in body["error"]["reason"]
    status, body = c.node.get("/app/kv/x", c.user)
    assert status == 404, body  # the refused write changed nothing
    # What it is for: asking for a re-attestation round. Trusting nodes is for governance
    # proposals, which only governors sign (tests/integration/test_governance.py).
    status, body = c.node.post_json("/node/reattest", {}, c.operator)
    assert status == 200, body


def test_member_with_p256_and_user_with_ed25519_can_both_write(consortium: Consortium) -> None:
    status, _ = consortium.node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"by": "member"}}]}, consortium.member
    )
    assert status == 200
    assert write(consortium, {"by": "user"})


def test_health_and_readiness(consortium: Consortium) -> None:
    assert consortium.node.get("/healthz")[0] == 200
    status, body = consortium.node.get("/readyz")
    assert status == 200 and body["role"] == "primary"
