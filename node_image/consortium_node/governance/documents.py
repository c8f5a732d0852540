"""Signed governance documents: proposals, ballots, withdrawals and acks.

Each is a COSE_Sign1 (``identity/cose.py``) signed by a member's key, with:

* protected header ``kid`` = the 32 bytes of the signer's member_id (SHA-256 of the member
  certificate's DER), so a node finds the certificate to verify with, and
* an embedded payload that is **canonical JSON** (``common/canonical.py``; a payload in any
  other encoding is refused, so one document has one byte form and one id)::

    proposal   {"type": "proposal", "consortium": C, "created_at": RFC 3339,
                "actions": [{"name": …, "args": {…}}, …]}
    ballot     {"type": "ballot", "consortium": C, "proposal_id": ID, "vote": "approve"|"reject"}
    withdrawal {"type": "withdrawal", "consortium": C, "proposal_id": ID}
    ack        {"type": "ack", "consortium": C, "member_id": M}
    recovery_share {"type": "recovery_share", "consortium": C, "epoch": E, "node_id": N,
                    "share": base64(the 33-byte share wrapped to recovery node N's attested
                                    key: ``recovery.ceremony.seal_submission``)}

A document's id is the lowercase hex SHA-256 of its whole envelope; a proposal's id is the
proposal_id ballots refer to. Ballots must come from an Active governor; proposals and
withdrawals from an Active governor or the Active ``operator`` member (so the Kubernetes
operator can put a Member CR or a code upgrade to the members: proposing decides nothing, only
governors' ballots or the members' own constitution do); an ack from the member it names,
while that member is Accepted (not yet Active), as in CCF. The ``consortium`` field stops a
document signed for one consortium from being replayed into another that shares a member.
A recovery share (``consortium_node.recovery``) comes from an Active governor: only governors
are recovery members; it names the recovery record (``epoch``) it is a share of, and is sent
only to a recovery node, over TLS, once the member decrypted it on its own machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from consortium_node.common import bounded_json
from consortium_node.common.canonical import canonical_json
from consortium_node.governance.actions import is_sha256_hex
from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.identity.cose import decode_sign1, sign1, verify_sign1
from consortium_node.identity.errors import CoseError, IdentityError
from consortium_node.identity.keys import PrivateKey, member_id_of

KINDS = ("proposal", "ballot", "withdrawal", "ack", "recovery_share")
VOTES = ("approve", "reject")
FIELDS = {
    "proposal": {"type", "consortium", "created_at", "actions"},
    "ballot": {"type", "consortium", "proposal_id", "vote"},
    "withdrawal": {"type", "consortium", "proposal_id"},
    "ack": {"type", "consortium", "member_id"},
    "recovery_share": {"type", "consortium", "epoch", "node_id", "share"},
}
MAX_DOCUMENT_BYTES = 256 * 1024
SIGNER_ROLES = {
    "proposal": ("governor", "operator"),
    "withdrawal": ("governor", "operator"),  # only ever the proposer's own (proposals.py)
    "ballot": ("governor",),
    "recovery_share": ("governor",),
}
WHO = {"governor": "governors", "operator": "the operator"}


@dataclass(frozen=True)
class Signer:
    """What the ledger records of a member: enough to verify and authorise a signature."""

    member_id: str
    certificate_pem: str
    role: str  # governor | user | operator
    status: str  # Accepted | Active


@dataclass(frozen=True)
class SignedDocument:
    kind: str
    signer: str  # member_id
    payload: dict[str, Any]
    envelope: bytes
    document_id: str


def document_id(envelope: bytes) -> str:
    return hashlib.sha256(envelope).hexdigest()


def sign_document(key: PrivateKey, certificate_pem: str, payload: Mapping[str, Any]) -> bytes:
    """Sign ``payload`` (canonical JSON) as the member whose certificate is given."""
    if payload.get("type") not in KINDS:
        raise GovernanceError("type", f"expected one of {list(KINDS)}")
    member_id = member_id_of(certificate_der(load_certificate(certificate_pem)))
    return sign1(key, canonical_json(dict(payload)), kid=bytes.fromhex(member_id))


def _signer(envelope: bytes, members: Mapping[str, Signer]) -> Signer:
    try:
        kid = decode_sign1(envelope).kid
    except CoseError as exc:  # malformed, like an oversize one: not a signature question
        raise GovernanceError("document", f"not a COSE_Sign1: {exc}") from exc
    if kid is None or len(kid) != 32:
        raise SignatureRefusedError("document.kid", "expected the signer's 32-byte member_id")
    signer = members.get(kid.hex())
    if signer is None:
        raise SignatureRefusedError("document.kid", f"{kid.hex()} is not a member")
    return signer


def _payload(raw: bytes, kind: str, consortium: str) -> dict[str, Any]:
    try:  # the node's one bounded JSON loader: a signed document is still untrusted input
        payload = bounded_json.loads(raw, root="payload")
    except bounded_json.BoundedJSONError as exc:
        raise GovernanceError(exc.path, exc.reason) from exc
    if not isinstance(payload, dict):
        raise GovernanceError("payload", "expected a JSON object")
    try:
        canonical = canonical_json(payload)
    except ValueError as exc:
        raise GovernanceError("payload", str(exc)) from exc
    if canonical != raw:
        raise GovernanceError("payload", "must be canonical JSON (sorted keys, no spaces)")
    if payload.get("type") != kind:
        raise GovernanceError("payload.type", f"expected {kind!r}, got {payload.get('type')!r}")
    if set(payload) != FIELDS[kind]:
        extra = sorted(set(payload) ^ FIELDS[kind])
        raise GovernanceError(f"payload.{extra[0]}", f"a {kind} has exactly {sorted(FIELDS[kind])}")
    if payload["consortium"] != consortium:
        raise GovernanceError(
            "payload.consortium", f"signed for {payload['consortium']!r}, this is {consortium!r}"
        )
    return payload


def verify_document(
    envelope: bytes, kind: str, consortium: str, members: Mapping[str, Signer]
) -> SignedDocument:
    """Check who signed ``envelope`` and that they may; parse its payload.

    Raises SignatureRefusedError when the signature is bad or the signer may not sign this
    kind of document, GovernanceError (naming the field) when the payload is malformed.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if len(envelope) > MAX_DOCUMENT_BYTES:
        raise GovernanceError("document", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    signer = _signer(envelope, members)
    try:
        public = load_certificate(signer.certificate_pem).public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise SignatureRefusedError("document.kid", "the member's key is not P-256/Ed25519")
        message = verify_sign1(envelope, public)
    except IdentityError as exc:
        raise SignatureRefusedError("document.signature", str(exc)) from exc
    # Who may sign comes before what was signed: a refused signer learns nothing more.
    if kind == "ack":
        if signer.status != "Accepted":
            raise SignatureRefusedError("document.kid", f"member is {signer.status}, not Accepted")
    else:
        if signer.status != "Active":
            raise SignatureRefusedError(
                "document.kid", f"member {signer.member_id[:16]}… is {signer.status}, not Active"
            )
        if signer.role not in SIGNER_ROLES[kind]:
            raise SignatureRefusedError(
                "document.kid",
                f"only {' and '.join(WHO[r] for r in SIGNER_ROLES[kind])} sign a {kind}; "
                f"this member is a {signer.role}",
            )
    payload = _payload(message.payload, kind, consortium)
    if kind == "ack" and payload["member_id"] != signer.member_id:
        raise SignatureRefusedError("payload.member_id", "a member acknowledges only itself")
    if kind in ("ballot", "withdrawal") and not is_sha256_hex(payload["proposal_id"]):
        raise GovernanceError("payload.proposal_id", "expected 64 lowercase hex digits")
    if kind == "ballot" and payload["vote"] not in VOTES:
        raise GovernanceError("payload.vote", f"expected one of {list(VOTES)}")
    if kind == "recovery_share":
        epoch = payload["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise GovernanceError("payload.epoch", "expected the recovery record's epoch (≥ 1)")
        if not isinstance(payload["share"], str):
            raise GovernanceError("payload.share", "expected the wrapped share, base64")
        if not is_sha256_hex(payload["node_id"]):
            raise GovernanceError("payload.node_id", "expected the recovery node's id (64 hex)")
    return SignedDocument(kind, signer.member_id, payload, bytes(envelope), document_id(envelope))
