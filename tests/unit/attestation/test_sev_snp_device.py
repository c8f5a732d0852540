"""The SEV-SNP guest interfaces against doubles of the kernel: a tmp_path playing configfs-tsm
(populated on mkdir, counting writes in ``generation``) and a fake ioctl playing
/dev/sev-guest (reading the request structs by address and writing responses back)."""

from __future__ import annotations

import ctypes
import errno
import struct
import uuid
from pathlib import Path

import pytest

from consortium_node.attestation.sev_snp.device import (
    ARK_GUID,
    ASK_GUID,
    GUEST_FIELD_MEASUREMENT,
    GUEST_FIELD_POLICY,
    REPORT_SIZE,
    ROOT_KEY_VMRK,
    SNP_GET_DERIVED_KEY,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    VCEK_GUID,
    VLEK_GUID,
    ConfigfsTsm,
    DeviceError,
    ReportResponse,
    SevGuestDevice,
    parse_certificate_table,
)

NONCE = bytes(range(64))
REPORT = bytes((i * 7) & 0xFF for i in range(REPORT_SIZE))
KEY = bytes(range(100, 132))


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """A GHCB certificate table: headers (RFC 4122 GUID bytes), terminator, certificates."""
    offset = (len(entries) + 1) * 24
    headers, bodies = b"", b""
    for guid, der in entries:
        headers += uuid.UUID(guid).bytes + struct.pack("<II", offset + len(bodies), len(der))
        bodies += der
    return headers + bytes(24) + bodies


CERTS = {VCEK_GUID: b"vcek-der", ASK_GUID: b"ask-der", ARK_GUID: b"ark-der!"}
TABLE = cert_table(list(CERTS.items()))


# ----------------------------------------------------------------------------- configfs-tsm


class FakeConfigfs(ConfigfsTsm):
    """configfs-tsm on a tmp_path: mkdir shows the attributes, each write bumps generation,
    and the first ``races`` reads of outblob see another writer bump it too."""

    def __init__(
        self,
        root: Path,
        *,
        provider: str = "sev_guest",
        outblob: bytes = REPORT,
        auxblob: bytes | None = TABLE,
        races: int = 0,
        attempts: int = 3,
    ) -> None:
        super().__init__(root, attempts=attempts)
        self.provider, self.outblob, self.auxblob, self.races = provider, outblob, auxblob, races
        self.writes: list[tuple[str, bytes]] = []
        self.made: list[Path] = []
        self.removed: list[Path] = []

    def _mkdir(self, entry: Path) -> None:
        super()._mkdir(entry)
        self.made.append(entry)
        (entry / "provider").write_text(self.provider + "\n")
        (entry / "generation").write_text("0\n")
        (entry / "outblob").write_bytes(self.outblob)
        if self.auxblob is not None:
            (entry / "auxblob").write_bytes(self.auxblob)

    def _write(self, path: Path, data: bytes) -> None:
        super()._write(path, data)
        self.writes.append((path.name, data))
        self._bump(path.parent)

    def _read(self, path: Path) -> bytes:
        data = super()._read(path)
        if path.name == "outblob" and self.races > 0:
            self.races -= 1
            self._bump(path.parent)
        return data

    def _rmdir(self, entry: Path) -> None:
        for child in entry.iterdir():
            child.unlink()
        super()._rmdir(entry)
        self.removed.append(entry)

    @staticmethod
    def _bump(entry: Path) -> None:
        generation = entry / "generation"
        generation.write_text(f"{int(generation.read_text()) + 1}\n")


def test_configfs_report_and_certificates(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path, outblob=REPORT + b"\0" * 16)
    assert tsm.available()
    response = tsm.report(NONCE)
    assert response == ReportResponse(REPORT, CERTS)
    assert tsm.writes == [("inblob", NONCE)]  # no privlevel unless asked
    assert tsm.made == tsm.removed and not any(tmp_path.iterdir())


def test_configfs_privlevel_written_when_asked(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path)
    tsm.report(NONCE, privlevel=2)
    assert tsm.writes == [("privlevel", b"2"), ("inblob", NONCE)]
    with pytest.raises(ValueError, match="privlevel"):
        tsm.report(NONCE, privlevel=4)


def test_configfs_answers_the_extended_report_call_of_the_device(tmp_path: Path) -> None:
    """VMPL 0 leaves privlevel to the kernel; another VMPL is written as privlevel."""
    tsm = FakeConfigfs(tmp_path)
    assert tsm.extended_report(NONCE) == ReportResponse(REPORT, CERTS)
    assert tsm.writes == [("inblob", NONCE)]
    tsm.writes.clear()
    tsm.extended_report(NONCE, vmpl=2)
    assert tsm.writes == [("privlevel", b"2"), ("inblob", NONCE)]


@pytest.mark.parametrize("auxblob", [None, b""])
def test_configfs_without_certificates(tmp_path: Path, auxblob: bytes | None) -> None:
    assert FakeConfigfs(tmp_path, auxblob=auxblob).report(NONCE).certificates == {}


