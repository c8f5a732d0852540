"""Signed governance documents: who may sign what, and every way a document is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.governance.documents import (
    MAX_DOCUMENT_BYTES,
    SignedDocument,
    sign_document,
    verify_document,
)
from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.identity.cose import decode_sign1, sign1
from tests.unit.governance.support import (
    CONSORTIUM,
    PROPOSAL_ID,
    Cast,
    Member,
    ack_payload,
    add_measurement,
    ballot_payload,
    cast,
    proposal_payload,
    withdrawal_payload,
)


@pytest.fixture(scope="module")
def people() -> Cast:
    return cast()


def raw_signed(signer: Member, payload: bytes, kid_of: Member | None = None) -> bytes:
    """``payload`` bytes signed as they are by ``signer``'s key, kid naming ``kid_of``."""
    kid = bytes.fromhex((kid_of or signer).member_id)
    return sign1(signer.key, payload, kid=kid)


def _ballot_bytes_with_spaces() -> bytes:
    return (
        b'{"consortium": "demo", "proposal_id": "' + PROPOSAL_ID.encode() + b'", '
        b'"type": "ballot", "vote": "approve"}'
    )


# -- accepted documents -----------------------------------------------------------------------

Pick = Callable[[Cast], Member]
Payload = Callable[[Cast], dict[str, Any]]

VALID: list[Any] = [
    pytest.param(
        "proposal",
        lambda c: c.gov_p256,
        lambda c: proposal_payload([add_measurement()]),
        id="proposal-governor-p256",
    ),
    pytest.param(
        "proposal",
        lambda c: c.gov_ed25519,
        lambda c: proposal_payload([add_measurement()]),
        id="proposal-governor-ed25519",
    ),
    pytest.param(
        "ballot", lambda c: c.gov_p256, lambda c: ballot_payload(), id="ballot-approve-p256"
    ),
    pytest.param(
        "ballot",
        lambda c: c.gov_ed25519,
        lambda c: ballot_payload(vote="reject"),
        id="ballot-reject-ed25519",
    ),
    pytest.param(
        "withdrawal", lambda c: c.gov_ed25519, lambda c: withdrawal_payload(), id="withdrawal"
    ),
    pytest.param(
        "ack",
        lambda c: c.newcomer,
        lambda c: ack_payload(c.newcomer.member_id),
        id="ack-accepted-member-names-itself",
    ),
    # The operator member may put things to the members (never vote on them).
    pytest.param(
        "proposal",
        lambda c: c.operator,
        lambda c: proposal_payload([add_measurement()]),
        id="proposal-operator",
    ),
    pytest.param(
        "withdrawal", lambda c: c.operator, lambda c: withdrawal_payload(), id="withdrawal-operator"
    ),
]


@pytest.mark.parametrize(("kind", "pick", "payload"), VALID)
def test_valid_document(people: Cast, kind: str, pick: Pick, payload: Payload) -> None:
    signer, body = pick(people), payload(people)
    envelope = signer.sign(body)
    doc = verify_document(envelope, kind, CONSORTIUM, people.members)
    assert doc == SignedDocument(
        kind=kind,
        signer=signer.member_id,
        payload=body,
        envelope=envelope,
        document_id=hashlib.sha256(envelope).hexdigest(),
    )
    message = decode_sign1(envelope)
    assert message.kid == bytes.fromhex(signer.member_id)
    assert message.payload == canonical_json(body)


def test_document_id_differs_per_envelope(people: Cast) -> None:
    """Two signatures of one ballot (ECDSA is randomised) are two documents."""
    first = people.gov_p256.sign(ballot_payload())
    second = people.gov_p256.sign(ballot_payload())
    assert first != second
    ids = {
        verify_document(e, "ballot", CONSORTIUM, people.members).document_id
        for e in (first, second)
    }
    assert len(ids) == 2


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"consortium": CONSORTIUM}, id="no-type"),
        pytest.param({"type": "vote", "consortium": CONSORTIUM}, id="unknown-type"),
    ],
)
def test_sign_document_needs_a_known_type(people: Cast, payload: dict[str, Any]) -> None:
    with pytest.raises(GovernanceError) as caught:
        sign_document(people.gov_p256.key, people.gov_p256.certificate_pem, payload)
    assert caught.value.field == "type"


def test_unknown_kind_is_a_programming_error(people: Cast) -> None:
    with pytest.raises(ValueError, match="kind"):
        verify_document(people.gov_p256.sign(ballot_payload()), "vote", CONSORTIUM, people.members)


