"""The recovery node's share collector (``recovery.ceremony``) and the signed document a share
travels in: k valid shares open the secrets; anything else is refused by name and counts for
nothing."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.governance.documents import sign_document, verify_document
from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.identity.keys import generate_key
from consortium_node.recovery.ceremony import (
    ShareCollector,
    open_submission,
    seal_submission,
    submission_context,
)
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


def secrets_of(collector: ShareCollector) -> dict[int, bytes] | None:
    """``collector.secrets``, read through a call: mypy would otherwise keep a ``None`` it saw
    asserted across later ``submit`` calls and call the rest of a test unreachable."""
    return collector.secrets


def refused(collector: ShareCollector, member_id: str, epoch: int, share: str) -> str:
    with pytest.raises(RecoveryError) as caught:
        collector.submit(member_id, epoch, share)
    return caught.value.reason


def test_the_threshold_th_valid_share_opens_every_secret() -> None:
    collector = ShareCollector(RECORD, "demo")
    first = collector.submit(A, 4, b64(A))
    assert not first.complete and secrets_of(collector) is None
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
    body = {"type": "recovery_share", "consortium": "demo", "epoch": 4, "node_id": "ab" * 32,
            "share": "AAAA", **payload}  # fmt: skip
    return sign_document(who.key, who.certificate_pem, body)


def test_a_share_travels_in_a_document_signed_by_a_governor() -> None:
    doc = verify_document(share_document(GOVERNOR), "recovery_share", "demo", SIGNERS)
    assert doc.signer == GOVERNOR.member_id and doc.payload["epoch"] == 4
    with pytest.raises(SignatureRefusedError):
        verify_document(share_document(USER), "recovery_share", "demo", SIGNERS)
    for bad in ({"epoch": 0}, {"epoch": "4"}, {"share": 12}, {"node_id": "AB" * 32}):
        with pytest.raises(GovernanceError):
            verify_document(share_document(GOVERNOR, **bad), "recovery_share", "demo", SIGNERS)
    with pytest.raises(GovernanceError, match="signed for"):
        verify_document(share_document(GOVERNOR), "recovery_share", "other", SIGNERS)


# ------------------------------------------------------------------ a share sealed in transit
def _p256() -> ec.EllipticCurvePrivateKey:
    key = generate_key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


NODE_KEY, OTHER_NODE_KEY = _p256(), _p256()
NODE_ID = "ab" * 32
SEALED_FOR: dict[str, Any] = {"consortium": "demo", "epoch": 4, "member_id": A, "node_id": NODE_ID}


def _share(member_id: str) -> Share:
    return open_share(RECORD, "demo", member_id, KEYS[member_id])


def sealed(member_id: str = A) -> str:
    return seal_submission(
        NODE_KEY.public_key(), _share(member_id), **{**SEALED_FOR, "member_id": member_id}
    )


def test_a_sealed_share_opens_on_its_node_and_counts() -> None:
    submission = sealed(A)
    assert open_submission(NODE_KEY, submission, **SEALED_FOR) == b64(A)
    blob = base64.b64decode(submission, validate=True)
    assert _share(A).to_bytes() not in blob and _share(A).value not in blob  # never in clear
    assert sealed(A) != submission  # a fresh ephemeral key each time
    collector = ShareCollector(RECORD, "demo")
    collector.submit(A, 4, open_submission(NODE_KEY, submission, **SEALED_FOR))
    opened_c = open_submission(NODE_KEY, sealed(C), **{**SEALED_FOR, "member_id": C})
    assert collector.submit(C, 4, opened_c).complete and collector.secrets == SECRETS


@pytest.mark.parametrize(
    ("key", "changes", "submission"),
    [
        pytest.param(OTHER_NODE_KEY, {}, None, id="another-node-key"),
        pytest.param(NODE_KEY, {"epoch": 5}, None, id="another-epoch"),
        pytest.param(NODE_KEY, {"member_id": B}, None, id="another-member"),
        pytest.param(NODE_KEY, {"node_id": "cd" * 32}, None, id="another-node-id"),
        pytest.param(NODE_KEY, {"consortium": "other"}, None, id="another-consortium"),
        pytest.param(NODE_KEY, {}, "not base64!", id="not-base64"),
        pytest.param(NODE_KEY, {}, "", id="empty"),
        pytest.param(NODE_KEY, {}, "AAAA", id="too-short"),
        pytest.param(NODE_KEY, {}, b64(A), id="a-share-in-clear"),
    ],
)
def test_a_submission_not_sealed_for_this_node_and_context_is_refused(
    key: ec.EllipticCurvePrivateKey, changes: dict[str, Any], submission: str | None
) -> None:
    text = sealed(A) if submission is None else submission
    with pytest.raises(RecoveryError) as caught:
        open_submission(key, text, **{**SEALED_FOR, **changes})
    assert caught.value.reason == "ShareNotForThisNode"


def test_a_tampered_submission_is_refused() -> None:
    blob = bytearray(base64.b64decode(sealed(A)))
    blob[-1] ^= 0x01
    with pytest.raises(RecoveryError) as caught:
        open_submission(NODE_KEY, base64.b64encode(bytes(blob)).decode(), **SEALED_FOR)
    assert caught.value.reason == "ShareNotForThisNode"


def test_the_submission_context_cannot_be_read_two_ways() -> None:
    """Member and node ids are length-prefixed: moving a character from one to the other
    makes another context."""
    assert submission_context("d", 1, "a:b", "c") != submission_context("d", 1, "a", "b:c")
    assert submission_context("d", 1, "ab", "c") != submission_context("d", 1, "a", "bc")
