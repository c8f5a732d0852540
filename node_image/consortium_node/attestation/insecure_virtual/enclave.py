"""The virtual enclave: what a node's code asks its TEE for — quotes and sealed storage.

A real enclave gets its measurement from the hardware; this one is *told* its measurement
(``measure_installed()`` at start-up) and holds its chip from the ``VirtualPlatform``. The
interface is what matters: the rest of the node only ever calls ``quote`` and
``seal``/``unseal``, so swapping in real SEV-SNP or TDX evidence changes this module only.

Sealed blobs have the format of ``attestation/sealing.py``. The key is
``HKDF-SHA256(ikm=chip.secret, salt=b"consortium-seal-v1", info=bytes.fromhex(measurement),
length=32)`` and the GCM associated data is the label's UTF-8
bytes, so only the same code (measurement) on the same chip, asking for the same label, can
unseal — like SEV-SNP's ``MSG_KEY_REQ`` with the measurement mixed in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium_node.attestation.errors import AttestationError, QuoteFormatError
from consortium_node.attestation.faults import Fault
from consortium_node.attestation.insecure_virtual.certificates import PLATFORM_NAME
from consortium_node.attestation.insecure_virtual.platform import (
    REVOKED_TEST_CHIP_ID,
    VirtualPlatform,
)
from consortium_node.attestation.insecure_virtual.quote import Quote, check_hex, report_data_for
from consortium_node.attestation.sealing import seal_with, unseal_with
from consortium_node.common.timeutil import utcnow

log = logging.getLogger(__name__)

SEAL_SALT = b"consortium-seal-v1"

STALE_BY = timedelta(hours=1)
FIRST_REPLAYED_NONCE = hashlib.sha256(b"insecure-virtual replayed nonce").digest()


def seal_key(chip_secret: bytes, measurement: str) -> bytes:
    """The 32-byte AES key for (chip, measurement); see the module docstring."""
    return HKDF(hashes.SHA256(), 32, SEAL_SALT, bytes.fromhex(measurement)).derive(chip_secret)


def wrong_measurement(measurement: str) -> str:
    """The measurement a ``wrong-measurement`` enclave reports: SHA-256("wrong" + measurement)."""
    return hashlib.sha256(b"wrong" + measurement.encode("ascii")).hexdigest()


def flip_last_byte(signature: bytes) -> bytes:
    """``signature`` with its last byte XOR 0x01 (still DER-shaped, no longer valid)."""
    return signature[:-1] + bytes([signature[-1] ^ 0x01])


def _tampered(sign: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def tampered_sign(data: bytes) -> bytes:
        return flip_last_byte(sign(data))

    return tampered_sign


def _check_digest(name: str, value: str) -> str:
    try:
        return check_hex(name, value, min_bytes=32, max_bytes=32)
    except QuoteFormatError as error:
        raise AttestationError(f"VirtualEnclave: {error}") from None


class VirtualEnclave:
    """An emulated TEE instance bound to one chip, one measurement and one host_data."""

    platform_name = PLATFORM_NAME

    def __init__(
        self,
        platform: VirtualPlatform,
        chip_id: str,
        measurement: str,
        host_data: str,
        tcb_version: int = 1,
        *,
        faults: Iterable[Fault] = frozenset(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._measurement = _check_digest("measurement", measurement)
        self._host_data = _check_digest("host_data", host_data)
        self._chip = platform.chip(chip_id, tcb_version)
        self._faults: frozenset[Fault] = frozenset()
        self._clock = clock
        self._lock = threading.Lock()
        self._previous_nonce: bytes | None = None
        self.set_faults(faults)

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the active test faults (a test-only switch; logged loudly when any is on)."""
        new = frozenset(Fault(fault) for fault in faults)
        if new == self._faults:
            return
        self._faults = new
        if new:
            names = ", ".join(sorted(fault.value for fault in new))
            log.warning(
                "INSECURE TEST FAULTS ACTIVE: %s (chip %s); this enclave's quotes will be "
                "rejected on purpose",
                names,
                self._chip.chip_id,
            )
        else:
            log.warning("insecure test faults cleared (chip %s)", self._chip.chip_id)

    @property
    def measurement(self) -> str:
        """The measurement this enclave reports (hex)."""
        return self._measurement

    @property
    def can_seal(self) -> bool:
        """The emulated chip always derives sealing keys."""
        return True

    @property
    def host_data(self) -> str:
        """The host_data this enclave reports (hex)."""
        return self._host_data

    @property
    def chip_id(self) -> str:
        """The chip this enclave runs on."""
        return self._chip.chip_id

    @property
    def tcb_version(self) -> int:
        """The chip's TCB version."""
        return self._chip.tcb_version

    @property
    def faults(self) -> frozenset[Fault]:
        """Active test faults (empty in any real deployment)."""
        return self._faults

    def _nonce_to_report(self, nonce: bytes) -> bytes:
        """The asked-for nonce, or under ``replayed-nonce`` the previous one (first: fixed)."""
        with self._lock:
            previous, self._previous_nonce = self._previous_nonce, nonce
        if Fault.REPLAYED_NONCE not in self._faults:
            return nonce
        return FIRST_REPLAYED_NONCE if previous is None else previous

    def quote(self, public_key_der: bytes, nonce: bytes) -> Quote:
        """Evidence binding ``public_key_der`` and the verifier's ``nonce`` to this enclave."""
        if not isinstance(nonce, bytes) or not nonce:
            raise AttestationError("quote: nonce must be non-empty bytes")
        reported_nonce = self._nonce_to_report(nonce)
        chip = self._chip
        if Fault.REVOKED_CHIP in self._faults:
            chip = self._platform.chip(REVOKED_TEST_CHIP_ID, chip.tcb_version)
        measurement = self._measurement
        if Fault.WRONG_MEASUREMENT in self._faults:
            measurement = wrong_measurement(measurement)
        timestamp = self._clock()
        if Fault.STALE_TIMESTAMP in self._faults:
            timestamp -= STALE_BY
        sign: Callable[[bytes], bytes] = chip.sign
        if Fault.BAD_SIGNATURE in self._faults:
            sign = _tampered(chip.sign)
        return Quote.create(
            measurement=measurement,
            host_data=self._host_data,
            report_data=report_data_for(public_key_der, reported_nonce),
            nonce=reported_nonce,
            timestamp=timestamp,
            tcb_version=chip.tcb_version,
            chip_id=chip.chip_id,
            endorsements=chip.endorsements,
            sign=sign,
        )

    def seal(self, plaintext: bytes, label: str) -> bytes:
        """Encrypt ``plaintext`` so only this measurement on this chip can read it back."""
        return seal_with(seal_key(self._chip.secret, self._measurement), plaintext, label)

    def unseal(self, blob: bytes, label: str) -> bytes:
        """Decrypt a ``seal`` blob; ``UnsealError`` if not ours, not this label, or damaged."""
        key = seal_key(self._chip.secret, self._measurement)
        return unseal_with(
            key, blob, label, f"on chip {self.chip_id!r} at measurement {self._measurement[:16]}…"
        )
