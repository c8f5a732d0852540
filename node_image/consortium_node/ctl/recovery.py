"""``consortiumctl recovery check-share``: a recovery member's drill, on its own machine.

Why: a recovery share that was never opened may not open on the day it is needed (a lost
key file, the wrong key registered). A member can check at any time, without a disaster and
without revealing anything, that its recovery key opens its share of the current recovery
record and that the share is the one the record committed to. The record is public ledger
data: from a node (``GET /gov/recovery``; the node's TLS identity checked with the service
certificate) or from a file (e.g. read from a backup). The share itself is never printed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.ctl.client import (
    EXIT_USAGE,
    CtlError,
    NodeClient,
    read_input,
    service_cert_pem,
)
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.identity.errors import IdentityError
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


def add_commands(sub: Any) -> None:
    """Register ``recovery check-share`` on the top-level subparsers ``sub``."""
    recovery = sub.add_parser("recovery", help="recovery shares").add_subparsers(
        dest="recovery_command", required=True
    )
    check = recovery.add_parser(
        "check-share",
        help="check, on your machine, that your recovery key opens your share",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--consortium", required=True, help="the consortium's name")
    check.add_argument("--cert", required=True, help="your member certificate (PEM)")
    check.add_argument(
        "--recovery-key", required=True, help="your recovery private key (keygen --recovery)"
    )
    check.add_argument("--record", help="the recovery record as JSON (instead of --node)")
    check.add_argument("--node", help="https://HOST:PORT of any node")
    check.add_argument("--service-cert", help="the consortium's service certificate, with --node")
    check.set_defaults(func=cmd_check_share)
