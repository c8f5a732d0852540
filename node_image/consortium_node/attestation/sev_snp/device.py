"""The Linux interfaces through which an AMD SEV-SNP guest obtains reports and sealing keys.

A node inside an SEV-SNP confidential VM asks the AMD Secure Processor, through the guest
kernel, for a signed ``ATTESTATION_REPORT`` binding 64 bytes of its choosing, for the host's
certificate table (VCEK or VLEK, ASK, ARK) and for keys derived from its launch measurement.
Linux offers two interfaces; both are supported, their paths are constructor settings:

* ``ConfigfsTsm``: configfs-tsm (Linux >= 6.7), Documentation/ABI/testing/configfs-tsm-report
  and drivers/virt/coco/guest/report.c (torvalds/linux 43185067c6fd, 69050f8d6d07);
* ``SevGuestDevice``: the ``/dev/sev-guest`` ioctls, include/uapi/linux/sev-guest.h
  (torvalds/linux 0ea5c948cb64) and drivers/virt/coco/sev-guest/sev-guest.c (0a895c0d9b73).

Message layouts are those of the SEV-SNP Firmware ABI specification (AMD #56860, MSG_REPORT_RSP,
MSG_KEY_REQ/RSP) and of the GHCB specification (AMD #56421, section 4.1.8.1, the certificate
table), cross-checked against google/go-sev-guest (client/linuxabi/linux_abi.go, 2d965897505a)
and virtee/sev (src/firmware/guest/types/snp.rs, 00b96932332d; guest/cert_table.rs, 5c9d8fb0f944).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from consortium_node.attestation.errors import AttestationError

REPORT_DATA_SIZE: Final = 64  # SNP_REPORT_USER_DATA_SIZE; configfs TSM_REPORT_INBLOB_MAX
REPORT_SIZE: Final = 0x4A0  # 1184, the ATTESTATION_REPORT of the firmware ABI
DERIVED_KEY_SIZE: Final = 32

# Certificate-table GUIDs, GHCB spec 4.1.8.1: virtee/sev src/firmware/host/types/snp.rs
# (CertType, 00b96932332d; all four), google/go-sev-guest abi/abi.go (VCEK, ASK, ARK).
VCEK_GUID: Final = "63da758d-e664-4564-adc5-f4b93be8accd"
VLEK_GUID: Final = "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
ASK_GUID: Final = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID: Final = "c0b406a4-a803-4952-9743-3fb6014cd0ae"

# MSG_KEY_REQ GUEST_FIELD_SELECT bits (firmware ABI; virtee/sev GuestFieldSelect).
GUEST_FIELD_POLICY: Final = 1 << 0
GUEST_FIELD_IMAGE_ID: Final = 1 << 1
GUEST_FIELD_FAMILY_ID: Final = 1 << 2
GUEST_FIELD_MEASUREMENT: Final = 1 << 3
GUEST_FIELD_GUEST_SVN: Final = 1 << 4
GUEST_FIELD_TCB_VERSION: Final = 1 << 5
# MSG_KEY_REQ ROOT_KEY_SELECT bit 0: derive from the VCEK (0) or the VM root key (1).
ROOT_KEY_VCEK: Final = 0
ROOT_KEY_VMRK: Final = 1

_MAX_VMPL: Final = 3  # TSM_REPORT_PRIVLEVEL_MAX; VMPLs 0..3
_PAGE_SIZE: Final = 4096  # SEV-SNP guests are x86-64 only
_CERTS_BUFFER: Final = 0x4000  # SEV_FW_BLOB_MAX_SIZE (include/linux/psp-sev.h), the kernel's cap
_VMM_ERR_INVALID_LEN: Final = 1  # SNP_GUEST_VMM_ERR_INVALID_LEN
_MSG_HEADER: Final = 32  # status, size and reserved bytes before a firmware response's payload
_FW_STATUS: Final = {  # include/uapi/linux/psp-sev.h sev_ret_code
    0x16: "SEV_RET_INVALID_PARAM",
    0x27: "SEV_RET_INVALID_KEY",
    0xFF: "firmware not called",  # the kernel's initial exitinfo2 (snp_guest_ioctl)
}


class DeviceError(AttestationError):
    """A kernel interface failed or answered nonsense; says which path/ioctl and the codes."""


@dataclass(frozen=True)
class ReportResponse:
    """An ``ATTESTATION_REPORT`` and the host's certificates (GUID -> DER, may be empty)."""

    report: bytes
    certificates: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.report) != REPORT_SIZE:
            raise ValueError(f"report: must be {REPORT_SIZE} bytes, got {len(self.report)}")


