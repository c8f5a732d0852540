"""``consortiumctl backup verify``: check a backup with only the service certificate.

The checks are ``backup.verify``'s; this module picks the source (the bucket through
``backup.s3``, or a local copy through ``backup.source.DirectorySource``), prints the result
and maps failures to exit codes (``DESCRIPTION``, which ``--help`` shows).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from consortium_node.backup.format import BackupError
from consortium_node.backup.s3 import S3Store, StoreError, StoreSettings
from consortium_node.backup.source import BackupSource, DirectorySource
from consortium_node.backup.verify import VerifiedBackup, verify_backup
from consortium_node.ctl.client import EXIT_USAGE, CtlError, read_input
from consortium_node.identity.certs import load_certificate
from consortium_node.identity.errors import IdentityError

DESCRIPTION = """\
Verify a backup with only the service certificate: the newest manifest (or --manifest KEY)
and every object it lists: the ledger from entry 1, every signature entry (by a node the
service certified), every snapshot against its evidence in that ledger.

Read it from the bucket (--bucket NAME --endpoint URL; credentials from the standard
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables, read access is enough) or
from a local copy of the prefix (--dir DIR, e.g. made with
`aws s3 sync s3://BUCKET/PREFIX DIR`; no credentials).

Exit codes: 0 verified; 1 the backup is not what it must be
("backup verify failed: <Reason>: <detail>"); 2 a usage error, or the store could not be
read (CredentialsMissing, EndpointUnreachable, InvalidCredentials, AccessDenied,
BucketNotFound, ...): nothing was verified.
"""
EXIT_STORE = 3  # the store could not be read (like an unreachable node): nothing verified
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _source(args: argparse.Namespace) -> tuple[BackupSource, str]:
    """The backup to read and where it is, for messages."""
    if args.dir is not None:
        for flag in ("endpoint", "prefix", "region", "ca_file"):
            if getattr(args, flag) is not None:
                raise CtlError(
                    f"--{flag.replace('_', '-')} goes with --bucket, not --dir", EXIT_USAGE
                )
        try:
            directory = DirectorySource(args.dir)
        except FileNotFoundError as exc:
            raise CtlError(f"--dir: {exc}", EXIT_USAGE) from exc
        return directory, directory.location
    if not args.endpoint:
        raise CtlError("--bucket needs --endpoint URL (the S3 API endpoint)", EXIT_USAGE)
    missing = [name for name in CREDENTIAL_VARIABLES if not os.environ.get(name)]
    if missing:
        raise CtlError(
            f"backup verify failed: CredentialsMissing: set {' and '.join(missing)} "
            "(read access to the bucket is enough)",
            EXIT_STORE,
        )
    prefix = args.prefix or ""
    settings = StoreSettings(
        endpoint=args.endpoint,
        bucket=args.bucket,
        prefix=prefix if not prefix or prefix.endswith("/") else prefix + "/",
        region=args.region or "us-east-1",
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        ca_file=args.ca_file,
    )
    try:
        return S3Store(settings), settings.location
    except ValueError as exc:  # botocore refuses the endpoint URL
        raise CtlError(f"--endpoint: {exc}", EXIT_USAGE) from exc


def summary(verified: VerifiedBackup, location: str) -> str:
    """The human report of a verified backup."""
    snapshots = ", ".join(str(index) for index in verified.snapshots) or "none"
    previous = verified.previous[0] if verified.previous is not None else "none"
    rows = [
        ("consortium", verified.consortium),
        ("location", location),
        ("manifest", verified.manifest_key),
        ("created at", verified.created_at),
        ("covers", f"{verified.first_txid} .. {verified.last_txid}"),
        ("entries", f"{verified.entries} ({verified.signatures} signatures verified)"),
        ("snapshots", f"{len(verified.snapshots)} verified (at {snapshots})"),
        ("objects", f"{verified.objects} ({verified.bytes} bytes)"),
        ("previous", previous),
    ]
    return "backup verified\n" + "\n".join(f"  {name + ':':<12} {value}" for name, value in rows)


def cmd_backup_verify(args: argparse.Namespace) -> int:
    pem = read_input(args.service_cert, "--service-cert")
    try:
        certificate = load_certificate(pem, "--service-cert")
    except IdentityError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc
    source, location = _source(args)
    try:
        verified = verify_backup(source, certificate, manifest_key=args.manifest)
    except BackupError as exc:
        raise CtlError(f"backup verify failed: {exc.reason}: {exc.detail} (in {location})") from exc
    except StoreError as exc:
        raise CtlError(f"backup verify failed: {exc.reason}: {exc.detail}", EXIT_STORE) from exc
    if args.json:
        out: dict[str, Any] = {**verified.to_json(), "location": location}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(summary(verified, location))
    return 0


def add_commands(sub: Any) -> None:
    """Register ``backup verify`` on the top-level subparsers ``sub``."""
    backup = sub.add_parser("backup", help="verify backups of the ledger").add_subparsers(
        dest="backup_command", required=True
    )
    bv = backup.add_parser(
        "verify",
        help="verify a backup (bucket or local copy) with only the service certificate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bv.add_argument(
        "--service-cert", required=True, metavar="FILE", help="the consortium's service certificate"
    )
    where = bv.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--dir", metavar="DIR", help="a local copy of the backup prefix (e.g. `aws s3 sync`)"
    )
    where.add_argument(
        "--bucket",
        metavar="NAME",
        help="read the bucket directly; credentials come from the AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY environment variables",
    )
    bv.add_argument(
        "--endpoint",
        metavar="URL",
        help="S3 API endpoint URL, with --bucket (e.g. https://minio.example:9000)",
    )
    bv.add_argument(
        "--prefix",
        metavar="PREFIX",
        help="the key prefix the nodes write under, with --bucket (theirs defaults to "
        "'<consortium>/'; default here: none)",
    )
    bv.add_argument("--region", metavar="REGION", help="with --bucket (default us-east-1)")
    bv.add_argument(
        "--ca-file", metavar="FILE", help="PEM CA bundle to trust for an https endpoint"
    )
    bv.add_argument("--manifest", metavar="KEY", help="verify this manifest (default: newest)")
    bv.add_argument("--json", action="store_true", help="print the result as JSON")
    bv.set_defaults(func=cmd_backup_verify)
