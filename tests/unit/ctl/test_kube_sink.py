"""``consortiumctl propose|vote|withdraw … --kube NAME``: signed documents into a Proposal
object through ``kubectl`` — here a fake one ($KUBECTL) that records its arguments and stdin
and answers with canned objects."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from consortium_node.ctl.main import main
from consortium_node.governance.documents import Signer, verify_document
from tests.unit.ctl.test_gov_cli import member, run, sign

HEX_A = "ab" * 32

FAKE_KUBECTL = """#!{python}
import json, os, sys
state = os.environ["FAKE_KUBECTL_STATE"]
stdin = sys.stdin.read()
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin}}) + "\\n")
verb = sys.argv[1]
failure = os.path.join(state, verb + ".fail")
if os.path.exists(failure):
    sys.stderr.write(open(failure).read())
    sys.exit(1)
namespace = sys.argv[sys.argv.index("--namespace") + 1] if "--namespace" in sys.argv else "default"
if verb == "create":
    obj = json.loads(stdin)
    obj["metadata"].update(namespace=namespace, resourceVersion="1", uid="u-1")
else:
    obj = json.load(open(os.path.join(state, "object.json")))
sys.stdout.write(json.dumps(obj))
"""


class Kubectl:
    """The fake's state directory: the object it serves, failures to make, the calls made."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def serve(self, obj: dict[str, Any]) -> None:
        (self.state / "object.json").write_text(json.dumps(obj))

    def fail(self, verb: str, stderr: str) -> None:
        (self.state / f"{verb}.fail").write_text(stderr)

    def calls(self) -> list[dict[str, Any]]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kubectl:
    state = tmp_path / "kubectl-state"
    state.mkdir()
    binary = tmp_path / "kubectl"
    binary.write_text(FAKE_KUBECTL.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(binary))
    monkeypatch.setenv("FAKE_KUBECTL_STATE", str(state))
    return Kubectl(state)


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    out = tmp_path / "ids"
    for name, kind in (("alice", "p256"), ("bob", "ed25519")):
        assert main(["keygen", "--name", name, "--kind", kind, "--out-dir", str(out)]) == 0
    return out


def members(ids: Path) -> dict[str, Signer]:
    return {s.member_id: s for s in (member(ids, "alice"), member(ids, "bob"))}


def a_proposal(ids: Path, capsys: pytest.CaptureFixture[str]) -> bytes:
    path = ids / "p.cose"
    assert (
        main([*sign(ids, "alice", "propose", "--out", str(path)), "--add-measurement", HEX_A]) == 0
    )
    capsys.readouterr()
    return path.read_bytes()


def proposal_object(raw: bytes, ballots: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"consortium": "demo", "proposal": base64.b64encode(raw).decode()}
    if ballots is not None:
        spec["ballots"] = ballots
    return {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "Proposal",
        "metadata": {"name": "upgrade", "namespace": "ns", "resourceVersion": "42"},
        "spec": spec,
    }


# --- propose ------------------------------------------------------------------------------------


def test_propose_creates_the_proposal_object(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*sign(ids, "alice", "propose", "--kube", "upgrade", "--namespace", "ns")]
    code, shown, err = run([*argv, "--add-measurement", HEX_A], capsys)
    assert code == 0, err
    (call,) = kubectl.calls()
    assert call["argv"] == ["create", "-f", "-", "-o", "json", "--namespace", "ns"]
    manifest = json.loads(call["stdin"])
    assert manifest["apiVersion"] == "consortium.tee.dev/v1alpha1"
    assert manifest["kind"] == "Proposal"
    assert manifest["metadata"] == {"name": "upgrade"}
    assert set(manifest["spec"]) == {"consortium", "proposal"}
    assert manifest["spec"]["consortium"] == "demo"
    raw = base64.b64decode(manifest["spec"]["proposal"], validate=True)
    doc = verify_document(raw, "proposal", "demo", members(ids))
    assert doc.payload["actions"] == [{"name": "add_measurement", "args": {"measurement": HEX_A}}]
    assert shown == {
        "proposal": "ns/upgrade",
        "type": "proposal",
        "id": hashlib.sha256(raw).hexdigest(),
    }