def parse_certificate_table(blob: bytes) -> dict[str, bytes]:
    """Split a GHCB certificate table into {lowercase GUID: certificate bytes}.

    Layout (GHCB spec 4.1.8.1; ``struct snp_msg_cert_entry`` in sev-guest.c): 24-byte entries
    ``guid[16] | offset u32 LE | length u32 LE`` ended by an all-zero entry, then the
    certificates; offsets count from the start of ``blob``. The GUID bytes are in RFC 4122
    order (``uuid.UUID(bytes=...)``, not ``bytes_le``), as go-sev-guest (``uuid.Parse``) and
    virtee/sev (``Uuid::as_bytes``/``from_slice``, guest/cert_table.rs) write and read them.
    An empty blob is an empty table. Refuses a missing terminator, an entry reaching outside
    the blob or into the table, an empty entry and a repeated GUID, naming the entry index.
    """
    if not blob:
        return {}
    entries: list[tuple[str, int, int]] = []
    while True:
        start = len(entries) * 24
        if start + 24 > len(blob):
            raise DeviceError(f"certificate table: entry {len(entries)}: no all-zero terminator")
        if not any(blob[start : start + 24]):
            break
        offset, length = struct.unpack_from("<II", blob, start + 16)
        entries.append((str(uuid.UUID(bytes=blob[start : start + 16])), offset, length))
    table_end = (len(entries) + 1) * 24
    certificates: dict[str, bytes] = {}
    for index, (guid, offset, length) in enumerate(entries):
        where = f"certificate table: entry {index} ({guid})"
        if offset < table_end or offset + length > len(blob):
            raise DeviceError(
                f"{where}: bytes [{offset}, {offset + length}) are outside the certificates "
                f"[{table_end}, {len(blob)})"
            )
        if length == 0:
            raise DeviceError(f"{where}: empty certificate")
        if guid in certificates:
            raise DeviceError(f"{where}: GUID repeated")
        certificates[guid] = blob[offset : offset + length]
    return certificates


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report_data: must be {REPORT_DATA_SIZE} bytes, got {len(report_data)}")


def _check_vmpl(name: str, value: int) -> None:
    if not 0 <= value <= _MAX_VMPL:
        raise ValueError(f"{name}: must be 0..{_MAX_VMPL}, got {value}")


def _check_uint(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}: must fit in {bits} unsigned bits, got {value}")


