"""``consortiumctl`` commands.

    keygen                 a member or user key and self-signed certificate (--recovery: a
                           recovery encryption key pair)
    quote verify           verify a node's attestation quote (from a file or fetched live)
    verify-trusted-list    verify a COSE trusted-node list with only the service certificate
    verify-receipt         verify a transaction receipt offline with only the service certificate
    backup verify          verify a ledger backup (bucket or local copy) with only the service
                           certificate (ctl/backup.py)
    recovery check-share   check that your recovery key opens your recovery share (ctl/recovery.py)
    tx submit | tx get     write transactions / fetch one with its verified receipt
    kv get                 read a key
    propose | vote | withdraw | ack | proposals show
                           sign governance documents with your member key (ctl/gov.py)

Exit codes: 0 success, 1 verification or request failed, 2 usage error, 3 node unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from consortium_node.ctl import attest, backup, gov, recovery, snp
from consortium_node.ctl.client import (
    EXIT_USAGE,
    CtlError,
    NodeClient,
    Response,
    describe_error,
    error_code,
    load_json_input,
    read_input,
    service_cert_pem,
)
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    certificate_der,
    certificate_pem,
    certificate_sha256,
    load_certificate,
    self_signed_certificate,
)
from consortium_node.identity.endorsement import EndorsementError, certificate_for, eras
from consortium_node.identity.errors import IdentityError, TrustedListError
from consortium_node.identity.trusted_list import verify_trusted_list
from consortium_node.ledger import TxId
from consortium_node.ledger.errors import ReceiptError
from consortium_node.ledger.receipt import verify_receipt


def _out(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ------------------------------------------------------------------------- keygen
def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.recovery:
        return _keygen_recovery(args, out)
    key_path, cert_path = out / f"{args.name}_privk.pem", out / f"{args.name}_cert.pem"
    for path in (key_path, cert_path):
        if path.exists() and not args.force:
            raise CtlError(f"{path} exists; use --force to replace it")
    key = keys.generate_key(args.kind)
    cert = self_signed_certificate(key, args.name, args.days)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keys.private_key_pem(key))
    cert_path.write_text(certificate_pem(cert))
    _out(
        {
            "name": args.name,
            "member_id": keys.member_id_of(certificate_der(cert)),
            "certificate": str(cert_path),
            "private_key": str(key_path),
            "kind": args.kind,
        }
    )
    return 0


def _keygen_recovery(args: argparse.Namespace, out: Path) -> int:
    """A recovery member's encryption key pair (P-256, ``recovery.record``): the public half
    goes into the Member's ``spec.recoveryKey``; the private half opens this member's share
    and is best kept offline. Separate from the signing key, which may be Ed25519."""
    key_path = out / f"{args.name}_recovery_privk.pem"
    pub_path = out / f"{args.name}_recovery_pubk.pem"
    for path in (key_path, pub_path):
        if path.exists() and not args.force:
            raise CtlError(f"{path} exists; use --force to replace it")
    key = keys.generate_key("p256")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keys.private_key_pem(key))
    pub_path.write_text(keys.public_key_pem(key))
    _out(
        {
            "name": args.name,
            "recovery_public_key": str(pub_path),
            "recovery_private_key": str(key_path),
            "kind": "p256",
        }
    )
    return 0


# ------------------------------------------------------------------------- quote
def cmd_quote_verify(args: argparse.Namespace) -> int:
    if args.report:
        _out(snp.verify_raw(args))
        return 0
    registry = attest.registry_of(args)
    if args.node:
        if not args.service_cert:
            raise CtlError("--node needs --service-cert", EXIT_USAGE)
        nonce = os.urandom(32)
        client = NodeClient(args.node, service_cert_pem(args.service_cert))
        response = client.json("GET", "/node/quote", {"nonce": nonce.hex()})
    else:
        if not args.quote or not args.nonce:
            raise CtlError("give --node, or --quote FILE and --nonce HEX", EXIT_USAGE)
        response = load_json_input(args.quote, "--quote")
        try:
            nonce = bytes.fromhex(args.nonce)
        except ValueError as exc:
            raise CtlError(f"--nonce: not hex: {exc}", EXIT_USAGE) from exc
    public_pem = read_input(args.public_key, "--public-key").decode() if args.public_key else None
    claims = attest.verified_claims(registry, response, nonce, attest.policy_of(args), public_pem)
    _out(
        {
            "verified": True,
            "platform": claims.platform,
            "format": claims.format,
            "measurement": claims.measurement,
            "host_data": claims.host_data,
            "node_id": claims.public_key_sha256,
            "chip_id": claims.chip_id,
            "tcb_version": claims.tcb_version,
            "timestamp": claims.timestamp.isoformat(),
        }
    )
    return 0


# ------------------------------------------------------------------------- lists, receipts
def cmd_verify_trusted_list(args: argparse.Namespace) -> int:
    cert = load_certificate(service_cert_pem(args.service_cert), "--service-cert")
    envelope = read_input(args.list, "--list")
    try:
        lst = verify_trusted_list(
            envelope, cert, consortium=args.consortium, min_version=args.min_version
        )
    except TrustedListError as exc:
        raise CtlError(f"trusted-node list refused: {exc}") from exc
    _out(
        {
            "verified": True,
            "consortium": lst.consortium,
            "version": lst.version,
            "issued_at": lst.issued_at,
            "nodes": [
                {
                    "name": n.name,
                    "node_id": n.node_id,
                    "status": n.status.value,
                    "attestation_expires_at": n.attestation_expires_at,
                }
                for n in lst.nodes
            ],
        }
    )
    return 0


def _verify_receipt(receipt: Any, service_pem: str) -> dict[str, Any]:
    cert = load_certificate(service_pem, "--service-cert")
    if not isinstance(receipt, dict):
        raise CtlError("receipt: expected a JSON object")
    try:
        verified = verify_receipt(receipt, cert)
    except ReceiptError as exc:
        raise CtlError(f"receipt INVALID: {exc}") from exc
    return {
        "verified": True,
        "txid": str(verified.txid),
        "root": verified.root.hex(),
        "node_id": verified.node_id,
    }


def _era_certificate(receipt: Any, service_pem: str, history_file: str) -> str:
    """The service certificate a receipt was issued under, found by walking the chain of
    endorsements back from the current one (``identity/endorsement.py``)."""
    found = load_json_input(history_file, "--service-history")
    records = found.get("history", found) if isinstance(found, dict) else found
    if not isinstance(records, list):
        raise CtlError("--service-history: expected the GET /recovery answer or a list", EXIT_USAGE)
    current = load_certificate(service_pem, "--service-cert")
    try:
        chain = eras(current, records)
    except EndorsementError as exc:
        raise CtlError(f"--service-history INVALID: {exc}") from exc
    txid = receipt.get("txid") if isinstance(receipt, dict) else None
    try:
        index = TxId.parse(str(txid)).index
    except ValueError as exc:
        raise CtlError(f"receipt: {exc}") from exc
    return certificate_pem(certificate_for(chain, index))


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    receipt = load_json_input(args.receipt, "receipt")
    service_pem = service_cert_pem(args.service_cert)
    if args.service_history:
        era_pem = _era_certificate(receipt, service_pem, args.service_history)
        shown = _verify_receipt(receipt, era_pem)
        shown["service_certificate_sha256"] = certificate_sha256(load_certificate(era_pem))
        shown["previous_identity"] = era_pem != service_pem
        _out(shown)
        return 0
    _out(_verify_receipt(receipt, service_pem))
    return 0


# ------------------------------------------------------------------------- transactions
def _client(args: argparse.Namespace) -> tuple[NodeClient, str]:
    service_pem = service_cert_pem(args.service_cert)
    if bool(args.cert) != bool(args.key):
        raise CtlError("--cert and --key go together", EXIT_USAGE)
    client = NodeClient(
        args.node,
        service_pem,
        Path(args.cert) if args.cert else None,
        Path(args.key) if args.key else None,
    )
    return client, service_pem


RECEIPT_TIMEOUT = 30.0  # seconds; a signature follows a commit within signature_interval_ms
POLL_FIRST, POLL_MAX = 0.05, 1.0  # seconds between polls: doubling from the first to the max


def retry_after(resp: Response, delay: float) -> float | None:
    """Seconds to wait before asking again, or None if ``resp`` is final.

    Two answers mean "not yet" rather than "no": 202 (committed, but no signature covers it
    yet; the node says when to ask again) and 404 ``NotCommittedYet`` (this node — a backup —
    has not learnt that the transaction committed; it will within a heartbeat or two).
    """
    if resp.status == 202:
        try:
            hinted = float(resp.json().get("retry_after_ms", delay * 1000)) / 1000
        except (AttributeError, TypeError, ValueError, CtlError):
            hinted = delay
        return min(max(hinted, POLL_FIRST), POLL_MAX)
    if resp.status == 404 and error_code(resp) == "NotCommittedYet":
        return min(delay, POLL_MAX)
    return None


def poll(client: NodeClient, path: str, txid: str, timeout: float) -> Any:
    """GET ``path?txid=`` until it answers 200 or a final error, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    while True:
        resp = client.request("GET", path, {"txid": txid})
        if resp.status == 200:
            return resp.json()
        wait = retry_after(resp, delay)
        if wait is None:
            raise CtlError(f"{path} for {txid}: {describe_error(resp)}")
        if time.monotonic() + wait > deadline:
            raise CtlError(
                f"{path} for {txid}: not available from {client.base} within {timeout:g}s "
                f"(last answer: {describe_error(resp)}); --receipt-timeout waits longer"
            )
        time.sleep(wait)
        delay *= 2


