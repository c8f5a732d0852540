"""Shared helpers of the governance tests: members with real keys, signed documents, times."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import (
    SignedDocument,
    Signer,
    sign_document,
    verify_document,
)
from consortium_node.identity.certs import (
    certificate_der,
    certificate_pem,
    self_signed_certificate,
)
from consortium_node.identity.keys import KeyKind, PrivateKey, generate_key, member_id_of

CONSORTIUM = "demo"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MEASUREMENT = "ab" * 32
OTHER_MEASUREMENT = "cd" * 32
NODE_ID = "0f" * 32
PROPOSAL_ID = "ab12" * 16


@dataclass(frozen=True)
class Member:
    """A member's key and self-signed certificate, as a member would hold them."""

    name: str
    key: PrivateKey
    certificate_pem: str
    member_id: str

    def signer(self, role: str = "governor", status: str = "Active") -> Signer:
        return Signer(self.member_id, self.certificate_pem, role, status)

    def sign(self, payload: Mapping[str, Any]) -> bytes:
        return sign_document(self.key, self.certificate_pem, payload)


@cache
def member(name: str, kind: KeyKind = "p256") -> Member:
    """The member called ``name`` (one key and certificate per name for the whole session)."""
    key = generate_key(kind)
    cert = self_signed_certificate(key, name)
    return Member(name, key, certificate_pem(cert), member_id_of(certificate_der(cert)))


@dataclass(frozen=True)
class Cast:
    """The members of the documents tests; ``removed`` has a key but is not in ``members``."""

    gov_p256: Member
    gov_ed25519: Member
    user: Member
    operator: Member
    newcomer: Member  # a governor proposed and added, not yet acknowledged (Accepted)
    removed: Member

    @property
    def members(self) -> dict[str, Signer]:
        return {
            self.gov_p256.member_id: self.gov_p256.signer("governor", "Active"),
            self.gov_ed25519.member_id: self.gov_ed25519.signer("governor", "Active"),
            self.user.member_id: self.user.signer("user", "Active"),
            self.operator.member_id: self.operator.signer("operator", "Active"),
            self.newcomer.member_id: self.newcomer.signer("governor", "Accepted"),
        }


@cache
def cast() -> Cast:
    return Cast(
        gov_p256=member("gov-p256", "p256"),
        gov_ed25519=member("gov-ed25519", "ed25519"),
        user=member("user", "p256"),
        operator=member("operator", "ed25519"),
        newcomer=member("newcomer", "p256"),
        removed=member("removed", "p256"),
    )


def governors(n: int) -> list[Member]:
    """``n`` Active governors (P-256), the same ones on every call."""
    return [member(f"governor-{i}") for i in range(n)]


def signers_of(people: list[Member]) -> dict[str, Signer]:
    return {m.member_id: m.signer("governor", "Active") for m in people}


# -- payloads ---------------------------------------------------------------------------------


def proposal_payload(
    actions: list[dict[str, Any]], created_at: datetime = T0, consortium: str = CONSORTIUM
) -> dict[str, Any]:
    return {
        "type": "proposal",
        "consortium": consortium,
        "created_at": rfc3339(created_at),
        "actions": actions,
    }


def ballot_payload(
    proposal_id: str = PROPOSAL_ID, vote: str = "approve", consortium: str = CONSORTIUM
) -> dict[str, Any]:
    return {"type": "ballot", "consortium": consortium, "proposal_id": proposal_id, "vote": vote}


def withdrawal_payload(
    proposal_id: str = PROPOSAL_ID, consortium: str = CONSORTIUM
) -> dict[str, Any]:
    return {"type": "withdrawal", "consortium": consortium, "proposal_id": proposal_id}


def ack_payload(member_id: str, consortium: str = CONSORTIUM) -> dict[str, Any]:
    return {"type": "ack", "consortium": consortium, "member_id": member_id}


def action(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


def add_measurement(measurement: str = MEASUREMENT) -> dict[str, Any]:
    return action("add_measurement", measurement=measurement)


# -- signed and verified documents ------------------------------------------------------------


def signed(
    signer: Member, payload: Mapping[str, Any], members: Mapping[str, Signer]
) -> SignedDocument:
    """``payload`` signed by ``signer`` and verified against ``members`` (as a node would)."""
    return verify_document(signer.sign(payload), str(payload["type"]), CONSORTIUM, members)


def at(seconds: float = 0, *, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=seconds)
