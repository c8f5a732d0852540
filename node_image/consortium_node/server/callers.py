"""Who is calling, and whether they may: members and users, the operator, other nodes.

Why a module of its own: every route starts by deciding who its caller is from the TLS
client certificate the HTTP layer hands over, and the rules are the consortium's, not
HTTP's, so they live here, in one place:

* members and users present their own certificate; its SHA-256 (the member_id) must be an
  Active member of the ledger (``public:consortium.members``);
* the operator's identity is such a member, with role ``operator``: it may keep the network
  running (retire nodes, ask for re-attestation) but must not read or write application data,
  or anyone who can read its Kubernetes Secret could;
* a write a backup forwards names its member, who is checked again on the primary;
* other nodes present their node certificate (mTLS), checked by ``peers.authenticate_peer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consortium_node.identity import keys
from consortium_node.server.errors import ForbiddenError, UnauthenticatedError

APP_ROLES = ("governor", "user")
APP_ONLY = "members and users read and write application data (not the operator identity)"
NETWORK_ROLES = ("governor", "operator")  # who may retire nodes and ask for re-attestation


@dataclass(frozen=True)
class Member:
    member_id: str
    role: str
    status: str
    certificate_pem: str
    recovery_key_pem: str | None = None  # a recovery member's public key (``recovery``)


def member_calling(members: Mapping[str, Member], certificate_der: bytes | None) -> Member:
    """The Active member or user whose certificate the client presented, or
    UnauthenticatedError (none presented) or ForbiddenError (not an Active member)."""
    if not certificate_der:
        raise UnauthenticatedError(
            "client_certificate",
            "this endpoint needs a TLS client certificate of a member or user",
        )
    member = members.get(keys.member_id_of(certificate_der))
    if member is None or member.status != "Active":
        raise ForbiddenError(
            "client_certificate",
            "the certificate is not an Active member or user of this consortium",
        )
    return member


def require_role(member: Member, roles: tuple[str, ...], what: str) -> Member:
    """``member`` if its role is one of ``roles``; ForbiddenError saying ``only {what}``."""
    if member.role not in roles:
        raise ForbiddenError("client_certificate", f"only {what}")
    return member


def forwarded_member(members: Mapping[str, Member], member_id: str) -> Member:
    """The member a backup forwarded a write for: Active, and one who may write app data."""
    member = members.get(member_id)
    if member is None or member.status != "Active":
        raise ForbiddenError("member_id", "not an Active member or user")
    if member.role not in APP_ROLES:
        raise ForbiddenError("member_id", f"only {APP_ONLY}")
    return member
