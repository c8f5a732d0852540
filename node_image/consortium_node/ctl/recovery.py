"""``consortiumctl recovery check-share`` and ``submit-share``: a recovery member's part, on its
own machine.

``submit-share`` (the ceremony, ``docs/recovery.md``): fetch the record from the recovery node
(the recovered public ledger), decrypt this member's share with its recovery key, **verify the
recovery node's attestation** (a fresh quote for a random nonce, against the measurements the
member allows: ``--measurement``), wrap the share to the key that quote attests
(``recovery.ceremony.seal_submission``), sign a ``recovery_share`` document with the member's
key and post it. Only the attested enclave can open the share; it is never printed.

``check-share``:
Why: a recovery share that was never opened may not open on the day it is needed (a lost
key file, the wrong key registered). A member can check at any time, without a disaster and
without revealing anything, that its recovery key opens its share of the current recovery
record and that the share is the one the record committed to. The record is public ledger
data: from a node (``GET /gov/recovery``; the node's TLS identity checked with the service
certificate) or from a file (e.g. read from a backup). The share itself is never printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.ctl import attest, kube_sink
from consortium_node.ctl.client import (
    EXIT_USAGE,
    CtlError,
    NodeClient,
    describe_error,
    read_input,
    service_cert_pem,
)
from consortium_node.ctl.gov import member_identity
from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.identity.errors import IdentityError
from consortium_node.recovery.ceremony import seal_submission
from consortium_node.recovery.record import RecoveryError, check_record, open_share


def _member_id(path: str) -> str:
    try:
        cert = load_certificate(read_input(path, "--cert"), "--cert")
    except IdentityError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc
    return keys.member_id_of(certificate_der(cert))


def _recovery_key(path: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = keys.load_private_key(read_input(path, "--recovery-key"))
    except (ValueError, TypeError, IdentityError) as exc:
        raise CtlError(f"--recovery-key: not a PEM private key: {exc}", EXIT_USAGE) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CtlError("--recovery-key: expected a P-256 key (keygen --recovery)", EXIT_USAGE)
    return key


def _record(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    if args.record:
        try:
            found = json.loads(read_input(args.record, "--record"))
        except ValueError as exc:
            raise CtlError(f"--record: not JSON: {exc}", EXIT_USAGE) from exc
        found = found.get("record", found) if isinstance(found, dict) else found
        return check_record(found), None
    if not args.node or not args.service_cert:
        raise CtlError("give --record FILE, or --node URL with --service-cert", EXIT_USAGE)
    client = NodeClient(args.node, service_cert_pem(args.service_cert), None, None)
    body = client.json("GET", "/gov/recovery")
    return check_record(body.get("record")), str(body.get("txid"))


def cmd_check_share(args: argparse.Namespace) -> int:
    member_id = _member_id(args.cert)
    key = _recovery_key(args.recovery_key)
    try:
        record, txid = _record(args)
        share = open_share(record, args.consortium, member_id, key)
    except RecoveryError as exc:
        raise CtlError(f"recovery share check failed: {exc}") from exc
    print(
        json.dumps(
            {
                "ok": True,
                "member_id": member_id,
                "epoch": record["epoch"],
                "share_index": share.index,
                "threshold": record["threshold"],
                "recovery_members": len(record["shares"]),
                "secret_versions": record["secret_versions"],
                "txid": txid,
            },
            indent=2,
            sort_keys=True,
        )
    )
    return 0


def _from_node(args: argparse.Namespace) -> tuple[NodeClient, dict[str, Any], dict[str, Any]]:
    """The recovery node's quote answer (for a fresh nonce) and record, from the node."""
    client = NodeClient(args.node, service_cert_pem(args.service_cert), None, None)
    state = client.json("GET", "/recovery")
    _check_phase(state.get("phase"), args.node)
    nonce = os.urandom(32)
    answer = client.json("GET", "/node/quote", {"nonce": nonce.hex()})
    answer["nonce"] = nonce.hex()
    return client, answer, client.json("GET", "/gov/recovery").get("record")


