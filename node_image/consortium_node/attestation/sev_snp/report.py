"""The AMD SEV-SNP ``ATTESTATION_REPORT``: parse the 1184 bytes the firmware signs, and build
them (for the test emulator only).

Why its own module: every field a verifier decides on (measurement, host_data, report_data,
TCB, guest policy, VMPL, chip id) lives at a fixed offset of a little-endian structure, and a
verifier that misreads one offset accepts what it should refuse. This module is the one place
that knows the offsets; it decides nothing.

Byte layout (all integers little-endian; AMD SEV-SNP Firmware ABI specification, AMD document
56860, "ATTESTATION_REPORT Structure"; cross-checked against google/go-sev-guest ``abi/abi.go``
@ 42a71173, virtee/sev ``src/firmware/guest/types/snp.rs`` @ e7b634d5 and real reports, see
``tests/data/sev_snp/SOURCES.md``)::

    0x000  4  VERSION            2, 3, 4, 5 understood
    0x004  4  GUEST_SVN
    0x008  8  POLICY             guest policy (bits below)
    0x010 16  FAMILY_ID
    0x020 16  IMAGE_ID
    0x030  4  VMPL
    0x034  4  SIGNATURE_ALGO     1 = ECDSA P-384 with SHA-384
    0x038  8  CURRENT_TCB        TCB_VERSION (layout per product, ``tcb.py``)
    0x040  8  PLATFORM_INFO
    0x048  4  signer info        bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY
                                 (0 VCEK, 1 VLEK, 7 none), bits 31:5 zero
    0x04C  4  reserved (zero)
    0x050 64  REPORT_DATA        chosen by the guest (here: binds the node key and a nonce)
    0x090 48  MEASUREMENT        launch digest
    0x0C0 32  HOST_DATA          chosen by the host at launch
    0x0E0 48  ID_KEY_DIGEST
    0x110 48  AUTHOR_KEY_DIGEST
    0x140 32  REPORT_ID
    0x160 32  REPORT_ID_MA
    0x180  8  REPORTED_TCB       the TCB the VCEK was derived from
    0x188  3  CPUID family, model, stepping (version >= 3; reserved before)
    0x18B 21  reserved (zero)    (version 2: 0x188..0x1A0 reserved)
    0x1A0 64  CHIP_ID            (Turin: 8 bytes used, the rest zero)
    0x1E0  8  COMMITTED_TCB
    0x1E8  4  CURRENT build, minor, major, reserved
    0x1EC  4  COMMITTED build, minor, major, reserved
    0x1F0  8  LAUNCH_TCB
    0x1F8  8  LAUNCH_MIT_VECTOR  (version 5; reserved before)
    0x200  8  CURRENT_MIT_VECTOR (version 5; reserved before)
    0x208 ..  reserved up to 0x2A0 (zero)
    0x2A0 72  SIGNATURE R        little-endian, zero-padded
    0x2E8 72  SIGNATURE S
    0x330 368 reserved (zero)

The signature covers bytes ``0x000..0x29F`` exactly as received.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from consortium_node.attestation.errors import QuoteFormatError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
KNOWN_VERSIONS = frozenset({2, 3, 4, 5})
ECDSA_P384_SHA384 = 1
SIGNATURE_COMPONENT = 72

# Guest policy bits (ABI specification "Guest Policy"; go-sev-guest abi.go).
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17  # must be 1
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_KNOWN_BITS = (1 << 26) - 1  # bits 63:26 must be zero

SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7

_FIELDS = (  # name, offset, size (bytes fields)
    ("family_id", 0x010, 16),
    ("image_id", 0x020, 16),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("chip_id", 0x1A0, 64),
)


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _u64(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


@dataclass(frozen=True)
class Report:
    """One parsed report; ``raw`` keeps the bytes the signature covers."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: tuple[int, int, int] | None  # family, model, stepping (version >= 3)
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]  # major, minor, build
    committed_version: tuple[int, int, int]
    launch_tcb: int
    launch_mit_vector: int | None  # version >= 5
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        """Bytes ``0x000..0x29F``: what the signature covers."""
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> int:
        """SIGNING_KEY (signer info bits 4:2): 0 VCEK, 1 VLEK, 7 none."""
        return (self.signer_info >> 2) & 0x7

    @property
    def mask_chip_key(self) -> bool:
        """MASK_CHIP_KEY: the firmware did not sign the report (signature is zero)."""
        return bool(self.signer_info & 0x2)

    @property
    def debug(self) -> bool:
        """Guest policy DEBUG: the host may read and change the guest's memory."""
        return bool(self.policy & POLICY_DEBUG)

    @property
    def migrate_ma(self) -> bool:
        """Guest policy MIGRATE_MA: a migration agent may export the guest."""
        return bool(self.policy & POLICY_MIGRATE_MA)


