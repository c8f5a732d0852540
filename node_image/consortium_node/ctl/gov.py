"""``consortiumctl`` governance documents: sign proposals, ballots, withdrawals and acks.

Members sign on their own machine: the private key never leaves it, and the signed document
(a COSE_Sign1 file, see ``governance/documents.py``) can travel any way — to a node, or into
a Kubernetes ``Proposal`` object. Everything is validated before it is signed, with the same
code the nodes run, so a member learns about a bad action here and not after a vote.

    propose   --consortium C --cert --key SINK  ACTION...   (or --actions FILE.json)
    vote      --consortium C --cert --key SINK  (--proposal FILE | --proposal-id ID)
              (--approve | --reject)
    withdraw  --consortium C --cert --key SINK  (--proposal FILE | --proposal-id ID)
    ack       --consortium C --cert --key SINK
    proposals list --node URL --service-cert PEM
    proposals show ID --node URL --service-cert PEM     state, tally, documents, txid
    proposals show FILE [--signer-cert PEM]             decode a document; verify its signature

SINK is ``--out FILE`` (keep the document), ``--node URL --service-cert PEM`` (submit it to any
node: a backup forwards it to the primary), ``--kube NAME [--namespace NS]`` (into the
Kubernetes ``Proposal`` NAME — for an ack, the member's own ``Member`` NAME — for the operator
to relay; see ``kube_sink.py``), or several. With ``--kube``, vote and withdraw take the
proposal id from the Proposal object when neither ``--proposal`` nor ``--proposal-id`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from consortium_node.common.timeutil import parse_duration, rfc3339, utcnow
from consortium_node.ctl import kube_sink
from consortium_node.ctl.client import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CtlError,
    NodeClient,
    describe_error,
    error_code,
    load_json_input,
    read_input,
)
from consortium_node.governance.actions import is_sha256_hex, parse_actions
from consortium_node.governance.documents import (
    KINDS,
    Signer,
    document_id,
    sign_document,
    verify_document,
)
from consortium_node.governance.errors import GovernanceError
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, certificate_pem, load_certificate
from consortium_node.identity.cose import decode_sign1
from consortium_node.identity.errors import IdentityError

# --flag: (action name, argument names parsed from the flag's value)
BY_ID = {
    "remove-member": ("remove_member", "member_id"),
    "trust-node": ("trust_node", "node_id"),
    "retire-node": ("retire_node", "node_id"),
    "add-measurement": ("add_measurement", "measurement"),
    "remove-measurement": ("remove_measurement", "measurement"),
    "add-host-data": ("add_host_data", "host_data"),
    "remove-host-data": ("remove_host_data", "host_data"),
}


Identity = tuple[keys.PrivateKey, str, str]  # key, certificate PEM, member_id


def member_identity(args: argparse.Namespace) -> Identity:
    """The signing key, certificate PEM and member_id of ``--key``/``--cert``."""
    try:
        key = keys.load_private_key(read_input(args.key, "--key"))
        cert = load_certificate(read_input(args.cert, "--cert"), "--cert")
    except IdentityError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc
    if keys.public_key_der(key) != keys.public_key_der(cert.public_key()):  # type: ignore[arg-type]
        raise CtlError("--key is not the private key of --cert", EXIT_USAGE)
    return key, certificate_pem(cert), keys.member_id_of(certificate_der(cert))


def _write(path: str, envelope: bytes) -> None:
    try:
        if path == "-":
            sys.stdout.buffer.write(envelope)
        else:
            Path(path).write_bytes(envelope)
    except OSError as exc:
        raise CtlError(f"--out: cannot write {path}: {exc}", EXIT_USAGE) from exc


def _client(args: argparse.Namespace) -> NodeClient:
    if not args.service_cert:
        raise CtlError(
            "--node needs --service-cert (the consortium's service certificate)", EXIT_USAGE
        )
    try:
        pem = certificate_pem(load_certificate(read_input(args.service_cert, "--service-cert")))
    except IdentityError as exc:
        raise CtlError(f"--service-cert: {exc}", EXIT_USAGE) from exc
    return NodeClient(args.node, pem)


def submit(client: NodeClient, path: str, envelope: bytes) -> Any:
    """POST a signed document to any node: a backup forwards it to the primary.

    A node that cannot (no primary known yet, or a node older than forwarding) answers 503
    NotLeader naming the primary's address: it is asked once — and if that address does not
    resolve or connect from here (a cluster DNS name, seen from outside the cluster), the error
    says so instead of a bare "cannot connect".
    """
    resp = client.request("POST", path, raw=envelope)
    if resp.status == 503 and error_code(resp) == "NotLeader":
        leader = (resp.json().get("error") or {}).get("leader_address")
        if leader:
            try:
                resp = NodeClient(f"https://{leader}", client.service_cert_pem).request(
                    "POST", path, raw=envelope
                )
            except CtlError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                raise CtlError(
                    f"POST {path}: {client.base} is not the primary and could not forward the "
                    f"document; it names the primary {leader}, which is not reachable from "
                    f"here ({exc}). Retry in a moment, or reach the primary directly "
                    "(on Kubernetes: --kube NAME lets the operator relay it)",
                    EXIT_UNREACHABLE,
                ) from exc
    if resp.status != 200:
        raise CtlError(f"POST {path}: {describe_error(resp)}")
    return resp.json()


def _path(payload: dict[str, Any]) -> str:
    kind = payload["type"]
    if kind == "proposal":
        return "/gov/proposals"
    if kind == "ack":
        return "/gov/members/ack"
    action = "ballots" if kind == "ballot" else "withdraw"
    return f"/gov/proposals/{payload['proposal_id']}/{action}"


def _require_sink(args: argparse.Namespace) -> None:
    if not args.out and not args.node and not args.kube:
        raise CtlError(
            "give --out FILE (keep the signed document), --node URL (submit it), --kube NAME "
            "(put it into a Kubernetes Proposal; an ack into your Member), or several",
            EXIT_USAGE,
        )


def _sign(
    args: argparse.Namespace, payload: dict[str, Any], identity: Identity | None = None
) -> int:
    _require_sink(args)
    key, pem, _ = identity or member_identity(args)
    envelope = sign_document(key, pem, payload)
    if args.out:
        _write(args.out, envelope)
    if args.node:
        answer = submit(_client(args), _path(payload), envelope)
        print(json.dumps(answer, indent=2, sort_keys=True))
    if args.kube:
        obj = kube_sink.put(args.kube, args.namespace, payload, envelope)
        meta = obj["metadata"]
        where = "member" if payload["type"] == "ack" else "proposal"
        shown = {where: f"{meta['namespace']}/{meta['name']}", "type": payload["type"]}
        shown["id"] = document_id(envelope)
        print(json.dumps(shown, indent=2, sort_keys=True))
    elif not args.node and args.out != "-":
        summary = {"type": payload["type"], "id": document_id(envelope), "out": args.out}
        if payload["type"] == "proposal":
            summary["proposal_id"] = summary.pop("id")
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def collect_actions(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The actions the flags describe, in the order given, then validated as a node would."""
    actions: list[dict[str, Any]] = (
        list(load_json_input(args.actions, "--actions")) if args.actions else []
    )
    for flag, value in args.ordered:
        if flag in BY_ID:
            name, arg = BY_ID[flag]
            actions.append({"name": name, "args": {arg: value}})
        elif flag == "add-member":
            path, _, role = value.rpartition(":")
            if not path:
                raise CtlError(
                    "--add-member: expected CERT.pem:ROLE (governor or user)", EXIT_USAGE
                )
            pem = read_input(path, "--add-member").decode("utf-8", "replace")
            actions.append({"name": "add_member", "args": {"certificate": pem, "role": role}})
        elif flag == "set-attestation-validity":
            validity, _, renew = value.partition(":")
            try:
                v, r = parse_duration(validity), parse_duration(renew)
            except ValueError as exc:
                raise CtlError(
                    f"--set-attestation-validity: {exc} (expected e.g. 24h:8h)", EXIT_USAGE
                ) from exc
            actions.append(
                {
                    "name": "set_attestation_validity",
                    "args": {
                        "validity_seconds": int(v.total_seconds()),
                        "renew_before_seconds": int(r.total_seconds()),
                    },
                }
            )
        elif flag == "set-recovery-key":
            member_id, _, path = value.partition(":")
            if not member_id or not path:
                raise CtlError(
                    "--set-recovery-key: expected MEMBER_ID:PUBKEY.pem (or MEMBER_ID:none)",
                    EXIT_USAGE,
                )
            key = (
                None
                if path == "none"
                else read_input(path, "--set-recovery-key").decode("utf-8", "replace")
            )
            actions.append(
                {"name": "set_recovery_key", "args": {"member_id": member_id, "recovery_key": key}}
            )
        elif flag == "set-constitution":
            constitution = load_json_input(value, "--set-constitution")
            actions.append({"name": "set_constitution", "args": {"constitution": constitution}})
        elif flag == "set-sev-snp-policy":
            policy = load_json_input(value, "--set-sev-snp-policy")
            actions.append({"name": "set_sev_snp_policy", "args": {"policy": policy}})
        elif flag == "rotate-ledger-secret":
            actions.append({"name": "rotate_ledger_secret", "args": {}})
        elif flag == "transition-service-to-open":
            actions.append({"name": "transition_service_to_open", "args": {}})
    if not actions:
        raise CtlError("propose: give at least one action (see --help)", EXIT_USAGE)
    try:
        return [a.to_json() for a in parse_actions(actions)]
    except GovernanceError as exc:
        raise CtlError(f"not signed: {exc}", EXIT_USAGE) from exc