class ConfigfsTsm:
    """Reports through configfs-tsm: one fresh entry directory per attempt, always removed.

    Per attempt: ``mkdir`` the entry, check ``provider`` is ``sev_guest``, read
    ``generation``, write ``privlevel`` (only when asked) and ``inblob``, then read
    ``outblob`` and ``auxblob`` (the certificate table; absent or empty when the host has
    none). ``generation`` counts writes to the entry (ABI doc), so it must equal its first
    value plus our writes both before and after the blobs are read; otherwise another
    writer raced us and the attempt is repeated, up to ``attempts`` times.

    ``_mkdir``, ``_rmdir``, ``_read`` and ``_write`` are the only filesystem operations and
    may be overridden (a test's fake configfs populates the entry after ``mkdir``).
    """

    def __init__(
        self, root: Path = Path("/sys/kernel/config/tsm/report"), *, attempts: int = 3
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts: must be at least 1, got {attempts}")
        self._root = root
        self._attempts = attempts

    def available(self) -> bool:
        return self._root.is_dir()

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> ReportResponse:
        """The same call as ``SevGuestDevice.extended_report``: VMPL 0 leaves ``privlevel``
        to the kernel's default."""
        return self.report(report_data, privlevel=vmpl or None)

    def report(self, report_data: bytes, *, privlevel: int | None = None) -> ReportResponse:
        """A report binding ``report_data`` (64 bytes) at ``privlevel`` (kernel default: None)."""
        _check_report_data(report_data)
        if privlevel is not None:
            _check_vmpl("privlevel", privlevel)
        for _ in range(self._attempts):
            try:
                response = self._attempt(report_data, privlevel)
            except OSError as exc:
                where = exc.filename or self._root
                raise DeviceError(f"{where}: {exc.strerror} (errno {exc.errno})") from exc
            if response is not None:
                return response
        raise DeviceError(
            f"{self._root}: generation changed during each of {self._attempts} attempts "
            "(another writer raced every one)"
        )

    def _attempt(self, report_data: bytes, privlevel: int | None) -> ReportResponse | None:
        entry = self._root / f"consortium-{uuid.uuid4().hex}"
        self._mkdir(entry)
        try:
            provider = self._read(entry / "provider").decode(errors="replace").strip()
            if provider != "sev_guest":
                raise DeviceError(f"{entry / 'provider'}: says {provider!r}, not 'sev_guest'")
            expected = self._generation(entry)
            if privlevel is not None:
                self._write(entry / "privlevel", str(privlevel).encode())
                expected += 1
            self._write(entry / "inblob", report_data)
            expected += 1
            if self._generation(entry) != expected:
                return None
            outblob = self._read(entry / "outblob")
            try:
                auxblob = self._read(entry / "auxblob")
            except FileNotFoundError:
                auxblob = b""
            if self._generation(entry) != expected:
                return None
            if len(outblob) < REPORT_SIZE:
                raise DeviceError(f"{entry / 'outblob'}: {len(outblob)} bytes, need {REPORT_SIZE}")
        finally:
            self._rmdir(entry)
        return ReportResponse(outblob[:REPORT_SIZE], parse_certificate_table(auxblob))

    def _generation(self, entry: Path) -> int:
        text = self._read(entry / "generation").decode(errors="replace").strip()
        if not text.isdigit():
            raise DeviceError(f"{entry / 'generation'}: not a number: {text!r}")
        return int(text)

    def _mkdir(self, entry: Path) -> None:
        entry.mkdir()

    def _rmdir(self, entry: Path) -> None:
        entry.rmdir()

    def _read(self, path: Path) -> bytes:
        return path.read_bytes()

    def _write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)  # one write(2): configfs takes a binary attribute on close


# The uapi structures of include/uapi/linux/sev-guest.h (natural C alignment, as ctypes does).
_U8, _U32, _U64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64


class _GuestRequestIoctl(ctypes.Structure):
    """``snp_guest_request_ioctl``; exitinfo2 bits 31:0 fw_error, 63:32 vmm_error (32 bytes)."""

    _fields_ = (("msg_version", _U8), ("req_data", _U64), ("resp_data", _U64), ("exitinfo2", _U64))


class _ReportReq(ctypes.Structure):
    _fields_ = (("user_data", _U8 * REPORT_DATA_SIZE), ("vmpl", _U32), ("rsvd", _U8 * 28))


class _ReportResp(ctypes.Structure):
    _fields_ = (("data", _U8 * 4000),)


class _DerivedKeyReq(ctypes.Structure):
    _fields_ = (
        *(("root_key_select", _U32), ("rsvd", _U32), ("guest_field_select", _U64)),
        *(("vmpl", _U32), ("guest_svn", _U32), ("tcb_version", _U64)),
    )


class _DerivedKeyResp(ctypes.Structure):
    _fields_ = (("data", _U8 * 64),)


