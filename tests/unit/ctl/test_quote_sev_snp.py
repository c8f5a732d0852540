"""``consortiumctl quote verify --platform sev-snp --report …``: an auditor's check of a real
SEV-SNP report with nothing of the project running; claims as JSON and exit 0, or the reason
and exit 1; usage errors (exit 2) name the flag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consortium_node.ctl.main import main

DATA = Path(__file__).parents[2] / "data" / "sev_snp"
MILAN = (
    "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f"
    "98189887920ab2fa0096903a0c23fca1"
)


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["quote", "verify", "--platform", "sev-snp", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_a_real_report_verifies_and_prints_its_claims(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chain = DATA / "milan_chain.pem"
    args = ["--report", str(DATA / "milan.bin"), "--vcek", str(chain), "--chain", str(chain)]
    args += ["--allow-measurement", MILAN, "--report-data", "00" * 64]
    code, claims, err = verify(capsys, *args, "--snp-min-tcb", "Milan:snp=24")
    assert code == 0, err
    assert claims["verified"] is True
    assert (claims["version"], claims["product"], claims["vmpl"]) == (3, "Milan-B0", 0)
    assert claims["measurement"] == MILAN
    assert claims["reported_tcb"] == {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219}
    assert claims["chip_id"].startswith("4ffb5cb4fd594f3f")
    assert claims["policy"]["debug"] is False
    # The same report as hex text, the VCEK alone as DER-in-PEM: AMD's ASK and ARK are pinned.
    hex_report = tmp_path / "report.hex"
    hex_report.write_text((DATA / "milan.bin").read_bytes().hex().upper() + "\n")
    code, again, err = verify(capsys, "--report", str(hex_report), "--vcek", str(chain))
    assert code == 0, err
    assert again == claims


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--report", "gsg_milan.bin", "--vcek", "gsg_milan_chain.pem"], "DebugEnabled"),
        (
            [
                "--report",
                "milan.bin",
                "--vcek",
                "milan_chain.pem",
                "--allow-measurement",
                "00" * 48,
            ],
            "MeasurementNotAllowed",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--measurement", "00" * 48],
            "MeasurementNotAllowed",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--snp-min-tcb", "Milan:snp=25"],
            "TcbTooLow",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--report-data", "11" * 64],
            "ReportDataMismatch",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--product", "Genoa"],
            "ProductNotAllowed",
        ),
        (["--report", "milan.bin", "--vcek", "genoa_chain.pem"], "EndorsementMismatch"),
        (["--report", "v2_milan.bin", "--vcek", "milan_chain.pem"], "EndorsementMismatch"),
    ],
)
def test_refusals_print_the_reason_and_exit_1(
    capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    args = [str(DATA / a) if a.endswith((".bin", ".pem")) else a for a in args]
    code, out, err = verify(capsys, *args)
    assert code == 1
    assert out is None
    assert f"quote refused: {reason}: " in err


def test_a_chain_ending_in_another_products_root_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = verify(capsys, "--report", str(DATA / "milan.bin"),
                          "--vcek", str(DATA / "milan_chain.pem"),
                          "--chain", str(DATA / "genoa_chain.pem"))  # fmt: skip
    assert code == 1
    assert "quote refused: BadEndorsement: " in err
    assert "ARK-Genoa" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report", "milan.bin"], "--report needs --vcek"),
        (["--report", "milan.chain.none", "--vcek", "milan_chain.pem"], "--report: cannot read"),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--report-data", "ab"],
            "--report-data: expected 64 bytes",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--snp-min-tcb", "Milan=1"],
            "--snp-min-tcb 'Milan=1': expected PRODUCT:COMPONENT=SPL",
        ),
        (
            ["--report", "milan.bin", "--vcek", "milan_chain.pem", "--snp-min-tcb", "Milan:fmc=1"],
            "not a TCB component of Milan",
        ),
        (["--report", "SOURCES.md", "--vcek", "milan_chain.pem"], "--report: neither 1184"),
    ],
)
def test_usage_errors_name_the_flag(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [str(DATA / a) if a.endswith((".bin", ".pem", ".none", ".md")) else a for a in args]
    code, _, err = verify(capsys, *args)
    assert code == 2
    assert message in err


def test_a_report_needs_the_sev_snp_platform(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["quote", "verify", "--report", str(DATA / "milan.bin"),
                 "--vcek", str(DATA / "milan_chain.pem")])  # fmt: skip
    assert code == 2
    assert "give --platform sev-snp" in capsys.readouterr().err