def _parse_sets(items: list[str]) -> dict[str, Any]:
    writes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CtlError(f"--set {item!r}: expected KEY=VALUE", EXIT_USAGE)
        writes[key] = value
    return writes


def cmd_tx_submit(args: argparse.Namespace) -> int:
    client, service_pem = _client(args)
    if args.json:
        body = load_json_input(args.json, "--json")
    else:
        writes = _parse_sets(args.set or [])
        for key in args.delete or []:
            writes[key] = None
        if not writes:
            raise CtlError(
                "nothing to write: give --set KEY=VALUE, --delete KEY or --json", EXIT_USAGE
            )
        body = {"transactions": [{"writes": writes}]}
    if args.receipt_out:
        _check_writable(args.receipt_out)
    result = client.json("POST", "/app/transactions", body=body)
    if args.receipt_out:
        try:
            last = str(result["transactions"][-1]["txid"])
        except (KeyError, IndexError, TypeError) as exc:
            raise CtlError(f"the node's answer names no transaction: {result!r:.200}") from exc
        try:
            receipt = poll(client, "/app/receipt", last, args.receipt_timeout)
        except CtlError as exc:
            raise CtlError(
                f"{exc}. The write itself was acknowledged as committed ({last}): "
                f"`consortiumctl tx get {last} --receipt-out FILE` fetches its receipt later",
                exc.exit_code,
            ) from exc
        result["receipt"] = _verify_receipt(receipt, service_pem)
        _save_receipt(args.receipt_out, receipt)
    _out(result)
    return 0


