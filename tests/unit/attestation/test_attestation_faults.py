"""Fault names and what each fault does to a quote (the verifier side is in the verifier tests)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from attestation_support import CHIP_ID, MEASUREMENT, NONCE, NOW, Setup
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import Fault, parse_faults
from consortium_node.attestation.insecure_virtual import REVOKED_TEST_CHIP_ID, report_data_for
from consortium_node.attestation.insecure_virtual.enclave import flip_last_byte

NAMES = ["wrong-measurement", "stale-timestamp", "replayed-nonce", "bad-signature", "revoked-chip"]


def test_fault_values_are_the_documented_names() -> None:
    assert [fault.value for fault in Fault] == NAMES


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], frozenset()),
        ("", frozenset()),
        (["bad-signature"], frozenset({Fault.BAD_SIGNATURE})),
        ("stale-timestamp, replayed-nonce", {Fault.STALE_TIMESTAMP, Fault.REPLAYED_NONCE}),
        (("revoked-chip", "revoked-chip"), frozenset({Fault.REVOKED_CHIP})),
        (NAMES, frozenset(Fault)),
        (",".join(NAMES), frozenset(Fault)),
    ],
)
def test_parse_faults(names: list[str] | str, expected: frozenset[Fault]) -> None:
    assert parse_faults(names) == expected


@pytest.mark.parametrize("names", [["bad-sig"], "stale-timestamp,nope", ["Wrong-Measurement"]])
def test_unknown_fault_lists_the_valid_names(names: list[str] | str) -> None:
    with pytest.raises(ValueError, match="unknown attestation fault") as caught:
        parse_faults(names)
    for name in NAMES:
        assert name in str(caught.value)


def test_faults_are_off_by_default_and_silent(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        enclave = setup.enclave()
    assert enclave.faults == frozenset()
    assert not caplog.records


def test_active_faults_log_a_warning(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        setup.enclave(faults=parse_faults("bad-signature,stale-timestamp"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "INSECURE TEST FAULTS ACTIVE: bad-signature, stale-timestamp" in record.getMessage()


def test_wrong_measurement_reports_another_measurement(setup: Setup) -> None:
    quote = setup.enclave(faults={Fault.WRONG_MEASUREMENT}).quote(setup.node_key_der, NONCE)
    assert quote.measurement != MEASUREMENT
    assert len(quote.measurement) == 64


def test_stale_timestamp_is_one_hour_old(setup: Setup) -> None:
    quote = setup.enclave(faults={Fault.STALE_TIMESTAMP}).quote(setup.node_key_der, NONCE)
    assert quote.issued_at == NOW - timedelta(hours=1)


def test_replayed_nonce_answers_the_previous_challenge(setup: Setup) -> None:
    enclave = setup.enclave(faults={Fault.REPLAYED_NONCE})
    first = enclave.quote(setup.node_key_der, b"challenge-1")
    second = enclave.quote(setup.node_key_der, b"challenge-2")
    third = enclave.quote(setup.node_key_der, b"challenge-3")
    assert first.nonce_bytes not in (b"challenge-1", b"challenge-2")
    assert second.nonce_bytes == b"challenge-1"
    assert third.nonce_bytes == b"challenge-2"
    for quote in (first, second, third):
        assert quote.report_data_bytes == report_data_for(setup.node_key_der, quote.nonce_bytes)


def test_bad_signature_signs_the_same_bytes_but_does_not_verify(setup: Setup) -> None:
    good = setup.enclave().quote(setup.node_key_der, NONCE)
    bad = setup.enclave(faults={Fault.BAD_SIGNATURE}).quote(setup.node_key_der, NONCE)
    assert bad.signed_bytes() == good.signed_bytes()
    key = x509.load_pem_x509_certificate(bad.endorsements[0].encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    with pytest.raises(InvalidSignature):
        key.verify(bad.signature_bytes, bad.signed_bytes(), ec.ECDSA(hashes.SHA256()))


def test_flip_last_byte_changes_exactly_one_byte() -> None:
    assert flip_last_byte(b"\x30\x01\x02") == b"\x30\x01\x03"


def test_revoked_chip_signs_with_the_revoked_test_chip(setup: Setup) -> None:
    quote = setup.enclave(faults={Fault.REVOKED_CHIP}).quote(setup.node_key_der, NONCE)
    assert quote.chip_id == REVOKED_TEST_CHIP_ID != CHIP_ID
    assert quote.endorsements == setup.platform.chip(REVOKED_TEST_CHIP_ID).endorsements