class _ExtReportReq(ctypes.Structure):
    _fields_ = (("data", _ReportReq), ("certs_address", _U64), ("certs_len", _U32))


def _iowr(kind: str, number: int, size: int) -> int:
    """Linux ``_IOWR(kind, number, size)`` (include/uapi/asm-generic/ioctl.h, used by x86):
    bits 7:0 number, 15:8 type, 29:16 argument size, 31:30 direction (read 2 | write 1)."""
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | number


# 0xC0205300..02, as go-sev-guest client/linuxabi/linux_abi.go computes (32-byte argument).
SNP_GET_REPORT: Final = _iowr("S", 0x0, ctypes.sizeof(_GuestRequestIoctl))
SNP_GET_DERIVED_KEY: Final = _iowr("S", 0x1, ctypes.sizeof(_GuestRequestIoctl))
SNP_GET_EXT_REPORT: Final = _iowr("S", 0x2, ctypes.sizeof(_GuestRequestIoctl))


def _default_ioctl(fd: int, request: int, buffer: bytearray) -> int:
    return int(fcntl.ioctl(fd, request, buffer, True))  # mutates buffer in place


def _firmware_status(where: str, data: bytes) -> None:
    status = struct.unpack_from("<I", data)[0]
    if status:
        name = _FW_STATUS.get(status, "unknown")
        raise DeviceError(f"{where}: firmware status 0x{status:x} ({name})")


def _report_of(where: str, data: bytes) -> bytes:
    """The report of a MSG_REPORT_RSP: status u32, report_size u32, 24 reserved, report."""
    _firmware_status(where, data)
    size = struct.unpack_from("<I", data, 4)[0]
    if not REPORT_SIZE <= size <= len(data) - _MSG_HEADER:
        raise DeviceError(f"{where}: report_size {size}, expected at least {REPORT_SIZE}")
    return data[_MSG_HEADER : _MSG_HEADER + REPORT_SIZE]