class _Ordered(argparse.Action):
    """Keep action flags in command-line order (a proposal's actions are applied in order)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        found = list(getattr(namespace, "ordered", None) or [])
        found.append((self.dest.replace("_", "-"), values))
        namespace.ordered = found


def cmd_propose(args: argparse.Namespace) -> int:
    actions = collect_actions(args)
    payload = {
        "type": "proposal",
        "consortium": args.consortium,
        "created_at": rfc3339(utcnow()),
        "actions": actions,
    }
    return _sign(args, payload)


def _proposal_id(args: argparse.Namespace) -> str:
    if args.kube and not args.proposal and not args.proposal_id:
        return kube_sink.proposal_id_of(kube_sink.read_proposal(args.kube, args.namespace))
    if bool(args.proposal) == bool(args.proposal_id):
        raise CtlError("give exactly one of --proposal FILE and --proposal-id ID", EXIT_USAGE)
    if args.proposal:
        return document_id(read_input(args.proposal, "--proposal"))
    pid = str(args.proposal_id)
    if not is_sha256_hex(pid):
        raise CtlError("--proposal-id: expected 64 lowercase hex digits", EXIT_USAGE)
    return pid


def cmd_vote(args: argparse.Namespace) -> int:
    vote = "approve" if args.approve else "reject"
    payload = {
        "type": "ballot",
        "consortium": args.consortium,
        "proposal_id": _proposal_id(args),
        "vote": vote,
    }
    return _sign(args, payload)


def cmd_withdraw(args: argparse.Namespace) -> int:
    payload = {
        "type": "withdrawal",
        "consortium": args.consortium,
        "proposal_id": _proposal_id(args),
    }
    return _sign(args, payload)


def cmd_ack(args: argparse.Namespace) -> int:
    _require_sink(args)
    identity = member_identity(args)
    payload = {"type": "ack", "consortium": args.consortium, "member_id": identity[2]}
    return _sign(args, payload, identity)


def _summary(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "proposal_id": p["proposal_id"],
        "state": p["state"],
        "reason": p["reason"],
        "actions": [a["name"] for a in p["actions"]],
        "tally": p["tally"],
        "created_at": p["created_at"],
    }


def cmd_proposals_list(args: argparse.Namespace) -> int:
    answer = _client(args).json("GET", "/gov/proposals")
    print(json.dumps([_summary(p) for p in answer["proposals"]], indent=2, sort_keys=True))
    return 0


def cmd_proposals_show(args: argparse.Namespace) -> int:
    if args.node:
        pid = args.document
        if not is_sha256_hex(pid):
            raise CtlError("with --node, give the proposal id (64 lowercase hex)", EXIT_USAGE)
        print(
            json.dumps(_client(args).json("GET", f"/gov/proposals/{pid}"), indent=2, sort_keys=True)
        )
        return 0
    envelope = read_input(args.document, "document")
    try:
        message = decode_sign1(envelope)
        payload = json.loads(message.payload)
    except (IdentityError, ValueError) as exc:
        raise CtlError(f"{args.document}: not a governance document: {exc}") from exc
    kind = payload.get("type") if isinstance(payload, dict) else None
    signer = message.kid.hex() if message.kid else None
    shown: dict[str, Any] = {
        "id": document_id(envelope),
        "type": kind,
        "signer": signer,
        "payload": payload,
    }
    if args.signer_cert:
        cert = load_certificate(read_input(args.signer_cert, "--signer-cert"), "--signer-cert")
        pem = certificate_pem(cert)
        member_id = keys.member_id_of(certificate_der(cert))
        if signer != member_id:
            raise CtlError(
                f"{args.document}: signed by member {signer}, not by the --signer-cert's "
                f"member {member_id}"
            )
        if kind not in KINDS or not isinstance(payload, dict):
            raise CtlError(f"{args.document}: type {kind!r} is not one of {list(KINDS)}")
        # Verify as a node would, with the given certificate as an Active governor (or an
        # Accepted member for an ack): only the signature and the payload's form are checked.
        status = "Accepted" if kind == "ack" else "Active"
        members = {member_id: Signer(member_id, pem, "governor", status)}
        try:
            verify_document(envelope, kind, str(payload.get("consortium")), members)
        except GovernanceError as exc:
            raise CtlError(f"{args.document}: does not verify: {exc}") from exc
        shown["verified"] = True
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def _signing_args(p: argparse.ArgumentParser, kind: str = "Proposal") -> None:
    p.add_argument("--consortium", required=True, help="the consortium's name (signed in)")
    p.add_argument("--cert", required=True, help="your member certificate (PEM)")
    p.add_argument("--key", required=True, help="your private key (PEM); it is not sent anywhere")
    p.add_argument("--out", help="where to write the signed document (- for stdout)")
    p.add_argument("--node", help="submit it to this node (https://HOST:PORT; any node)")
    p.add_argument("--service-cert", help="the consortium's service certificate, with --node")
    p.add_argument("--kube", metavar="NAME", help=f"put it into the Kubernetes {kind} NAME")
    p.add_argument("--namespace", help=f"the {kind}'s namespace, with --kube (else kubectl's)")


def add_commands(sub: Any) -> None:
    """Register the governance commands on ``consortiumctl``'s subparsers."""
    pp = sub.add_parser("propose", help="sign a proposal (actions in command-line order)")
    _signing_args(pp)
    pp.add_argument("--actions", help='a JSON list of {"name", "args"} actions (before the flags)')
    for flag, (_, arg) in BY_ID.items():
        pp.add_argument(f"--{flag}", action=_Ordered, metavar=arg.upper())
    pp.add_argument("--add-member", action=_Ordered, metavar="CERT.pem:ROLE")
    pp.add_argument("--set-attestation-validity", action=_Ordered, metavar="VALIDITY:RENEW")
    pp.add_argument("--set-constitution", action=_Ordered, metavar="FILE.json")
    pp.add_argument(
        "--set-sev-snp-policy",
        action=_Ordered,
        metavar="FILE.json",
        help="the SEV-SNP policy: minimum_tcb, allow_debug, vmpl, products (docs/sev-snp.md)",
    )
    pp.add_argument(
        "--set-recovery-key",
        action=_Ordered,
        metavar="MEMBER_ID:PUBKEY.pem",
        help="a governor's recovery public key (keygen --recovery), or MEMBER_ID:none",
    )
    pp.add_argument("--rotate-ledger-secret", action=_Ordered, nargs=0)
    pp.add_argument(
        "--transition-service-to-open",
        action=_Ordered,
        nargs=0,
        help="open a recovered service (docs/recovery.md); also rotates the ledger secret",
    )
    pp.set_defaults(func=cmd_propose, ordered=[])

    vp = sub.add_parser("vote", help="sign a ballot on a proposal")
    _signing_args(vp)
    vp.add_argument("--proposal", help="the proposal document (its id is computed)")
    vp.add_argument("--proposal-id", help="or the proposal id (64 hex)")
    choice = vp.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", action="store_true")
    choice.add_argument("--reject", action="store_true")
    vp.set_defaults(func=cmd_vote)

    wp = sub.add_parser("withdraw", help="sign the withdrawal of your own proposal")
    _signing_args(wp)
    wp.add_argument("--proposal")
    wp.add_argument("--proposal-id")
    wp.set_defaults(func=cmd_withdraw)

    ap = sub.add_parser(
        "ack",
        help="sign your acknowledgement as a new member (Accepted → Active)",
        description="With --kube NAME the ack goes into your Member object NAME "
        "(spec.acknowledgement) and the operator relays it once the members have accepted you; "
        "with --node it goes to any node (a backup forwards it to the primary).",
    )
    _signing_args(ap, kind="Member")
    ap.set_defaults(func=cmd_ack)

    props = sub.add_parser("proposals", help="governance documents").add_subparsers(
        dest="proposals_command", required=True
    )
    show = props.add_parser(
        "show", help="a proposal from a node (--node ID), or a signed document file, decoded"
    )
    show.add_argument("document", help="a .cose file (or -), or with --node a proposal id")
    show.add_argument("--signer-cert", help="the signer's certificate: verify the signature")
    show.add_argument("--node", help="ask this node for proposal DOCUMENT (its id)")
    show.add_argument("--service-cert", help="the consortium's service certificate, with --node")
    show.set_defaults(func=cmd_proposals_show)
    lst = props.add_parser("list", help="every proposal a node knows, with state and tally")
    lst.add_argument("--node", required=True)
    lst.add_argument("--service-cert", required=True)
    lst.set_defaults(func=cmd_proposals_list)
