"""The node side of SEV-SNP: quotes from the guest device, endorsements, sealing.

Why: the node asks its TEE for two things only (``platforms.Attester``): evidence binding its
key and a verifier's nonce, and sealing. On SEV-SNP the evidence is the firmware's report plus
the chip certificate a verifier needs:

* Reports come from configfs-tsm or ``/dev/sev-guest`` (``device.py``) or, in tests only, the
  INSECURE emulator (``emulator.py``), which answers the same calls.
* The VCEK comes from the host's certificate table when the host provides one (extended
  report / ``auxblob``), else from the endorsements the operator mounts (``vceks.pem``: VCEKs
  users fetched from AMD KDS, the one whose hwID and TCB match this chip's report is used).
* Sealing keys come from ``MSG_KEY_REQ`` (``SNP_GET_DERIVED_KEY``) with the launch measurement
  and guest policy mixed in, rooted in the chip's VCEK: only the same code launched the same
  way on the same chip derives it. configfs-tsm offers no derived key: there the node keeps no
  sealed secrets (``can_seal`` False), so a restarted pod joins again as a fresh node and a
  whole-consortium restart is a disaster recovery (as CCF on SEV-SNP).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium_node.attestation.binding import report_data_for
from consortium_node.attestation.errors import AttestationError, PlatformError
from consortium_node.attestation.faults import Fault
from consortium_node.attestation.sealing import seal_with, unseal_with
from consortium_node.attestation.sev_snp import device
from consortium_node.attestation.sev_snp.certificates import ChainError, chip_certificate
from consortium_node.attestation.sev_snp.emulator import EmulatedSevGuest
from consortium_node.attestation.sev_snp.policy import PLATFORM_NAME
from consortium_node.attestation.sev_snp.quote import SnpQuote
from consortium_node.attestation.sev_snp.report import parse_report
from consortium_node.attestation.sev_snp.tcb import Tcb

log = logging.getLogger(__name__)

SEAL_FIELDS = device.GUEST_FIELD_MEASUREMENT | device.GUEST_FIELD_POLICY
EMULATOR_FAULTS = frozenset({Fault.WRONG_MEASUREMENT, Fault.REPLAYED_NONCE, Fault.BAD_SIGNATURE})


class ReportSource(Protocol):
    """What answers report requests: ``device.SevGuestDevice``, ``device.ConfigfsTsm`` (no
    derived keys), ``backends.TsmWithKeys`` or ``emulator.EmulatedSevGuest``; those with a
    ``derived_key`` method can seal."""

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> device.ReportResponse: ...


class SealingUnavailableError(AttestationError):
    """This TEE offers no sealing key (configfs-tsm): the node keeps no sealed secrets."""


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def pick_vcek(
    certificates: Sequence[x509.Certificate], chip_id: bytes, reported_tcb: int
) -> x509.Certificate | None:
    """The VCEK among ``certificates`` whose hwID is this chip and whose TCB is the report's."""
    for certificate in certificates:
        try:
            chip = chip_certificate(certificate)
        except ChainError:
            continue
        hw_id = chip.hw_id or b""
        same_chip = bool(hw_id) and chip_id[: len(hw_id)] == hw_id
        if same_chip and chip.tcb.encode() == Tcb.decode(reported_tcb, chip.product).encode():
            return certificate
    return None