def _from_kube(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The quote the operator published (``status.recovery.attestation``: the member verifies
    it here, the operator is not trusted with it) and the record, from the Consortium."""
    found = kube_sink.read_consortium(args.kube, args.namespace)
    shown = (found.get("status") or {}).get("recovery") or {}
    _check_phase(shown.get("phase"), f"Consortium {args.kube}")
    attestation = shown.get("attestation")
    if not isinstance(attestation, dict) or shown.get("record") is None:
        raise CtlError(
            f"Consortium {args.kube} shows no recovery node quote yet (status.recovery."
            "attestation): the operator publishes it once the recovery node answers; retry"
        )
    answer = {
        "node_id": attestation.get("nodeId"),
        "public_key": attestation.get("publicKey"),
        "quote": attestation.get("quote"),
        "nonce": attestation.get("nonce"),
    }
    return answer, shown["record"]


def _check_phase(phase: object, where: str) -> None:
    if phase != "WaitingForRecoveryShares":
        raise CtlError(f"{where} is {phase!r}, not WaitingForRecoveryShares: no share is taken")


def cmd_submit_share(args: argparse.Namespace) -> int:
    if bool(args.node) == bool(args.kube):
        raise CtlError("give --node URL (with --service-cert) or --kube CONSORTIUM", EXIT_USAGE)
    if args.node and not args.service_cert:
        raise CtlError("--node needs --service-cert (the recovered service's)", EXIT_USAGE)
    signing_key, cert_pem, member_id = member_identity(args)
    recovery_key = _recovery_key(args.recovery_key)
    registry, policy = attest.registry_of(args), attest.policy_of(args)
    client = None
    if args.node:
        client, answer, found = _from_node(args)
    else:
        answer, found = _from_kube(args)
    try:
        nonce = bytes.fromhex(str(answer.get("nonce")))
    except ValueError as exc:
        raise CtlError(f"the quote's nonce is not hex: {exc}") from exc
    claims = attest.verified_claims(registry, answer, nonce, policy)  # before anything is sent
    node_id = claims.public_key_sha256
    node_key = keys.load_public_key(str(answer["public_key"]).encode())
    if not isinstance(node_key, ec.EllipticCurvePublicKey) or answer.get("node_id") != node_id:
        raise CtlError("the recovery node's attested key is not a P-256 key of its node_id")
    try:
        record = check_record(found)
        share = open_share(record, args.consortium, member_id, recovery_key)
    except RecoveryError as exc:
        raise CtlError(f"recovery share not submitted: {exc}") from exc
    epoch = record["epoch"]
    sealed = seal_submission(node_key, share, consortium=args.consortium, epoch=epoch,
                             member_id=member_id, node_id=node_id)  # fmt: skip
    payload = {"type": "recovery_share", "consortium": args.consortium, "epoch": epoch,
               "node_id": node_id, "share": sealed}  # fmt: skip
    envelope = sign_document(signing_key, cert_pem, payload)
    shown: dict[str, Any] = {"member_id": member_id, "node_id": node_id,
                             "measurement": claims.measurement, "epoch": epoch}  # fmt: skip
    if client is not None:
        resp = client.request("POST", "/recovery/shares", raw=envelope)
        if resp.status != 200:
            raise CtlError(f"recovery share refused: {describe_error(resp)}")
        shown.update(resp.json())
    else:
        b64 = base64.b64encode(envelope).decode("ascii")
        obj = kube_sink.put_recovery_share(args.kube, args.namespace, member_id, b64)
        meta = obj["metadata"]
        shown["member"] = f"{meta['namespace']}/{meta['name']}"
        shown["relayed_by"] = "the operator (status.recoveryShare of the Member says when)"
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def _command(recovery: Any, name: str, text: str, *, signs: bool) -> Any:
    """A ``recovery`` subcommand with the member's flags (``--key`` if it signs)."""
    parser = recovery.add_parser(
        name, help=text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consortium", required=True, help="the consortium's name")
    parser.add_argument("--cert", required=True, help="your member certificate (PEM)")
    if signs:
        parser.add_argument("--key", required=True, help="your member private key (signs)")
    parser.add_argument(
        "--recovery-key", required=True, help="your recovery private key (keygen --recovery)"
    )
    return parser


def add_commands(sub: Any) -> None:
    """Register ``recovery check-share`` and ``recovery submit-share`` on ``sub``."""
    recovery = sub.add_parser("recovery", help="recovery shares").add_subparsers(
        dest="recovery_command", required=True
    )
    check = _command(
        recovery,
        "check-share",
        "check, on your machine, that your recovery key opens your share",
        signs=False,
    )
    check.add_argument("--record", help="the recovery record as JSON (instead of --node)")
    check.add_argument("--node", help="https://HOST:PORT of any node")
    check.add_argument("--service-cert", help="the consortium's service certificate, with --node")
    check.set_defaults(func=cmd_check_share)
    submit = _command(
        recovery,
        "submit-share",
        "decrypt your share on your machine and submit it to the attested recovery node",
        signs=True,
    )
    submit.add_argument("--node", help="https://HOST:PORT of the recovery node")
    submit.add_argument("--service-cert", help="the recovered service's (new) certificate")
    submit.add_argument(
        "--kube", metavar="CONSORTIUM", help="through Kubernetes: the Consortium's name"
    )
    submit.add_argument("--namespace", help="with --kube: its namespace (kubectl's default)")
    attest.add_policy_flags(submit)
    submit.set_defaults(func=cmd_submit_share)
