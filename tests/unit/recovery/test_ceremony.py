"""The recovery node's share collector (``recovery.ceremony``) and the signed document a share
travels in: k valid shares open the secrets; anything else is refused by name and counts for
nothing."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.governance.documents import sign_document, verify_document
from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.recovery.ceremony import ShareCollector
from consortium_node.recovery.record import RecoveryError, build_record, open_share
from consortium_node.recovery.shares import KEY_SIZE, Share
from tests.unit.governance.support import Member, member

KEYS = {f"{n:064x}": ec.generate_private_key(ec.SECP256R1()) for n in (1, 2, 3)}
SECRETS = {1: os.urandom(32), 2: os.urandom(32)}
RECORD = build_record("demo", 4, SECRETS, {m: k.public_key() for m, k in KEYS.items()}, 2)
A, B, C = sorted(KEYS)


def b64(member_id: str) -> str:
    share = open_share(RECORD, "demo", member_id, KEYS[member_id])
    return base64.b64encode(share.to_bytes()).decode()


def refused(collector: ShareCollector, member_id: str, epoch: int, share: str) -> str:
    with pytest.raises(RecoveryError) as caught:
        collector.submit(member_id, epoch, share)
    return caught.value.reason


def test_the_threshold_th_valid_share_opens_every_secret() -> None:
    collector = ShareCollector(RECORD, "demo")
    first = collector.submit(A, 4, b64(A))
    assert not first.complete and collector.secrets is None
    assert first.submitted == (A,) and set(first.waiting_for) == {B, C}
    done = collector.submit(C, 4, b64(C))
    assert done.complete and done.to_json()["submitted"] == [A, C]
    assert collector.secrets == SECRETS
    assert refused(collector, B, 4, b64(B)) == "Complete"


def test_shares_that_do_not_count_are_refused_and_change_nothing() -> None:
    collector = ShareCollector(RECORD, "demo")
    collector.submit(A, 4, b64(A))
    outsider = "ee" * 32
    forged = base64.b64encode(Share(2, os.urandom(KEY_SIZE)).to_bytes()).decode()
    assert refused(collector, A, 4, b64(A)) == "AlreadySubmitted"
    assert refused(collector, B, 3, b64(B)) == "ShareForAnotherRecord"
    assert refused(collector, outsider, 4, b64(B)) == "NotARecoveryMember"
    assert refused(collector, B, 4, b64(C)) == "ShareDoesNotMatch"  # another member's share
    assert refused(collector, B, 4, forged) == "ShareDoesNotMatch"
    assert refused(collector, B, 4, "not base64!") == "ShareFormat"
    assert refused(collector, B, 4, base64.b64encode(b"short").decode()) == "ShareFormat"
    progress = collector.progress()
    assert progress.submitted == (A,) and not progress.complete and collector.secrets is None
    assert collector.submit(B, 4, b64(B)).complete  # the real one still counts


GOVERNOR = member("gina", "p256")
USER = member("ursula", "p256")
SIGNERS = {
    GOVERNOR.member_id: GOVERNOR.signer("governor", "Active"),
    USER.member_id: USER.signer("user", "Active"),
}


def share_document(who: Member, **payload: object) -> bytes:
    body = {"type": "recovery_share", "consortium": "demo", "epoch": 4, "share": "AAAA", **payload}
    return sign_document(who.key, who.certificate_pem, body)


def test_a_share_travels_in_a_document_signed_by_a_governor() -> None:
    doc = verify_document(share_document(GOVERNOR), "recovery_share", "demo", SIGNERS)
    assert doc.signer == GOVERNOR.member_id and doc.payload["epoch"] == 4
    with pytest.raises(SignatureRefusedError):
        verify_document(share_document(USER), "recovery_share", "demo", SIGNERS)
    for bad in ({"epoch": 0}, {"epoch": "4"}, {"share": 12}):
        with pytest.raises(GovernanceError):
            verify_document(share_document(GOVERNOR, **bad), "recovery_share", "demo", SIGNERS)
    with pytest.raises(GovernanceError, match="signed for"):
        verify_document(share_document(GOVERNOR), "recovery_share", "other", SIGNERS)
