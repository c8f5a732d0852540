"""The operator's own checks of what nodes hand it: quotes and signed trusted-node lists.

The nodes do not need these checks (they verify everything themselves); the operator does
them so that what it writes in status and publishes is true, and so that a pod running
unapproved code or a forged list shows up as such to the cluster's users.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.attestation import Policy, platforms
from consortium_node.identity import keys
from consortium_node.identity.certs import verify_node_certificate
from consortium_node.identity.errors import IdentityError, TrustedListError
from consortium_node.identity.trusted_list import TrustedNodeList, verify_trusted_list
from consortium_operator.api.spec import ConsortiumSpec


@dataclass(frozen=True)
class NodeCheck:
    """The operator's own verification of one pod's quote (fresh nonce, platform root)."""

    pod: str
    node_id: str | None
    verified: bool
    reason: str = ""


def policy_for(spec: ConsortiumSpec) -> Policy:
    """What the operator accepts: the spec's measurements and the consortium's host_data."""
    snp = spec.attestation.sev_snp
    return Policy(
        allowed_measurements=frozenset(spec.attestation.measurements),
        allowed_host_data=frozenset(spec.allowed_host_data()),
        platform={} if snp is None else {"sev-snp": snp.policy},
    )


def check_pod(
    pod: str,
    answer: Mapping[str, Any],
    nonce: bytes,
    *,
    endorsements: Mapping[str, bytes],
    spec: ConsortiumSpec,
    tls_certificate_der: bytes | None,
    service_certificate_pem: str | None,
) -> tuple[NodeCheck, str]:
    """Verify a ``/node/quote`` answer; returns the check and the verification reason label.

    Passes only if: the quote verifies for ``nonce`` under the spec's policy, the quoted key
    is the node's (``node_id`` = SHA-256 of it), the key that terminated TLS is that same key,
    and (once the service exists) the TLS certificate was issued by the service.
    """
    try:
        public_pem = str(answer["public_key"]).encode("ascii")
        public_der = keys.public_key_der(keys.load_public_key(public_pem))
        node_id = str(answer["node_id"])
        quote = answer["quote"]
    except (KeyError, ValueError, TypeError, IdentityError) as exc:
        return NodeCheck(pod, None, False, f"Malformed: the quote answer: {exc}"), "Malformed"
    if hashlib.sha256(public_der).hexdigest() != node_id:
        return NodeCheck(pod, None, False, "Malformed: node_id is not SHA-256(key)"), "Malformed"
    registry = platforms.verifier_registry({spec.attestation.platform: endorsements})
    result = registry.verify(quote, public_key_der=public_der, nonce=nonce, policy=policy_for(spec))
    if not result.ok:
        reason = result.reason.value if result.reason else "Unknown"
        return NodeCheck(pod, node_id, False, f"{reason}: {result.detail}"), reason
    if tls_certificate_der is None:
        return NodeCheck(pod, node_id, False, "TLS: no server certificate"), "TlsKeyMismatch"
    try:
        tls_cert = x509.load_der_x509_certificate(tls_certificate_der)
    except ValueError as exc:
        return NodeCheck(
            pod, node_id, False, f"TLS: unreadable certificate: {exc}"
        ), "TlsKeyMismatch"
    if keys.public_key_der(tls_cert.public_key()) != public_der:  # type: ignore[arg-type]
        return (
            NodeCheck(pod, node_id, False, "TLS is terminated by another key than the quoted one"),
            "TlsKeyMismatch",
        )
    if service_certificate_pem is not None:
        try:
            verify_node_certificate(
                tls_cert, x509.load_pem_x509_certificate(service_certificate_pem.encode())
            )
        except Exception as exc:
            return NodeCheck(pod, node_id, False, f"WrongService: {exc}"), "WrongService"
    return NodeCheck(pod, node_id, True), ""


def key_holder(answer: Mapping[str, Any], tls_certificate_der: bytes | None) -> str | None:
    """The node_id claimed in a quote answer, if TLS was terminated with that very key."""
    try:
        public_der = keys.public_key_der(
            keys.load_public_key(str(answer["public_key"]).encode("ascii"))
        )
        tls_cert = x509.load_der_x509_certificate(tls_certificate_der or b"")
        tls_der = keys.public_key_der(tls_cert.public_key())  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, IdentityError):
        return None
    return hashlib.sha256(public_der).hexdigest() if tls_der == public_der else None


def check_list(
    envelope: bytes, service_certificate_pem: str, consortium: str, min_version: int | None
) -> tuple[TrustedNodeList | None, str | None]:
    """The verified list, or None and why (tampered, wrong signer, rollback…)."""
    try:
        lst = verify_trusted_list(
            envelope, service_certificate_pem, consortium=consortium, min_version=min_version
        )
    except TrustedListError as exc:
        return None, f"the trusted-node list was rejected: {exc}"
    return lst, None
