"""A recovered service's endorsement of the identity it replaced (``identity.endorsement``): the
new service key signs the previous certificate and the last transaction recovered under it, and
a verifier walks the chain of such records back from the current certificate."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
from cryptography import x509

from consortium_node.common.canonical import canonical_json
from consortium_node.identity.certs import ServiceIdentity, certificate_pem
from consortium_node.identity.cose import decode_sign1, sign1
from consortium_node.identity.endorsement import (
    ENDORSEMENT_TYPE,
    Endorsement,
    EndorsementError,
    Era,
    certificate_for,
    endorse,
    eras,
    history_record,
    verify_endorsement,
)

CONSORTIUM = "demo"
# Three generations of the same consortium: A replaced by B (recovery 1), B by C (recovery 2).
A, B, C = (ServiceIdentity.create(CONSORTIUM) for _ in range(3))
OUTSIDER = ServiceIdentity.create("x")
BAD_TXIDS = ["0.5", "a.b", "3"]


def record(
    previous: ServiceIdentity,
    new: ServiceIdentity,
    last_txid: str,
    *,
    consortium: str = CONSORTIUM,
    endorsed_txid: str | None = None,
    names: x509.Certificate | None = None,
) -> dict[str, Any]:
    """The history record of ``new`` replacing ``previous`` (with optional inconsistencies)."""
    envelope = endorse(
        new,
        consortium,
        previous.certificate if names is None else names,
        last_txid if endorsed_txid is None else endorsed_txid,
    )
    return history_record(previous.certificate, last_txid, envelope)


A_TO_B = record(A, B, "2.40")
B_TO_C = record(B, C, "4.90")


# ------------------------------------------------------------------ endorse / verify_endorsement
def test_an_endorsement_verifies_and_says_what_was_signed() -> None:
    envelope = endorse(B, CONSORTIUM, A.certificate, "2.40")
    said = verify_endorsement(envelope, B.certificate)
    assert said == Endorsement(
        consortium=CONSORTIUM,
        service_certificate_sha256=B.certificate_sha256,
        previous_service_certificate_sha256=A.certificate_sha256,
        last_txid="2.40",
    )
    assert said.last_index == 40
    message = decode_sign1(envelope)
    assert (message.kid, message.content_type) == (B.kid, "application/json")


@pytest.mark.parametrize("txid", BAD_TXIDS)
def test_endorsing_or_recording_a_bad_txid_is_refused(txid: str) -> None:
    with pytest.raises(EndorsementError, match="is not a txid"):
        endorse(B, CONSORTIUM, A.certificate, txid)
    with pytest.raises(EndorsementError, match="is not a txid"):
        history_record(A.certificate, txid, endorse(B, CONSORTIUM, A.certificate, "2.40"))


def _payload(**changes: Any) -> dict[str, Any]:
    """A valid endorsement payload of B for A, with fields changed (``...`` removes one)."""
    payload = {
        "type": ENDORSEMENT_TYPE,
        "consortium": CONSORTIUM,
        "service_certificate_sha256": B.certificate_sha256,
        "previous_service_certificate_sha256": A.certificate_sha256,
        "last_txid": "2.40",
        **changes,
    }
    return {k: v for k, v in payload.items() if v is not ...}


def _signed_by_b(payload: dict[str, Any]) -> bytes:
    return sign1(B.key, canonical_json(payload), kid=B.kid)


def test_a_hand_built_valid_payload_verifies() -> None:
    """The control for the refusals below: the same construction, unchanged, is accepted."""
    said = verify_endorsement(_signed_by_b(_payload()), B.certificate)
    assert said.previous_service_certificate_sha256 == A.certificate_sha256


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        pytest.param(
            endorse(OUTSIDER, CONSORTIUM, A.certificate, "2.40"),
            "endorsement: .*does not verify",
            id="signed-by-another-service",
        ),
        pytest.param(
            _signed_by_b(_payload(service_certificate_sha256=C.certificate_sha256)),
            f"signed for service certificate {C.certificate_sha256}, not this one",
            id="names-another-service-certificate",
        ),
        pytest.param(
            _signed_by_b(_payload(last_txid=...)), "the payload must have", id="missing-field"
        ),
        pytest.param(_signed_by_b(_payload(extra="x")), "the payload must have", id="extra-field"),
        pytest.param(
            _signed_by_b(_payload(type="trusted_list")), "type 'trusted_list'", id="other-type"
        ),
        pytest.param(
            _signed_by_b(_payload(consortium=7)),
            "every payload field must be a string",
            id="non-string-field",
        ),
        pytest.param(
            sign1(B.key, b"not json", kid=B.kid), "the payload is not JSON", id="not-json"
        ),
        pytest.param(sign1(B.key, b"[1, 2]", kid=B.kid), "the payload must have", id="json-array"),
        *(
            pytest.param(
                _signed_by_b(_payload(last_txid=txid)),
                "endorsement.last_txid: .* is not a txid",
                id=f"last-txid-{txid}",
            )
            for txid in BAD_TXIDS
        ),
    ],
)
def test_verify_endorsement_refuses(envelope: bytes, message: str) -> None:
    with pytest.raises(EndorsementError, match=message):
        verify_endorsement(envelope, B.certificate)


def test_verify_endorsement_checks_against_the_certificate_it_is_given() -> None:
    """B's genuine endorsement does not verify as C's (or A's, the certificate it names)."""
    envelope = endorse(B, CONSORTIUM, A.certificate, "2.40")
    for other in (C, A):
        with pytest.raises(EndorsementError):
            verify_endorsement(envelope, other.certificate)


def test_any_flipped_byte_is_refused() -> None:
    envelope = endorse(B, CONSORTIUM, A.certificate, "2.40")
    for position in range(len(envelope)):
        flipped = (
            envelope[:position] + bytes([envelope[position] ^ 0x01]) + envelope[position + 1 :]
        )
        with pytest.raises(EndorsementError):
            verify_endorsement(flipped, B.certificate)


# ------------------------------------------------------------------------------------ eras
def _summary(chain: list[Era]) -> list[tuple[str, int | None]]:
    return [(certificate_pem(e.certificate), e.last_index) for e in chain]


def test_no_records_is_the_current_era_only() -> None:
    assert eras(C.certificate, []) == [Era(C.certificate, None)]


def test_one_recovery_is_two_eras() -> None:
    chain = eras(B.certificate, [A_TO_B])
    assert _summary(chain) == [(B.certificate_pem, None), (A.certificate_pem, 40)]


@pytest.mark.parametrize("records", list(itertools.permutations([A_TO_B, B_TO_C])))
def test_two_recoveries_chain_back_whatever_the_order(records: tuple[dict[str, Any], ...]) -> None:
    chain = eras(C.certificate, list(records), consortium=CONSORTIUM)
    assert _summary(chain) == [
        (C.certificate_pem, None),
        (B.certificate_pem, 90),
        (A.certificate_pem, 40),
    ]


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = {**base, **changes}
    return {k: v for k, v in changed.items() if v is not ...}


@pytest.mark.parametrize(
    ("current", "records", "message"),
    [
        pytest.param(
            B, [record(A, OUTSIDER, "2.40")], "1 history record.* not endorsed", id="by-nobody"
        ),
        pytest.param(C, [A_TO_B], "1 history record.* not endorsed", id="gap-in-the-chain"),
        pytest.param(
            C,
            [B_TO_C, A_TO_B, record(A, OUTSIDER, "2.40")],
            "appears twice",
            id="a-second-record-for-a-certificate-in-the-chain",
        ),
        pytest.param(C, [B_TO_C, B_TO_C], "appears twice", id="the-same-record-twice"),
        pytest.param(B, [record(B, B, "2.40")], "appears twice", id="endorses-itself"),
        pytest.param(
            B,
            [record(A, B, "2.41", endorsed_txid="2.40")],
            "last_txid differs",
            id="last-txid-differs",
        ),
        pytest.param(
            B,
            [record(A, B, "2.40", names=C.certificate)],
            "names another previous certificate",
            id="wrong-previous-certificate",
        ),
        pytest.param(B, [_with(A_TO_B, endorsement=...)], "must have", id="missing-key"),
        pytest.param(B, [_with(A_TO_B, note="x")], "must have", id="extra-key"),
        pytest.param(
            B, [_with(A_TO_B, endorsement="not base64!")], "history record", id="bad-base64"
        ),
        pytest.param(
            B, [_with(A_TO_B, endorsement=12)], "history record", id="endorsement-not-a-string"
        ),
        pytest.param(
            B,
            [_with(A_TO_B, certificate="-----BEGIN CERTIFICATE-----\nAA==\n")],
            "history certificate",
            id="bad-certificate",
        ),
        pytest.param(
            B,
            [_with(A_TO_B, endorsement=base64.b64encode(b"\xd2\x84").decode())],
            "not endorsed",
            id="envelope-not-cose",
        ),
        pytest.param(B, ["x"], "must be an object", id="a-string"),
        pytest.param(B, [None], "must be an object", id="null"),
        pytest.param(
            C,
            [record(A, B, "2.90"), record(B, C, "4.40")],
            "cannot end after the one that replaced it",
            id="an-older-era-ending-after-the-newer",
        ),
    ],
)
def test_eras_refuses(
    current: ServiceIdentity, records: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(EndorsementError, match=message):
        eras(current.certificate, records)


def test_eras_checks_the_consortium_only_when_asked() -> None:
    other = record(A, B, "2.40", consortium="other")
    assert _summary(eras(B.certificate, [other])) == _summary(eras(B.certificate, [A_TO_B]))
    assert len(eras(B.certificate, [A_TO_B], consortium=CONSORTIUM)) == 2
    with pytest.raises(EndorsementError, match="endorsed for consortium 'other', not 'demo'"):
        eras(B.certificate, [other], consortium=CONSORTIUM)


# ----------------------------------------------------------------------------- certificate_for
CHAIN = [Era(C.certificate, None), Era(B.certificate, 90), Era(A.certificate, 40)]


@pytest.mark.parametrize(
    ("index", "expected"),
    [(1, A), (40, A), (41, B), (90, B), (91, C), (10_000, C)],
)
def test_certificate_for_picks_the_era_an_index_was_written_in(
    index: int, expected: ServiceIdentity
) -> None:
    assert certificate_for(CHAIN, index) == expected.certificate


def test_certificate_for_a_chain_of_one_is_the_current_certificate() -> None:
    assert certificate_for([Era(C.certificate, None)], 1) == C.certificate


def test_certificate_for_the_chain_eras_builds() -> None:
    chain = eras(C.certificate, [B_TO_C, A_TO_B])
    found = [certificate_for(chain, i) for i in (40, 41, 90, 91)]
    assert found == [A.certificate, B.certificate, B.certificate, C.certificate]


@pytest.mark.parametrize("txid", ["1.\u00b2", "01.5", "1.05", " 1.5", "1.5\n", "-1.5"])
def test_only_ascii_canonical_txids_are_endorsed(txid: str) -> None:
    with pytest.raises(EndorsementError, match="is not a txid"):
        endorse(B, CONSORTIUM, A.certificate, txid)
