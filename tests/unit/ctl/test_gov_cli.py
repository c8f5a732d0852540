"""``consortiumctl propose | vote | withdraw | ack | proposals show``: documents signed on the
member's machine, validated with the nodes' own code before signing, verifiable offline."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consortium_node.ctl.main import main
from consortium_node.governance.documents import Signer, verify_document
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate

HEX_A, HEX_B = "ab" * 32, "cd" * 32


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    for name, kind in (("alice", "p256"), ("bob", "ed25519")):
        assert main(["keygen", "--name", name, "--kind", kind, "--out-dir", str(tmp_path)]) == 0
    return tmp_path


def member(ids: Path, name: str, status: str = "Active") -> Signer:
    pem = (ids / f"{name}_cert.pem").read_text()
    member_id = keys.member_id_of(certificate_der(load_certificate(pem)))
    return Signer(member_id, pem, "governor", status)


def sign(ids: Path, who: str, *args: str) -> list[str]:
    return [
        *args,
        "--consortium",
        "demo",
        "--cert",
        str(ids / f"{who}_cert.pem"),
        "--key",
        str(ids / f"{who}_privk.pem"),
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def test_propose_signs_the_actions_in_command_line_order(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ids / "p.cose"
    constitution = ids / "constitution.json"
    constitution.write_text(json.dumps({"threshold": 2, "auto_approve": ["trust_node"]}))
    argv = sign(ids, "alice", "propose", "--out", str(out))
    argv += ["--add-measurement", HEX_A, "--add-member", f"{ids / 'bob_cert.pem'}:user"]
    argv += ["--set-attestation-validity", "24h:8h", "--retire-node", HEX_B]
    argv += ["--set-constitution", str(constitution), "--rotate-ledger-secret"]
    code, shown, err = run(argv, capsys)
    assert code == 0, err
    envelope = out.read_bytes()
    assert shown == {
        "type": "proposal",
        "proposal_id": hashlib.sha256(envelope).hexdigest(),
        "out": str(out),
    }
    doc = verify_document(
        envelope, "proposal", "demo", {m.member_id: m for m in [member(ids, "alice")]}
    )
    names = [a["name"] for a in doc.payload["actions"]]
    assert names == [
        "add_measurement",
        "add_member",
        "set_attestation_validity",
        "retire_node",
        "set_constitution",
        "rotate_ledger_secret",
    ]
    args = [a["args"] for a in doc.payload["actions"]]
    assert args[1]["role"] == "user" and args[1]["member_id"] == member(ids, "bob").member_id
    assert args[2] == {"validity_seconds": 86400, "renew_before_seconds": 28800}
    assert args[4]["constitution"]["threshold"] == 2
    created = datetime.fromisoformat(doc.payload["created_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)


def test_propose_sets_the_sev_snp_policy_and_refuses_a_bad_one(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = ids / "snp.json"
    policy.write_text(json.dumps({"minimum_tcb": {"Genoa": {"snp": 23}}, "products": ["Genoa"]}))
    out = ids / "p.cose"
    argv = sign(ids, "alice", "propose", "--out", str(out))
    code, _, err = run([*argv, "--set-sev-snp-policy", str(policy)], capsys)
    assert code == 0, err
    doc = verify_document(
        out.read_bytes(), "proposal", "demo", {m.member_id: m for m in [member(ids, "alice")]}
    )
    assert doc.payload["actions"] == [
        {
            "name": "set_sev_snp_policy",
            "args": {"policy": {"minimum_tcb": {"Genoa": {"snp": 23}}, "allow_debug": False,
                                "vmpl": 0, "products": ["Genoa"]}},
        }
    ]  # fmt: skip
    policy.write_text(json.dumps({"vmpl": 9}))
    code, _, err = run([*argv, "--set-sev-snp-policy", str(policy)], capsys)
    assert code != 0
    assert "actions[0].args.policy.vmpl" in err


def test_propose_sets_and_clears_recovery_keys(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--recovery", "--name", "alice", "--out-dir", str(ids)]) == 0
    capsys.readouterr()
    alice = member(ids, "alice").member_id
    out = ids / "p.cose"
    argv = sign(ids, "alice", "propose", "--out", str(out))
    argv += ["--set-recovery-key", f"{alice}:{ids / 'alice_recovery_pubk.pem'}"]
    argv += ["--set-recovery-key", f"{HEX_B}:none"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    doc = verify_document(out.read_bytes(), "proposal", "demo", {alice: member(ids, "alice")})
    first, second = (a["args"] for a in doc.payload["actions"])
    assert first["member_id"] == alice
    assert first["recovery_key"] == (ids / "alice_recovery_pubk.pem").read_text()
    assert second == {"member_id": HEX_B, "recovery_key": None}
    # A signing certificate is no recovery key: refused before anything is signed.
    bad = sign(ids, "alice", "propose", "--out", str(ids / "q.cose"))
    bad += ["--set-recovery-key", f"{alice}:{ids / 'alice_cert.pem'}"]
    code, _, err = run(bad, capsys)
    assert code == 2 and "recovery_key" in err, err
    assert not (ids / "q.cose").exists()
    code, _, err = run([*bad[:-2], "--set-recovery-key", "no-colon"], capsys)
    assert code == 2 and "MEMBER_ID:PUBKEY.pem" in err, err


def test_actions_file_comes_first_then_the_flags(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = ids / "actions.json"
    listed.write_text(json.dumps([{"name": "trust_node", "args": {"node_id": HEX_A}}]))
    out = ids / "p.cose"
    argv = sign(ids, "alice", "propose", "--out", str(out), "--actions", str(listed))
    code, _, err = run([*argv, "--add-host-data", HEX_B], capsys)
    assert code == 0, err
    payload = json.loads(load_payload(out))
    assert [a["name"] for a in payload["actions"]] == ["trust_node", "add_host_data"]


def load_payload(path: Path) -> bytes:
    from consortium_node.identity.cose import decode_sign1  # noqa: PLC0415

    return decode_sign1(path.read_bytes()).payload


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--add-measurement", "XYZ"], "actions[0].args.measurement", id="bad-hex"),
        pytest.param(
            ["--add-measurement", HEX_A, "--remove-measurement", HEX_A],
            "actions[1]: touches measurement:",
            id="same-subject-twice",
        ),
        pytest.param(["--set-attestation-validity", "8h:24h"], "renew_before_seconds", id="renew"),
        pytest.param(["--set-attestation-validity", "soon"], "expected e.g. 24h:8h", id="duration"),
        pytest.param(["--add-member", "nocolon"], "CERT.pem:ROLE", id="member-format"),
        pytest.param([], "at least one action", id="no-action"),
    ],
)
def test_bad_proposals_are_not_signed(
    ids: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = ids / "p.cose"
    code, _, err = run([*sign(ids, "alice", "propose", "--out", str(out)), *extra], capsys)
    assert code == 2
    assert message in err
    assert not out.exists()


def test_a_key_that_is_not_the_certificates_is_refused(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sign(ids, "alice", "propose", "--out", str(ids / "p.cose"), "--rotate-ledger-secret")
    argv[argv.index("--key") + 1] = str(ids / "bob_privk.pem")
    code, _, err = run(argv, capsys)
    assert code == 2 and "--key is not the private key of --cert" in err


def test_vote_withdraw_and_ack_verify_as_a_node_would(
    ids: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proposal = ids / "p.cose"
    assert (
        main([*sign(ids, "alice", "propose", "--out", str(proposal)), "--add-measurement", HEX_A])
        == 0
    )
    pid = hashlib.sha256(proposal.read_bytes()).hexdigest()
    members = {m.member_id: m for m in (member(ids, "alice"), member(ids, "bob"))}
    for how, vote in (
        (["--proposal", str(proposal)], "--approve"),
        (["--proposal-id", pid], "--reject"),
    ):
        ballot = ids / "b.cose"
        assert main([*sign(ids, "bob", "vote", "--out", str(ballot)), *how, vote]) == 0
        doc = verify_document(ballot.read_bytes(), "ballot", "demo", members)
        assert doc.payload["proposal_id"] == pid
        assert doc.payload["vote"] == vote.removeprefix("--")
    withdrawal = ids / "w.cose"
    assert (
        main([*sign(ids, "alice", "withdraw", "--out", str(withdrawal)), "--proposal-id", pid]) == 0
    )
    assert verify_document(withdrawal.read_bytes(), "withdrawal", "demo", members).signer == (
        member(ids, "alice").member_id
    )
    ack = ids / "a.cose"
    assert main([*sign(ids, "bob", "ack", "--out", str(ack))]) == 0
    newcomer = member(ids, "bob", status="Accepted")
    doc = verify_document(ack.read_bytes(), "ack", "demo", {newcomer.member_id: newcomer})
    assert doc.payload["member_id"] == newcomer.member_id
    capsys.readouterr()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        pytest.param([], "exactly one of --proposal", id="neither"),
        pytest.param(["--proposal-id", "ab" * 32, "--proposal", "x"], "exactly one", id="both"),
        pytest.param(["--proposal-id", "AB" * 32], "64 lowercase hex", id="bad-id"),
        pytest.param(["--proposal", "/nonexistent.cose"], "cannot read", id="missing-file"),
    ],
)
def test_vote_needs_exactly_one_valid_proposal_reference(
    ids: Path, capsys: pytest.CaptureFixture[str], how: list[str], message: str
) -> None:
    ballot = ids / "b.cose"
    code, _, err = run([*sign(ids, "bob", "vote", "--out", str(ballot)), *how, "--approve"], capsys)
    assert code == 2 and message in err
    assert not ballot.exists()


def test_proposals_show_decodes_and_verifies(ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proposal = ids / "p.cose"
    assert (
        main([*sign(ids, "alice", "propose", "--out", str(proposal)), "--trust-node", HEX_A]) == 0
    )
    capsys.readouterr()
    code, shown, _ = run(["proposals", "show", str(proposal)], capsys)
    assert code == 0
    assert shown["type"] == "proposal" and shown["signer"] == member(ids, "alice").member_id
    assert shown["id"] == hashlib.sha256(proposal.read_bytes()).hexdigest()
    assert "verified" not in shown
    alice_cert = str(ids / "alice_cert.pem")
    code, shown, _ = run(["proposals", "show", str(proposal), "--signer-cert", alice_cert], capsys)
    assert code == 0 and shown["verified"] is True
    bob_cert = str(ids / "bob_cert.pem")
    code, _, err = run(["proposals", "show", str(proposal), "--signer-cert", bob_cert], capsys)
    assert code == 1 and "not by the --signer-cert's member" in err
    tampered = ids / "t.cose"
    data = bytearray(proposal.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    code, _, err = run(["proposals", "show", str(tampered), "--signer-cert", alice_cert], capsys)
    assert code == 1 and "does not verify" in err
    garbage = ids / "g.cose"
    garbage.write_bytes(b"hello")
    code, _, err = run(["proposals", "show", str(garbage)], capsys)
    assert code == 1 and "not a governance document" in err


def test_out_dash_writes_the_document_to_stdout(
    ids: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main([*sign(ids, "alice", "propose", "--out", "-"), "--rotate-ledger-secret"]) == 0
    envelope = capsysbinary.readouterr().out
    doc = verify_document(
        envelope, "proposal", "demo", {member(ids, "alice").member_id: member(ids, "alice")}
    )
    assert doc.payload["actions"] == [{"name": "rotate_ledger_secret", "args": {}}]


def test_proposals_show_renders_a_rotation(ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proposal = ids / "rotate.cose"
    argv = sign(ids, "alice", "propose", "--out", str(proposal), "--rotate-ledger-secret")
    assert main(argv) == 0
    capsys.readouterr()
    alice_cert = str(ids / "alice_cert.pem")
    code, shown, _ = run(["proposals", "show", str(proposal), "--signer-cert", alice_cert], capsys)
    assert code == 0 and shown["verified"] is True
    assert shown["payload"]["actions"] == [{"name": "rotate_ledger_secret", "args": {}}]