def _check_writable(path: str) -> None:
    """Fail before writing anything to the ledger if the receipt could not be saved."""
    parent = Path(path).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CtlError(f"--receipt-out: cannot write into {parent}", EXIT_USAGE)


def _save_receipt(path: str, receipt: Any) -> None:
    try:
        Path(path).write_text(json.dumps(receipt, indent=2, sort_keys=True))
    except OSError as exc:
        raise CtlError(f"--receipt-out: cannot write {path}: {exc}") from exc


def cmd_tx_get(args: argparse.Namespace) -> int:
    client, service_pem = _client(args)
    if args.receipt_out:
        _check_writable(args.receipt_out)
    # Through a backup, a transaction just written elsewhere may not be committed here yet:
    # both reads wait for this node to catch up, within the same deadline.
    deadline = time.monotonic() + args.receipt_timeout
    tx = poll(client, "/app/transaction", args.txid, args.receipt_timeout)
    receipt = poll(client, "/app/receipt", args.txid, max(0.0, deadline - time.monotonic()))
    tx["receipt"] = _verify_receipt(receipt, service_pem)
    if args.receipt_out:
        _save_receipt(args.receipt_out, receipt)
    _out(tx)
    return 0


def cmd_kv_get(args: argparse.Namespace) -> int:
    client, _ = _client(args)
    _out(client.json("GET", "/app/kv/" + urllib.parse.quote(args.name, safe="")))
    return 0


# ------------------------------------------------------------------------- parser
def _node_args(p: argparse.ArgumentParser, identity: bool = True) -> None:
    p.add_argument("--node", required=True, help="https://HOST:PORT of any node")
    p.add_argument("--service-cert", required=True, help="the consortium's service certificate")
    if identity:
        p.add_argument("--cert", help="your member/user certificate (PEM)")
        p.add_argument("--key", help="your private key (PEM)")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds ≥ 0")
    return value