def test_without_namespace_kubectl_chooses(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*sign(ids, "alice", "propose", "--kube", "upgrade"), "--rotate-ledger-secret"]
    code, shown, err = run(argv, capsys)
    assert code == 0, err
    assert "--namespace" not in kubectl.calls()[0]["argv"]
    assert shown["proposal"] == "default/upgrade"


def test_out_and_kube_together_write_the_same_document(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ids / "copy.cose"
    argv = sign(ids, "alice", "propose", "--kube", "upgrade", "--out", str(out))
    code, _, err = run([*argv, "--add-measurement", HEX_A], capsys)
    assert code == 0, err
    manifest = json.loads(kubectl.calls()[0]["stdin"])
    assert base64.b64decode(manifest["spec"]["proposal"]) == out.read_bytes()


# --- vote ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "op"),
    [
        pytest.param(None, {"op": "add", "path": "/spec/ballots"}, id="first-ballot-creates-list"),
        pytest.param(["eA=="], {"op": "add", "path": "/spec/ballots/-"}, id="appends"),
    ],
)
def test_vote_reads_the_id_from_the_object_and_appends_with_a_guard(
    ids: Path,
    kubectl: Kubectl,
    capsys: pytest.CaptureFixture[str],
    existing: list[str] | None,
    op: dict[str, Any],
) -> None:
    raw = a_proposal(ids, capsys)
    kubectl.serve(proposal_object(raw, existing))
    argv = sign(ids, "bob", "vote", "--kube", "upgrade", "--namespace", "ns", "--approve")
    code, shown, err = run(argv, capsys)
    assert code == 0, err
    calls = kubectl.calls()
    assert {c["argv"][0] for c in calls[:-1]} == {"get"}
    assert calls[0]["argv"] == ["get", "proposal", "upgrade", "-o", "json", "--namespace", "ns"]
    patch_argv = calls[-1]["argv"]
    assert patch_argv[:5] == ["patch", "proposal", "upgrade", "--type", "json"]
    assert patch_argv[-2:] == ["--namespace", "ns"]
    patch = json.loads(patch_argv[patch_argv.index("-p") + 1])
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert {k: v for k, v in patch[1].items() if k != "value"} == op
    value = patch[1]["value"]
    b64 = value[0] if isinstance(value, list) else value
    assert isinstance(value, list) is (existing is None)
    ballot = base64.b64decode(b64, validate=True)
    doc = verify_document(ballot, "ballot", "demo", members(ids))
    assert doc.payload["proposal_id"] == hashlib.sha256(raw).hexdigest()
    assert doc.payload["vote"] == "approve"
    assert shown["type"] == "ballot" and shown["id"] == hashlib.sha256(ballot).hexdigest()


