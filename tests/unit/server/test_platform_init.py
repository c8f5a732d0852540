"""``consortium-node platform-init``: an emulated platform's endorsements, written as files the
node configuration names, private ones readable by their owner only, never overwritten
silently."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from consortium_node.attestation import AttesterSettings, Policy, platforms
from consortium_node.identity import keys
from consortium_node.server.main import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_every_endorsement_file_with_its_privacy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platform-init", "--out", str(tmp_path)]) == 0
    platform = platforms.by_name(platforms.DEFAULT)
    files = {e.file: tmp_path / f"platform-{e.file}" for e in platform.endorsements}
    material = {name: path.read_bytes() for name, path in files.items()}
    for e in platform.endorsements:
        assert _mode(files[e.file]) == (0o600 if e.private else 0o644), e.file
    # What was written is usable: a quote of the platform's attester made with it verifies.
    settings = AttesterSettings("chip-0", 1, "ab" * 32, "cd" * 32, material)
    key = keys.public_key_der(keys.generate_key("p256").public_key())
    quote = platform.attester(settings).quote(key, b"n" * 32).to_json()
    policy = Policy(frozenset({"ab" * 32}), frozenset({"cd" * 32}))
    registry = platforms.verifier_registry({platform.name: material})
    assert registry.verify(quote, public_key_der=key, nonce=b"n" * 32, policy=policy).ok
    assert "INSECURE" in capsys.readouterr().out  # an emulation says so


def test_refuses_to_replace_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platform-init", "--out", str(tmp_path)]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["platform-init", "--out", str(tmp_path)]) == 1
    assert "use --force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main(["platform-init", "--out", str(tmp_path), "--force"]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} != before


def test_an_unknown_platform_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["platform-init", "--out", str(tmp_path), "--platform", "sev-snp-typo"])
    assert exc.value.code == 2
    assert list(tmp_path.iterdir()) == []
