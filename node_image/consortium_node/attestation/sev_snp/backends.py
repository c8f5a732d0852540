"""Which guest interface answers a node's report and key requests.

Why: Linux offers reports through configfs-tsm (the vendor-neutral interface, Linux >= 6.7)
and through ``/dev/sev-guest``; only the latter derives sealing keys. With ``device: auto`` a
node takes its reports from configfs-tsm where it exists and its sealing keys from
``/dev/sev-guest`` where that exists, so it seals whenever the guest can.
"""

from __future__ import annotations

from consortium_node.attestation.errors import PlatformError
from consortium_node.attestation.sev_snp import device
from consortium_node.attestation.sev_snp.emulator import EmulatedSevGuest


class TsmWithKeys:
    """Reports from configfs-tsm, derived keys from ``/dev/sev-guest``."""

    def __init__(self, tsm: device.ConfigfsTsm, guest: device.SevGuestDevice) -> None:
        self.tsm, self.guest = tsm, guest

    def available(self) -> bool:
        return True

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> device.ReportResponse:
        return self.tsm.extended_report(report_data, vmpl=vmpl)

    def derived_key(
        self,
        *,
        root_key_select: int = 0,
        guest_field_select: int,
        vmpl: int = 0,
        guest_svn: int = 0,
        tcb_version: int = 0,
    ) -> bytes:
        return self.guest.derived_key(
            root_key_select=root_key_select,
            guest_field_select=guest_field_select,
            vmpl=vmpl,
            guest_svn=guest_svn,
            tcb_version=tcb_version,
        )


class ReportsOnly:
    """The emulator without ``derived_key``: how a configfs-tsm-only guest looks (tests of a
    node that keeps no sealed secrets)."""

    def __init__(self, guest: EmulatedSevGuest) -> None:
        self.guest = guest

    def available(self) -> bool:
        return True

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> device.ReportResponse:
        return self.guest.extended_report(report_data, vmpl=vmpl)


def choose(
    choice: str, guest: device.SevGuestDevice, tsm: device.ConfigfsTsm
) -> device.SevGuestDevice | device.ConfigfsTsm | TsmWithKeys:
    """The backend for ``device`` = ``choice`` (sev-guest, configfs-tsm or auto)."""
    if choice == "sev-guest":
        return guest
    if choice == "configfs-tsm":
        return tsm
    has_guest, has_tsm = guest.available(), tsm.available()
    if has_tsm and has_guest:
        return TsmWithKeys(tsm, guest)
    if has_tsm:
        return tsm
    if has_guest:
        return guest
    raise PlatformError(
        "no SEV-SNP guest device: neither /dev/sev-guest nor configfs-tsm is there (is this "
        "pod in an SEV-SNP confidential VM? spec.attestation.sevSnp.runtimeClassName)"
    )