class SnpAttester:
    """Quotes and sealing for one SEV-SNP guest. ``vceks`` are the mounted VCEKs (may be
    empty); ``vmpl`` the privilege level reports are requested at; ``emulated`` allows the
    test faults (hardware cannot produce bad evidence on purpose)."""

    platform_name = PLATFORM_NAME

    def __init__(
        self,
        backend: ReportSource,
        *,
        vceks: Sequence[x509.Certificate] = (),
        vmpl: int = 0,
        emulated: bool = False,
        faults: Iterable[Fault] = frozenset(),
    ) -> None:
        self._backend = backend
        self._vceks = tuple(vceks)
        self._vmpl = vmpl
        self._emulated = emulated
        self._faults: frozenset[Fault] = frozenset()
        self._lock = threading.Lock()
        self._previous_nonce: bytes | None = None
        self.set_faults(faults)
        first = parse_report(self._report(bytes(64))[0])
        self._measurement = first.measurement.hex()
        self._host_data = first.host_data.hex()

    @property
    def measurement(self) -> str:
        """The launch MEASUREMENT the firmware reports (96 hex digits)."""
        return self._measurement

    @property
    def host_data(self) -> str:
        return self._host_data

    @property
    def can_seal(self) -> bool:
        """Whether this TEE derives sealing keys (``/dev/sev-guest`` and the emulator do)."""
        return hasattr(self._backend, "derived_key")

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Test faults: only the emulator can produce bad evidence on purpose."""
        new = frozenset(Fault(f) for f in faults)
        if new and not self._emulated:
            raise PlatformError("test faults need the insecure SEV-SNP emulator, not hardware")
        if unsupported := sorted(f.value for f in new - EMULATOR_FAULTS):
            raise PlatformError(f"faults {unsupported} do not apply to sev-snp")
        if new != self._faults and new:
            log.warning("INSECURE TEST FAULTS ACTIVE on the SEV-SNP emulator: %s", sorted(new))
        self._faults = new
        if isinstance(self._backend, EmulatedSevGuest):
            self._backend.wrong_measurement = Fault.WRONG_MEASUREMENT in new

    def _report(self, report_data: bytes) -> tuple[bytes, dict[str, bytes]]:
        answer = self._backend.extended_report(report_data, vmpl=self._vmpl)
        return answer.report, answer.certificates

    def _endorsements(self, report: bytes, table: dict[str, bytes]) -> tuple[str, ...]:
        parsed = parse_report(report)
        from_host = [
            x509.load_der_x509_certificate(table[guid])
            for guid in (device.VCEK_GUID, device.VLEK_GUID, device.ASK_GUID)
            if guid in table
        ]
        if from_host:
            return tuple(_pem(c) for c in from_host)
        vcek = pick_vcek(self._vceks, parsed.chip_id, parsed.reported_tcb)
        if vcek is None:
            raise PlatformError(
                f"no VCEK for chip {parsed.chip_id.hex()[:16]}… at TCB "
                f"{parsed.reported_tcb:016x}: the host gives no certificate table and the "
                f"mounted endorsements ({len(self._vceks)} VCEKs) hold none for it"
            )
        return (_pem(vcek),)

    def quote(self, public_key_der: bytes, nonce: bytes) -> SnpQuote:
        """A report whose REPORT_DATA binds ``public_key_der`` and ``nonce``, with its VCEK."""
        if not isinstance(nonce, bytes) or not nonce:
            raise AttestationError("quote: nonce must be non-empty bytes")
        with self._lock:
            previous, self._previous_nonce = self._previous_nonce, nonce
        reported = previous or nonce if Fault.REPLAYED_NONCE in self._faults else nonce
        report, table = self._report(report_data_for(public_key_der, reported))
        if Fault.BAD_SIGNATURE in self._faults:
            report = report[:0x2A0] + bytes([report[0x2A0] ^ 1]) + report[0x2A1:]
        return SnpQuote(report, reported, self._endorsements(report, table))

    def _seal_key(self) -> bytes:
        derive = getattr(self._backend, "derived_key", None)
        if derive is None:
            raise SealingUnavailableError(
                f"{type(self._backend).__name__} offers no derived keys: this node keeps no "
                "sealed secrets (it joins afresh after a restart)"
            )
        secret = derive(guest_field_select=SEAL_FIELDS, vmpl=self._vmpl)
        assert isinstance(secret, bytes)
        return HKDF(hashes.SHA256(), 32, b"consortium-seal-v1", b"sev-snp").derive(secret)

    def seal(self, plaintext: bytes, label: str) -> bytes:
        """Encrypt so that only this launch measurement and policy on this chip can read it."""
        return seal_with(self._seal_key(), plaintext, label)

    def unseal(self, blob: bytes, label: str) -> bytes:
        return unseal_with(
            self._seal_key(), blob, label, f"at measurement {self._measurement[:16]}…"
        )