def parse_report(data: bytes) -> Report:
    """Decode ``data`` (exactly ``REPORT_SIZE`` bytes); ``QuoteFormatError("report", …)``
    otherwise. Decodes any version; ``zero_violations`` and the verifier judge it."""
    if not isinstance(data, bytes | bytearray) or len(data) != REPORT_SIZE:
        size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
        raise QuoteFormatError("report", f"must be {REPORT_SIZE} bytes, got {size}")
    raw = bytes(data)
    version = _u32(raw, 0x000)
    blobs = {name: raw[offset : offset + size] for name, offset, size in _FIELDS}
    return Report(
        raw=raw,
        version=version,
        guest_svn=_u32(raw, 0x004),
        policy=_u64(raw, 0x008),
        vmpl=_u32(raw, 0x030),
        signature_algo=_u32(raw, 0x034),
        current_tcb=_u64(raw, 0x038),
        platform_info=_u64(raw, 0x040),
        signer_info=_u32(raw, 0x048),
        reported_tcb=_u64(raw, 0x180),
        cpuid=(raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None,
        committed_tcb=_u64(raw, 0x1E0),
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=_u64(raw, 0x1F0),
        launch_mit_vector=_u64(raw, 0x1F8) if version >= 5 else None,
        current_mit_vector=_u64(raw, 0x200) if version >= 5 else None,
        signature_r=int.from_bytes(raw[0x2A0 : 0x2A0 + SIGNATURE_COMPONENT], "little"),
        signature_s=int.from_bytes(raw[0x2E8 : 0x2E8 + SIGNATURE_COMPONENT], "little"),
        **blobs,
    )


def zero_violations(report: Report) -> list[str]:
    """Reserved ranges and bits that are not zero (go-sev-guest's checks), as ``0xAAA..0xBBB``
    ranges or bit names; empty when the report is well formed. Only ranges reserved in the
    report's version are checked (version 4/5 fill 0x1F8..)."""
    raw = report.raw
    ranges = [(0x04C, 0x050), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x330, REPORT_SIZE)]
    ranges.append((0x18B if report.version >= 3 else 0x188, 0x1A0))
    ranges.append((0x208 if report.version >= 5 else 0x1F8, SIGNED_SIZE))
    found = [f"bytes 0x{a:03X}..0x{b - 1:03X}" for a, b in ranges if any(raw[a:b])]
    if report.signer_info >> 5:
        found.append("signer info bits 31:5")
    if report.policy & ~POLICY_KNOWN_BITS:
        found.append("policy bits 63:26")
    if not report.policy & POLICY_RESERVED_ONE:
        found.append("policy bit 17 (must be one)")
    return found


@dataclass(frozen=True)
class ReportBody:
    """What an (emulated) firmware puts in a report; ``build_report`` lays it out."""

    version: int
    policy: int
    vmpl: int
    current_tcb: int
    reported_tcb: int
    committed_tcb: int
    launch_tcb: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    chip_id: bytes
    report_id: bytes
    cpuid: tuple[int, int, int]
    firmware: tuple[int, int, int] = (1, 55, 1)  # major, minor, build
    guest_svn: int = 0
    platform_info: int = 0x1  # SMT enabled
    signing_key: int = SIGNING_KEY_VCEK


def build_report(body: ReportBody, r: int = 0, s: int = 0) -> bytes:
    """The 1184 bytes of ``body`` with signature ``(r, s)`` (zero: to be signed)."""
    sizes = {"report_data": 64, "measurement": 48, "host_data": 32, "chip_id": 64, "report_id": 32}
    for name, size in sizes.items():
        if len(getattr(body, name)) != size:
            raise ValueError(f"{name} must be {size} bytes")
    raw = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", raw, 0x000, body.version, body.guest_svn, body.policy)
    struct.pack_into("<IIQQI", raw, 0x030, body.vmpl, ECDSA_P384_SHA384, body.current_tcb,
                     body.platform_info, body.signing_key << 2)  # fmt: skip
    for name, offset in (("report_data", 0x050), ("measurement", 0x090), ("host_data", 0x0C0),
                         ("report_id", 0x140), ("chip_id", 0x1A0)):  # fmt: skip
        value = getattr(body, name)
        raw[offset : offset + len(value)] = value
    raw[0x160:0x180] = b"\xff" * 32  # REPORT_ID_MA: no migration agent
    struct.pack_into("<Q", raw, 0x180, body.reported_tcb)
    if body.version >= 3:
        raw[0x188:0x18B] = bytes(body.cpuid)
    major, minor, build = body.firmware
    struct.pack_into("<QBBBxBBBxQ", raw, 0x1E0, body.committed_tcb, build, minor, major,
                     build, minor, major, body.launch_tcb)  # fmt: skip
    if body.version >= 5:
        struct.pack_into("<QQ", raw, 0x1F8, 0, 0)
    raw[0x2A0 : 0x2A0 + SIGNATURE_COMPONENT] = r.to_bytes(SIGNATURE_COMPONENT, "little")
    raw[0x2E8 : 0x2E8 + SIGNATURE_COMPONENT] = s.to_bytes(SIGNATURE_COMPONENT, "little")
    return bytes(raw)