def test_configfs_refuses_another_provider(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path, provider="tdx_guest")
    with pytest.raises(DeviceError, match="'tdx_guest'"):
        tsm.report(NONCE)
    assert tsm.writes == [] and len(tsm.removed) == 1 and not any(tmp_path.iterdir())


def test_configfs_refuses_a_short_outblob(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path, outblob=REPORT[:-1])
    with pytest.raises(DeviceError, match=f"outblob: {REPORT_SIZE - 1} bytes"):
        tsm.report(NONCE)
    assert len(tsm.removed) == 1 and not any(tmp_path.iterdir())


def test_configfs_retries_after_a_race(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path, races=1)
    assert tsm.report(NONCE).report == REPORT
    assert len(tsm.made) == 2 and tsm.made == tsm.removed and not any(tmp_path.iterdir())


def test_configfs_gives_up_when_every_attempt_races(tmp_path: Path) -> None:
    tsm = FakeConfigfs(tmp_path, races=100, attempts=4)
    with pytest.raises(DeviceError, match="each of 4 attempts"):
        tsm.report(NONCE)
    assert len(tsm.removed) == 4 and not any(tmp_path.iterdir())


def test_configfs_names_the_failing_path(tmp_path: Path) -> None:
    tsm = ConfigfsTsm(tmp_path / "absent")
    assert not tsm.available()
    with pytest.raises(DeviceError, match=r"absent.*errno"):
        tsm.report(NONCE)


def test_report_data_must_be_64_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        FakeConfigfs(tmp_path).report(NONCE[:63])
    with pytest.raises(ValueError, match="64 bytes"):
        SevGuestDevice(tmp_path, ioctl=FakeSevGuest()).report(NONCE + b"x")


# ---------------------------------------------------------------------------- /dev/sev-guest

REQUEST_SIZES = {SNP_GET_REPORT: 96, SNP_GET_DERIVED_KEY: 32, SNP_GET_EXT_REPORT: 112}


class FakeSevGuest:
    """The kernel side of /dev/sev-guest: records (request number, msg_version, request
    struct bytes) and answers like sev-guest.c, including the too-small-buffer dance."""

    def __init__(
        self,
        *,
        status: int = 0,
        report_size: int = REPORT_SIZE,
        certs: bytes = TABLE,
        fail: tuple[int, int] | None = None,  # (errno, exitinfo2) to fail every call with
    ) -> None:
        self.status, self.report_size, self.certs, self.fail = status, report_size, certs, fail
        self.calls: list[tuple[int, int, bytes]] = []

    def __call__(self, fd: int, request: int, buffer: bytearray) -> int:
        assert len(buffer) == 32
        version, req, resp, _ = struct.unpack("<B7xQQQ", buffer)
        body = ctypes.string_at(req, REQUEST_SIZES[request])
        self.calls.append((request, version, body))
        if self.fail is not None:
            struct.pack_into("<Q", buffer, 24, self.fail[1])
            raise OSError(self.fail[0], "fake failure")
        if request == SNP_GET_DERIVED_KEY:
            ctypes.memmove(resp, struct.pack("<I28x", self.status) + KEY, 64)
            return 0
        if request == SNP_GET_EXT_REPORT:
            address, size = struct.unpack_from("<QI", body, 96)
            needed = -(-len(self.certs) // 4096) * 4096
            if needed > size:  # sev-guest.c: certs_len updated, EIO, vmm_error INVALID_LEN
                ctypes.memmove(req + 104, struct.pack("<I", needed), 4)
                struct.pack_into("<Q", buffer, 24, 1 << 32)
                raise OSError(errno.EIO, "Input/output error")
            ctypes.memmove(address, self.certs, len(self.certs))
        answer = struct.pack("<II24x", self.status, self.report_size) + REPORT
        ctypes.memmove(resp, answer, len(answer))
        return 0


def device(tmp_path: Path, fake: FakeSevGuest) -> SevGuestDevice:
    (tmp_path / "sev-guest").touch()  # opened for real; the fake ioctl ignores the fd
    return SevGuestDevice(tmp_path / "sev-guest", ioctl=fake)


def test_ioctl_numbers_are_the_kernels() -> None:
    # _IOWR('S', nr, 32-byte struct snp_guest_request_ioctl); go-sev-guest computes the same.
    assert (SNP_GET_REPORT, SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT) == (
        0xC0205300,
        0xC0205301,
        0xC0205302,
    )


def test_report_request_carries_user_data_and_vmpl(tmp_path: Path) -> None:
    fake = FakeSevGuest()
    dev = device(tmp_path, fake)
    assert dev.available()
    assert dev.report(NONCE, vmpl=1) == REPORT
    [(request, version, body)] = fake.calls
    assert (request, version) == (SNP_GET_REPORT, 1)
    assert body == NONCE + struct.pack("<I", 1) + bytes(28)


def test_firmware_status_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"SNP_GET_REPORT: firmware status 0x16 \(SEV_RET_INV"):
        device(tmp_path, FakeSevGuest(status=0x16)).report(NONCE)
    with pytest.raises(DeviceError, match="report_size 1000"):
        device(tmp_path, FakeSevGuest(report_size=1000)).report(NONCE)