# -- refused documents ------------------------------------------------------------------------

Build = Callable[[Cast], bytes]
SIG = SignatureRefusedError
GOV = GovernanceError


def _flip_last_byte(envelope: bytes) -> bytes:
    return envelope[:-1] + bytes([envelope[-1] ^ 0x01])


def _oversize(c: Cast) -> bytes:
    return c.gov_p256.sign(ballot_payload(consortium="x" * MAX_DOCUMENT_BYTES))


REFUSED: list[Any] = [
    # Who signed it, and with what.
    pytest.param(
        lambda c: c.removed.sign(ballot_payload()), "ballot", SIG, "document.kid", id="removed"
    ),
    pytest.param(
        lambda c: raw_signed(c.user, canonical_json(ballot_payload()), kid_of=c.gov_p256),
        "ballot",
        SIG,
        "document.signature",
        id="forged-same-alg",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_ed25519, canonical_json(ballot_payload()), kid_of=c.gov_p256),
        "ballot",
        SIG,
        "document.signature",
        id="forged-other-alg",
    ),
    pytest.param(
        lambda c: raw_signed(c.removed, canonical_json(ballot_payload()), kid_of=c.gov_ed25519),
        "ballot",
        SIG,
        "document.signature",
        id="removed-forges-ed25519-governor",
    ),
    pytest.param(
        lambda c: _flip_last_byte(c.gov_p256.sign(ballot_payload())),
        "ballot",
        SIG,
        "document.signature",
        id="tampered-signature",
    ),
    pytest.param(
        lambda c: c.gov_ed25519.sign(ballot_payload()).replace(b'"approve"', b'"APPROVE"'),
        "ballot",
        SIG,
        "document.signature",
        id="tampered-payload",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload())[:-1],
        "ballot",
        GOV,
        "document",
        id="truncated",
    ),
    # A malformed envelope is a plain GovernanceError, like an oversize one: no signer to refuse.
    pytest.param(lambda c: b"not a COSE envelope", "ballot", GOV, "document", id="not-cbor"),
    pytest.param(lambda c: b"", "ballot", GOV, "document", id="empty"),
    pytest.param(lambda c: cbor2.dumps(ballot_payload()), "ballot", GOV, "document", id="cbor-map"),
    pytest.param(
        lambda c: cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"{}", b""])),
        "ballot",
        GOV,
        "document",
        id="cose-mac0-tag",
    ),
    pytest.param(
        lambda c: sign1(c.gov_p256.key, canonical_json(ballot_payload()), kid=b"\x01" * 16),
        "ballot",
        SIG,
        "document.kid",
        id="short-kid",
    ),
    pytest.param(_oversize, "ballot", GOV, "document", id="oversize"),
    pytest.param(
        lambda c: b"\x00" * (MAX_DOCUMENT_BYTES + 1), "ballot", GOV, "document", id="oversize-junk"
    ),
    # Whether the signer may sign it.
    pytest.param(
        lambda c: c.user.sign(proposal_payload([add_measurement()])),
        "proposal",
        SIG,
        "document.kid",
        id="user-proposal",
    ),
    pytest.param(
        lambda c: c.user.sign(ballot_payload()), "ballot", SIG, "document.kid", id="user-ballot"
    ),
    pytest.param(
        lambda c: c.operator.sign(ballot_payload()),
        "ballot",
        SIG,
        "document.kid",
        id="operator-ballot",
    ),
    pytest.param(
        lambda c: c.newcomer.sign(ballot_payload()),
        "ballot",
        SIG,
        "document.kid",
        id="accepted-member-votes",
    ),
    pytest.param(
        lambda c: c.newcomer.sign(proposal_payload([add_measurement()])),
        "proposal",
        SIG,
        "document.kid",
        id="accepted-member-proposes",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ack_payload(c.gov_p256.member_id)),
        "ack",
        SIG,
        "document.kid",
        id="active-member-acks",
    ),
    pytest.param(
        lambda c: c.newcomer.sign(ack_payload(c.gov_p256.member_id)),
        "ack",
        SIG,
        "payload.member_id",
        id="ack-names-another",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ack_payload(c.newcomer.member_id)),
        "ack",
        SIG,
        "document.kid",  # an Active member has nothing to acknowledge
        id="governor-acks-for-newcomer",
    ),
    # What the payload says.
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload(consortium="other")),
        "ballot",
        GOV,
        "payload.consortium",
        id="wrong-consortium",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload()),
        "withdrawal",
        GOV,
        "payload.type",
        id="ballot-as-withdrawal",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(withdrawal_payload()),
        "ballot",
        GOV,
        "payload.type",
        id="withdrawal-as-ballot",
    ),
    pytest.param(
        lambda c: c.newcomer.sign(ack_payload(c.newcomer.member_id)),
        "proposal",
        SIG,
        "document.kid",  # who may sign is checked before what was signed
        id="ack-as-proposal",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b'{"consortium":"demo"}'),
        "ballot",
        GOV,
        "payload.type",
        id="no-type",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign({**ballot_payload(), "comment": "lgtm"}),
        "ballot",
        GOV,
        "payload.comment",
        id="extra-field",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign({k: v for k, v in ballot_payload().items() if k != "vote"}),
        "ballot",
        GOV,
        "payload.vote",
        id="missing-field",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(
            {k: v for k, v in proposal_payload([]).items() if k != "created_at"}
        ),
        "proposal",
        GOV,
        "payload.created_at",
        id="proposal-missing-created_at",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, _ballot_bytes_with_spaces()),
        "ballot",
        GOV,
        "payload",
        id="non-canonical-spaces",
    ),
    pytest.param(
        lambda c: raw_signed(
            c.gov_p256,
            canonical_json(ballot_payload()).replace(
                b'{"consortium"', b'{"vote":"reject","consortium"', 1
            ),
        ),
        "ballot",
        GOV,
        "payload",
        id="non-canonical-duplicate-key",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b"\xff\xfe not utf-8"),
        "ballot",
        GOV,
        "payload",
        id="not-utf8",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b"approve"), "ballot", GOV, "payload", id="not-json"
    ),
    pytest.param(lambda c: raw_signed(c.gov_p256, b"[]"), "ballot", GOV, "payload", id="array"),
    # The bounded loader's refusals (common/bounded_json.py), named by their JSON path.
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b'{"vote":' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        "ballot",
        GOV,
        "payload.vote" + "[0]" * 63,
        id="nested-10000-deep",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b'{"vote":' + b"7" * 5_000 + b"}"),
        "ballot",
        GOV,
        "payload.vote",
        id="number-5000-digits",
    ),
    pytest.param(
        lambda c: raw_signed(c.gov_p256, b'{"vote":[1,NaN]}'),
        "ballot",
        GOV,
        "payload.vote[1]",
        id="nan",
    ),
    pytest.param(
        lambda c: raw_signed(
            c.gov_p256,
            b'{"consortium":"demo","proposal_id":"' + PROPOSAL_ID.encode() + b'",'
            b'"type":"ballot","vote":1.5}',
        ),
        "ballot",
        GOV,
        "payload",
        id="float",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload(PROPOSAL_ID.upper())),
        "ballot",
        GOV,
        "payload.proposal_id",
        id="proposal_id-uppercase",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload(PROPOSAL_ID[:63])),
        "ballot",
        GOV,
        "payload.proposal_id",
        id="proposal_id-63",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign({**ballot_payload(), "proposal_id": 12}),
        "ballot",
        GOV,
        "payload.proposal_id",
        id="proposal_id-int",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(withdrawal_payload("g" * 64)),
        "withdrawal",
        GOV,
        "payload.proposal_id",
        id="withdrawal-proposal_id-not-hex",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign(ballot_payload(vote="yes")),
        "ballot",
        GOV,
        "payload.vote",
        id="vote-yes",
    ),
    pytest.param(
        lambda c: c.gov_p256.sign({**ballot_payload(), "vote": None}),
        "ballot",
        GOV,
        "payload.vote",
        id="vote-null",
    ),
]


@pytest.mark.parametrize(("build", "kind", "error", "field"), REFUSED)
def test_refused(
    people: Cast, build: Build, kind: str, error: type[GovernanceError], field: str
) -> None:
    envelope = build(people)
    with pytest.raises(GovernanceError) as caught:
        verify_document(envelope, kind, CONSORTIUM, people.members)
    assert type(caught.value) is error, caught.value
    assert caught.value.field == field, caught.value


def test_removed_member_was_valid_while_a_member(people: Cast) -> None:
    """The ``removed`` refusal is about membership, not a bad signature."""
    envelope = people.removed.sign(ballot_payload())
    members = {**people.members, people.removed.member_id: people.removed.signer()}
    doc = verify_document(envelope, "ballot", CONSORTIUM, members)
    assert doc.signer == people.removed.member_id
