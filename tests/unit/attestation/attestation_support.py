"""Helpers shared by the attestation tests (a uniquely named module, not conftest)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import Policy, host_data_for
from consortium_node.attestation.insecure_virtual import (
    InsecureVirtualVerifier,
    Quote,
    VirtualEnclave,
    VirtualPlatform,
    report_data_for,
)
from consortium_node.attestation.insecure_virtual.platform import Chip
from consortium_node.common.timeutil import utcnow

NOW = utcnow()
MEASUREMENT = "ab" * 32
HOST_DATA = host_data_for("demo", "node")
NONCE = bytes(range(32))
CHIP_ID = "demo-0"


def fixed_clock() -> datetime:
    return NOW


def public_key_der_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Setup:
    """Everything a verifier test needs, built once per module."""

    platform: VirtualPlatform
    verifier: InsecureVirtualVerifier
    node_key_der: bytes
    other_key_der: bytes

    def enclave(self, **kwargs: Any) -> VirtualEnclave:
        args: dict[str, Any] = {
            "platform": self.platform,
            "chip_id": CHIP_ID,
            "measurement": MEASUREMENT,
            "host_data": HOST_DATA,
            "clock": fixed_clock,
        }
        args.update(kwargs)
        return VirtualEnclave(**args)

    def policy(self, **kwargs: Any) -> Policy:
        args: dict[str, Any] = {
            "allowed_measurements": frozenset({MEASUREMENT}),
            "allowed_host_data": frozenset({HOST_DATA}),
        }
        args.update(kwargs)
        return Policy(**args)

    def hand_quote(self, chip: Chip | None = None, **overrides: Any) -> dict[str, Any]:
        """A correctly signed quote JSON with any creation argument overridden."""
        signer = chip if chip is not None else self.platform.chip(CHIP_ID)
        args: dict[str, Any] = {
            "measurement": MEASUREMENT,
            "host_data": HOST_DATA,
            "report_data": report_data_for(self.node_key_der, NONCE),
            "nonce": NONCE,
            "timestamp": NOW,
            "tcb_version": signer.tcb_version,
            "chip_id": signer.chip_id,
            "endorsements": signer.endorsements,
            "sign": signer.sign,
        }
        args.update(overrides)
        return Quote.create(**args).to_json()


def make_setup(platform: VirtualPlatform) -> Setup:
    return Setup(
        platform=platform,
        verifier=InsecureVirtualVerifier(platform.root_certificate_pem),
        node_key_der=public_key_der_of(ec.generate_private_key(ec.SECP256R1())),
        other_key_der=public_key_der_of(ec.generate_private_key(ec.SECP256R1())),
    )


Builder = Callable[[Setup], dict[str, Any]]