def test_ioctl_failure_names_errno_and_errors(tmp_path: Path) -> None:
    fake = FakeSevGuest(fail=(errno.EIO, (2 << 32) | 0x27))
    with pytest.raises(DeviceError) as caught:
        device(tmp_path, fake).derived_key(guest_field_select=0)
    message = str(caught.value)
    assert "sev-guest: SNP_GET_DERIVED_KEY" in message and "errno 5" in message
    assert "fw_error 0x27 (SEV_RET_INVALID_KEY)" in message and "vmm_error 0x2" in message


def test_missing_device_is_named(tmp_path: Path) -> None:
    dev = SevGuestDevice(tmp_path / "sev-guest", ioctl=FakeSevGuest())
    assert not dev.available()
    with pytest.raises(DeviceError, match="sev-guest: cannot open"):
        dev.report(NONCE)


def test_extended_report_with_certificates(tmp_path: Path) -> None:
    fake = FakeSevGuest()
    assert device(tmp_path, fake).extended_report(NONCE, vmpl=2) == ReportResponse(REPORT, CERTS)
    [(request, _, body)] = fake.calls
    assert request == SNP_GET_EXT_REPORT
    assert body[:96] == NONCE + struct.pack("<I", 2) + bytes(28)
    address, size = struct.unpack_from("<QI", body, 96)
    assert address != 0 and size == 0x4000  # SEV_FW_BLOB_MAX_SIZE, page-aligned


def test_extended_report_retries_with_the_size_the_host_asks(tmp_path: Path) -> None:
    big = [(VLEK_GUID, b"v" * 20000), (ASK_GUID, b"ask"), (ARK_GUID, b"ark")]
    fake = FakeSevGuest(certs=cert_table(big))
    response = device(tmp_path, fake).extended_report(NONCE)
    assert response.certificates == dict(big)
    sizes = [struct.unpack_from("<I", body, 104)[0] for _, _, body in fake.calls]
    assert sizes == [0x4000, 0x5000]


def test_extended_report_without_certificates(tmp_path: Path) -> None:
    assert device(tmp_path, FakeSevGuest(certs=b"")).extended_report(NONCE).certificates == {}


def test_derived_key_request_fields(tmp_path: Path) -> None:
    fake = FakeSevGuest()
    key = device(tmp_path, fake).derived_key(
        root_key_select=ROOT_KEY_VMRK,
        guest_field_select=GUEST_FIELD_MEASUREMENT | GUEST_FIELD_POLICY,
        vmpl=1,
        guest_svn=7,
        tcb_version=0x1122334455667788,
    )
    assert key == KEY
    [(request, version, body)] = fake.calls
    assert (request, version) == (SNP_GET_DERIVED_KEY, 1)
    assert struct.unpack("<IIQIIQ", body) == (1, 0, 0b1001, 1, 7, 0x1122334455667788)
    with pytest.raises(DeviceError, match="SNP_GET_DERIVED_KEY: firmware status 0x16"):
        device(tmp_path, FakeSevGuest(status=0x16)).derived_key(guest_field_select=0)
    with pytest.raises(ValueError, match="guest_svn"):
        device(tmp_path, fake).derived_key(guest_field_select=0, guest_svn=-1)


# ------------------------------------------------------------------------- certificate table


def test_certificate_table_round_trip() -> None:
    assert parse_certificate_table(TABLE) == CERTS
    assert parse_certificate_table(TABLE + bytes(100)) == CERTS  # the ioctl's zero padding
    assert parse_certificate_table(b"") == parse_certificate_table(bytes(4096)) == {}


def test_certificate_table_guid_byte_order() -> None:
    # RFC 4122 order on the wire (go-sev-guest, virtee/sev), not the mixed-endian bytes_le.
    assert TABLE[:4] == bytes.fromhex("63da758d")


def test_certificate_table_entry_outside_the_blob() -> None:
    bad = bytearray(TABLE)
    struct.pack_into("<I", bad, 24 + 20, 1000)  # entry 1 (ASK): length 1000
    with pytest.raises(DeviceError, match=rf"entry 1 \({ASK_GUID}\).*outside"):
        parse_certificate_table(bytes(bad))
    struct.pack_into("<II", bad, 24 + 16, 10, 4)  # entry 1: inside the headers
    with pytest.raises(DeviceError, match=r"entry 1 .*outside"):
        parse_certificate_table(bytes(bad))


def test_certificate_table_without_terminator() -> None:
    headers_only = TABLE[: 3 * 24]
    with pytest.raises(DeviceError, match="entry 3: no all-zero terminator"):
        parse_certificate_table(headers_only)


def test_certificate_table_duplicate_guid() -> None:
    with pytest.raises(DeviceError, match=rf"entry 1 \({VCEK_GUID}\): GUID repeated"):
        parse_certificate_table(cert_table([(VCEK_GUID, b"a"), (VCEK_GUID, b"b")]))


def test_certificate_table_empty_entry() -> None:
    with pytest.raises(DeviceError, match=r"entry 0 .*empty"):
        parse_certificate_table(cert_table([(VCEK_GUID, b"")]))
