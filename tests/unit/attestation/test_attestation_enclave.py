"""VirtualEnclave: honest quotes and measurement-bound sealing."""

from __future__ import annotations

import pytest
from attestation_support import CHIP_ID, HOST_DATA, MEASUREMENT, NONCE, NOW, Setup
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import AttestationError, UnsealError
from consortium_node.attestation.insecure_virtual import (
    VirtualEnclave,
    VirtualPlatform,
    report_data_for,
)
from consortium_node.common.timeutil import rfc3339


def test_enclave_exposes_its_identity(setup: Setup) -> None:
    enclave = setup.enclave(tcb_version=3)
    assert enclave.measurement == MEASUREMENT
    assert enclave.host_data == HOST_DATA
    assert enclave.chip_id == CHIP_ID
    assert enclave.tcb_version == 3
    assert enclave.platform_name == "insecure-virtual"


def test_quote_carries_the_enclave_claims(setup: Setup) -> None:
    quote = setup.enclave().quote(setup.node_key_der, NONCE)
    chip = setup.platform.chip(CHIP_ID)
    assert (quote.measurement, quote.host_data, quote.chip_id) == (MEASUREMENT, HOST_DATA, CHIP_ID)
    assert quote.tcb_version == 1
    assert quote.nonce_bytes == NONCE
    assert quote.report_data_bytes == report_data_for(setup.node_key_der, NONCE)
    assert quote.timestamp == rfc3339(NOW)
    assert quote.endorsements == chip.endorsements
    chip.public_key.verify(quote.signature_bytes, quote.signed_bytes(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("field", "value"), [("measurement", "ab"), ("host_data", "XY" * 32), ("measurement", "")]
)
def test_enclave_rejects_bad_digests(setup: Setup, field: str, value: str) -> None:
    with pytest.raises(AttestationError, match=field):
        setup.enclave(**{field: value})


def test_quote_requires_a_nonce(setup: Setup) -> None:
    with pytest.raises(AttestationError, match="nonce"):
        setup.enclave().quote(setup.node_key_der, b"")


@pytest.mark.parametrize("plaintext", [b"", b"ledger secret", bytes(range(256)) * 40])
def test_seal_round_trip(setup: Setup, plaintext: bytes) -> None:
    enclave = setup.enclave()
    blob = enclave.seal(plaintext, "ledger-secret")
    assert blob[0] == 0x01
    assert len(blob) == 1 + 12 + len(plaintext) + 16
    assert plaintext == b"" or plaintext not in blob
    assert enclave.unseal(blob, "ledger-secret") == plaintext


def test_seal_uses_a_fresh_nonce_each_time(setup: Setup) -> None:
    enclave = setup.enclave()
    assert enclave.seal(b"same", "label") != enclave.seal(b"same", "label")


def test_restarted_enclave_on_the_same_chip_unseals(setup: Setup) -> None:
    blob = setup.enclave().seal(b"service key", "service-key")
    platform = setup.platform
    restarted_platform = VirtualPlatform.load(
        platform.root_key_pem(), platform.root_certificate_pem
    )
    restarted = VirtualEnclave(restarted_platform, CHIP_ID, MEASUREMENT, HOST_DATA)
    assert restarted.unseal(blob, "service-key") == b"service key"


def test_host_data_does_not_affect_sealing(setup: Setup) -> None:
    blob = setup.enclave().seal(b"x", "label")
    assert setup.enclave(host_data="cd" * 32).unseal(blob, "label") == b"x"


@pytest.mark.parametrize(
    ("reader", "label"),
    [
        ({"measurement": "cd" * 32}, "ledger-secret"),
        ({"chip_id": "demo-1"}, "ledger-secret"),
        ({"tcb_version": 2}, "ledger-secret"),
        ({}, "other-label"),
    ],
    ids=["other-measurement", "other-chip", "other-tcb", "other-label"],
)
def test_unseal_refuses_another_measurement_chip_or_label(
    setup: Setup, reader: dict[str, object], label: str
) -> None:
    blob = setup.enclave().seal(b"ledger secret", "ledger-secret")
    with pytest.raises(UnsealError, match="another measurement, another chip or under another"):
        setup.enclave(**reader).unseal(blob, label)


@pytest.mark.parametrize("length", [0, 1, 13, 28])
def test_unseal_refuses_a_truncated_blob(setup: Setup, length: int) -> None:
    blob = setup.enclave().seal(b"", "label")
    assert len(blob) == 29
    with pytest.raises(UnsealError, match=f"sealed blob is {length} bytes"):
        setup.enclave().unseal(blob[:length], "label")


def test_unseal_refuses_a_blob_missing_its_last_byte(setup: Setup) -> None:
    blob = setup.enclave().seal(b"payload", "label")
    with pytest.raises(UnsealError):
        setup.enclave().unseal(blob[:-1], "label")


@pytest.mark.parametrize("offset", [1, 13, -1])
def test_unseal_refuses_a_modified_blob(setup: Setup, offset: int) -> None:
    blob = bytearray(setup.enclave().seal(b"payload", "label"))
    blob[offset] ^= 0x80
    with pytest.raises(UnsealError, match="or it was modified"):
        setup.enclave().unseal(bytes(blob), "label")


def test_unseal_refuses_an_unknown_version(setup: Setup) -> None:
    blob = setup.enclave().seal(b"payload", "label")
    with pytest.raises(UnsealError, match="byte 0: version 2"):
        setup.enclave().unseal(b"\x02" + blob[1:], "label")
