"""``consortiumctl keygen --recovery``: a recovery member's encryption key pair, the private
half readable by its owner only, the public half what a recovery record encrypts a share to."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.ctl.main import main
from consortium_node.recovery.record import build_record, open_share


def test_a_recovery_key_pair_opens_its_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--recovery", "--name", "alice", "--out-dir", str(tmp_path)]) == 0
    said = json.loads(capsys.readouterr().out)
    private, public = Path(said["recovery_private_key"]), Path(said["recovery_public_key"])
    assert (private.name, public.name) == ("alice_recovery_privk.pem", "alice_recovery_pubk.pem")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert not (tmp_path / "alice_cert.pem").exists()  # no certificate: not a signing identity
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
        pub, ec.EllipticCurvePublicKey
    )
    assert isinstance(pub.curve, ec.SECP256R1) and "PRIVATE" not in public.read_text()

    record = build_record("demo", 1, {1: bytes(32)}, {"aa" * 32: pub}, 1)
    assert open_share(record, "demo", "aa" * 32, key).index == 1


def test_an_existing_recovery_key_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["keygen", "--recovery", "--name", "alice", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "alice_recovery_privk.pem").read_bytes()
    assert main(args) != 0
    assert "exists; use --force" in capsys.readouterr().err
    assert (tmp_path / "alice_recovery_privk.pem").read_bytes() == before
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "alice_recovery_privk.pem").read_bytes() != before