class SevGuestDevice:
    """Reports and derived keys through ``/dev/sev-guest`` ioctls (msg_version 1).

    The request and response structures are ctypes objects whose addresses travel in the
    32-byte ``snp_guest_request_ioctl``; they are kept referenced until the ioctl returns.
    ``ioctl(fd, request, buffer)`` is injectable for tests; it mutates ``buffer`` in place.
    """

    def __init__(
        self,
        path: Path = Path("/dev/sev-guest"),
        *,
        ioctl: Callable[[int, int, bytearray], int] | None = None,
    ) -> None:
        self._path = path
        self._ioctl = ioctl or _default_ioctl

    def available(self) -> bool:
        return self._path.exists()

    def report(self, report_data: bytes, *, vmpl: int = 0) -> bytes:
        """The 1184-byte report binding ``report_data`` at ``vmpl`` (SNP_GET_REPORT)."""
        request, response = _report_request(report_data, vmpl), _ReportResp()
        self._check("SNP_GET_REPORT", *self._issue(SNP_GET_REPORT, request, response))
        return _report_of(f"{self._path}: SNP_GET_REPORT", bytes(response))

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> ReportResponse:
        """The report and the host's certificate table (SNP_GET_EXT_REPORT).

        When the certificate buffer is too small the kernel fails with EIO, vmm_error
        SNP_GUEST_VMM_ERR_INVALID_LEN and ``certs_len`` set to the size needed in bytes
        (the host's page count << PAGE_SHIFT); the request is repeated once with that size.
        """
        response = self._extended_report(report_data, vmpl, _CERTS_BUFFER)
        if isinstance(response, int):
            response = self._extended_report(report_data, vmpl, response)
        if isinstance(response, int):
            raise DeviceError(
                f"{self._path}: SNP_GET_EXT_REPORT: the host still wants a bigger certificate "
                f"buffer ({response} bytes) after the retry"
            )
        return response

    def _extended_report(self, report_data: bytes, vmpl: int, size: int) -> ReportResponse | int:
        """The response, or the page-aligned buffer size the host asks for instead of ``size``."""
        request = _ExtReportReq(data=_report_request(report_data, vmpl))
        certificates = (_U8 * size)()
        request.certs_address, request.certs_len = ctypes.addressof(certificates), size
        response = _ReportResp()
        error, exitinfo2 = self._issue(SNP_GET_EXT_REPORT, request, response)
        if error == errno.EIO and exitinfo2 >> 32 == _VMM_ERR_INVALID_LEN:
            needed = int(request.certs_len)  # the kernel copies the request back with it
            if needed <= size:
                raise DeviceError(
                    f"{self._path}: SNP_GET_EXT_REPORT: a certificate buffer of {size} bytes "
                    f"is refused as too small, yet the host asks for {needed}"
                )
            return -(-needed // _PAGE_SIZE) * _PAGE_SIZE
        self._check("SNP_GET_EXT_REPORT", error, exitinfo2)
        report = _report_of(f"{self._path}: SNP_GET_EXT_REPORT", bytes(response))
        return ReportResponse(report, parse_certificate_table(bytes(certificates)))

    def derived_key(
        self,
        *,
        root_key_select: int = ROOT_KEY_VCEK,
        guest_field_select: int,
        vmpl: int = 0,
        guest_svn: int = 0,
        tcb_version: int = 0,
    ) -> bytes:
        """A 32-byte key (SNP_GET_DERIVED_KEY); MSG_KEY_RSP is status u32, 28 reserved, key."""
        _check_uint("root_key_select", root_key_select, 32)
        _check_uint("guest_field_select", guest_field_select, 64)
        _check_vmpl("vmpl", vmpl)
        _check_uint("guest_svn", guest_svn, 32)
        _check_uint("tcb_version", tcb_version, 64)
        request = _DerivedKeyReq(
            root_key_select, 0, guest_field_select, vmpl, guest_svn, tcb_version
        )
        response = _DerivedKeyResp()
        try:
            self._check("SNP_GET_DERIVED_KEY", *self._issue(SNP_GET_DERIVED_KEY, request, response))
            data = bytes(response)
            _firmware_status(f"{self._path}: SNP_GET_DERIVED_KEY", data)
            return data[_MSG_HEADER : _MSG_HEADER + DERIVED_KEY_SIZE]
        finally:
            ctypes.memset(ctypes.addressof(response), 0, ctypes.sizeof(response))

    def _issue(
        self, request_number: int, request: ctypes.Structure, response: ctypes.Structure
    ) -> tuple[int, int]:
        """One ioctl; returns (errno, 0 on success; exitinfo2). ``request`` and ``response``
        are arguments, so they outlive the call that the kernel reads and writes them in."""
        addresses = ctypes.addressof(request), ctypes.addressof(response)
        buffer = bytearray(bytes(_GuestRequestIoctl(1, *addresses, 0)))  # msg_version 1
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(
                f"{self._path}: cannot open: {exc.strerror} (errno {exc.errno})"
            ) from exc
        try:
            self._ioctl(fd, request_number, buffer)
            error = 0
        except OSError as exc:
            error = exc.errno or errno.EIO
        finally:
            os.close(fd)
        return error, int(_GuestRequestIoctl.from_buffer_copy(buffer).exitinfo2)

    def _check(self, name: str, error: int, exitinfo2: int) -> None:
        if error:
            fw_error, vmm_error = exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32
            raise DeviceError(
                f"{self._path}: {name}: {os.strerror(error)} (errno {error}), "
                f"fw_error 0x{fw_error:x} ({_FW_STATUS.get(fw_error, 'see psp-sev.h')}), "
                f"vmm_error 0x{vmm_error:x}"
            )


def _report_request(report_data: bytes, vmpl: int) -> _ReportReq:
    _check_report_data(report_data)
    _check_vmpl("vmpl", vmpl)
    request = _ReportReq(vmpl=vmpl)
    ctypes.memmove(request.user_data, report_data, REPORT_DATA_SIZE)
    return request