def _receipt_timeout(p: argparse.ArgumentParser) -> None:
    help_text = (
        "seconds to wait for the receipt: a backup answers 'not committed here yet' until it "
        f"catches up, and any node until a signature covers the write (default {RECEIPT_TIMEOUT:g})"
    )
    p.add_argument(
        "--receipt-timeout",
        type=_seconds,
        default=RECEIPT_TIMEOUT,
        metavar="SECONDS",
        help=help_text,
    )
    # The option's earlier name, kept so existing scripts keep working.
    p.add_argument("--timeout", dest="receipt_timeout", type=_seconds, help=argparse.SUPPRESS)


def parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat table of commands
    p = argparse.ArgumentParser(
        prog="consortiumctl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    kg = sub.add_parser("keygen", help="create a member/user key and self-signed certificate")
    kg.add_argument("--name", required=True, help="certificate common name and file prefix")
    kg.add_argument("--out-dir", default=".", help="where to write NAME_privk.pem/NAME_cert.pem")
    kg.add_argument("--kind", choices=["p256", "ed25519"], default="p256")
    kg.add_argument("--days", type=int, default=365)
    kg.add_argument("--force", action="store_true")
    kg.add_argument(
        "--recovery",
        action="store_true",
        help="a recovery encryption key pair instead (NAME_recovery_privk.pem/"
        "NAME_recovery_pubk.pem, P-256): its public half is the Member's spec.recoveryKey",
    )
    kg.set_defaults(func=cmd_keygen)

    quote = sub.add_parser("quote", help="attestation quotes").add_subparsers(
        dest="quote_command", required=True
    )
    qv = quote.add_parser("verify", help="verify a quote against a measurement policy")
    attest.add_policy_flags(qv)
    qv.add_argument("--node", help="fetch a fresh quote from this node with a random nonce")
    qv.add_argument("--service-cert", help="service certificate, with --node")
    qv.add_argument("--quote", help="a saved quote (or /node/quote response) JSON file")
    qv.add_argument("--nonce", help="the nonce the quote must answer, hex (with --quote)")
    qv.add_argument("--public-key", help="the node public key PEM (if not in the quote file)")
    qv.set_defaults(func=cmd_quote_verify)

    vl = sub.add_parser("verify-trusted-list", help="verify a signed trusted-node list")
    vl.add_argument("--service-cert", required=True)
    vl.add_argument("--list", required=True, help="trusted-nodes.cose file (or - for stdin)")
    vl.add_argument("--consortium", help="expected consortium name")
    vl.add_argument("--min-version", type=int, help="refuse versions below this (rollback)")
    vl.set_defaults(func=cmd_verify_trusted_list)

    vr = sub.add_parser("verify-receipt", help="verify a receipt offline")
    vr.add_argument("--service-cert", required=True)
    vr.add_argument(
        "--service-history",
        help="the identities a recovered service replaced (the GET /recovery answer): a "
        "receipt from before a disaster verifies with the endorsed previous certificate",
    )
    vr.add_argument("receipt", help="receipt JSON file (or - for stdin)")
    vr.set_defaults(func=cmd_verify_receipt)

    tx = sub.add_parser("tx", help="application transactions").add_subparsers(
        dest="tx_command", required=True
    )
    ts = tx.add_parser("submit", help="submit writes as one transaction (or a --json batch)")
    _node_args(ts)
    ts.add_argument("--set", action="append", metavar="KEY=VALUE")
    ts.add_argument("--delete", action="append", metavar="KEY")
    ts.add_argument("--json", help='a {"transactions": [...]} batch file (or -)')
    ts.add_argument("--receipt-out", help="wait for the last txid's receipt, verify, save it")
    _receipt_timeout(ts)
    ts.set_defaults(func=cmd_tx_submit)
    tg = tx.add_parser("get", help="fetch a transaction and verify its receipt")
    _node_args(tg)
    tg.add_argument("txid")
    tg.add_argument("--receipt-out", help="also save the verified receipt to this file")
    _receipt_timeout(tg)
    tg.set_defaults(func=cmd_tx_get)

    kv = sub.add_parser("kv", help="key-value reads").add_subparsers(
        dest="kv_command", required=True
    )
    kvg = kv.add_parser("get", help="read a key")
    _node_args(kvg)
    kvg.add_argument("name", metavar="KEY", help="the key to read")
    kvg.set_defaults(func=cmd_kv_get)
    backup.add_commands(sub)
    recovery.add_commands(sub)
    gov.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except CtlError as exc:
        print(f"consortiumctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except (IdentityError, ValueError) as exc:
        print(f"consortiumctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