def test_a_ballot_for_another_proposal_is_not_put(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = a_proposal(ids, capsys)
    kubectl.serve(proposal_object(raw))
    argv = sign(ids, "bob", "vote", "--kube", "upgrade", "--proposal-id", HEX_A, "--reject")
    code, _, err = run(argv, capsys)
    assert code == 1
    carried = hashlib.sha256(raw).hexdigest()
    assert f"Proposal upgrade carries proposal {carried[:16]}" in err
    assert f"this ballot is for {HEX_A[:16]}" in err
    assert [c["argv"][0] for c in kubectl.calls()] == ["get"]


def test_a_proposal_object_without_a_proposal_is_an_error(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = proposal_object(b"")
    del obj["spec"]["proposal"]
    kubectl.serve(obj)
    code, _, err = run(sign(ids, "bob", "vote", "--kube", "upgrade", "--approve"), capsys)
    assert code == 1
    assert "Proposal upgrade has no spec.proposal" in err


# --- withdraw and ack ---------------------------------------------------------------------------


def test_withdraw_is_a_merge_patch(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = a_proposal(ids, capsys)
    kubectl.serve(proposal_object(raw))
    code, _, err = run(sign(ids, "alice", "withdraw", "--kube", "upgrade"), capsys)
    assert code == 0, err
    patch_argv = kubectl.calls()[-1]["argv"]
    assert patch_argv[:5] == ["patch", "proposal", "upgrade", "--type", "merge"]
    patch = json.loads(patch_argv[patch_argv.index("-p") + 1])
    assert list(patch) == ["spec"] and list(patch["spec"]) == ["withdrawal"]
    doc = verify_document(
        base64.b64decode(patch["spec"]["withdrawal"]), "withdrawal", "demo", members(ids)
    )
    assert doc.payload["proposal_id"] == hashlib.sha256(raw).hexdigest()
    assert doc.signer == member(ids, "alice").member_id


def member_object(ids: Path, who: str, consortium: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "Member",
        "metadata": {"name": who, "namespace": "ns", "resourceVersion": "7"},
        "spec": {
            "consortium": consortium,
            "certificate": (ids / f"{who}_cert.pem").read_text(),
            "role": "governor",
        },
    }


def test_an_ack_goes_into_the_members_own_object(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.serve(member_object(ids, "bob"))
    code, shown, err = run(sign(ids, "bob", "ack", "--kube", "bob", "--namespace", "ns"), capsys)
    assert code == 0, err
    get, patch = kubectl.calls()
    assert get["argv"] == ["get", "member", "bob", "-o", "json", "--namespace", "ns"]
    assert patch["argv"][:5] == ["patch", "member", "bob", "--type", "merge"]
    body = json.loads(patch["argv"][patch["argv"].index("-p") + 1])
    assert set(body) == {"spec"} and set(body["spec"]) == {"acknowledgement"}
    ack = base64.b64decode(body["spec"]["acknowledgement"], validate=True)
    bob = member(ids, "bob", status="Accepted")
    doc = verify_document(ack, "ack", "demo", {bob.member_id: bob})
    assert doc.payload == {"type": "ack", "consortium": "demo", "member_id": bob.member_id}
    assert shown == {"member": "ns/bob", "type": "ack", "id": hashlib.sha256(ack).hexdigest()}


@pytest.mark.parametrize(
    ("served", "message"),
    [
        pytest.param("alice", "each member acknowledges with its own key", id="another-member"),
        pytest.param("other", "belongs to consortium 'other'", id="another-consortium"),
    ],
)
def test_an_ack_into_someone_elses_member_is_not_put(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str], served: str, message: str
) -> None:
    obj = member_object(ids, "alice") if served == "alice" else member_object(ids, "bob", served)
    kubectl.serve(obj)
    code, out, err = run(sign(ids, "bob", "ack", "--kube", "alice"), capsys)
    assert code == 1
    assert message in err and out == ""
    assert [c["argv"][0] for c in kubectl.calls()] == ["get"]  # nothing patched


# --- kubectl failures ---------------------------------------------------------------------------


def test_a_kubectl_failure_shows_its_stderr(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    message = 'Error from server (AlreadyExists): proposals.consortium.tee.dev "upgrade" exists'
    kubectl.fail("create", message + "\n")
    argv = [*sign(ids, "alice", "propose", "--kube", "upgrade"), "--add-measurement", HEX_A]
    code, out, err = run(argv, capsys)
    assert code == 1
    assert "--kube:" in err and message in err
    assert out == ""


def test_a_conflicting_append_fails_with_kubectls_message(
    ids: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.serve(proposal_object(a_proposal(ids, capsys)))
    kubectl.fail("patch", "The request is invalid: the server rejected our request (test failed)")
    code, _, err = run(sign(ids, "bob", "vote", "--kube", "upgrade", "--approve"), capsys)
    assert code == 1
    assert "test failed" in err


def test_a_missing_kubectl_is_a_usage_error(
    ids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECTL", str(tmp_path / "no-such-kubectl"))
    argv = [*sign(ids, "alice", "propose", "--kube", "upgrade"), "--add-measurement", HEX_A]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "cannot run" in err and "no-such-kubectl" in err
    assert os.environ["KUBECTL"].endswith("no-such-kubectl")
