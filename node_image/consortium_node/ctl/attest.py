"""Verifying a node's attestation quote on a user's machine: ``quote verify``, and a recovery
member checking the recovery node before wrapping its share to that node's key.

Why shared: both decide whether a node is an enclave running allowed code from the same flags
(the platform, its public endorsement files, allowed measurements and host_data, age and TCB)
and must refuse in the same words.
"""

from __future__ import annotations

import argparse
from typing import Any

from consortium_node.attestation import (
    AttestationError,
    Policy,
    UnknownPlatformError,
    VerifierRegistry,
    platforms,
)
from consortium_node.attestation.results import Claims
from consortium_node.common.timeutil import parse_duration
from consortium_node.ctl import snp
from consortium_node.ctl.client import EXIT_USAGE, CtlError, read_input
from consortium_node.identity import keys
from consortium_node.identity.errors import IdentityError


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_policy_flags(parser: Any) -> None:
    """``--platform``, each platform's public endorsement flags, ``--measurement`` (required,
    repeat), ``--host-data``, ``--max-age``, ``--min-tcb``."""
    parser.add_argument(
        "--platform",
        choices=platforms.names(),
        default=platforms.DEFAULT,
        help=f"the TEE platform (default {platforms.DEFAULT})",
    )
    flags: dict[str, list[str]] = {}
    for name in platforms.names():  # each platform's public endorsement files, by its flags
        for endorsement in platforms.by_name(name).endorsements:
            if endorsement.cli_flag and not endorsement.private:
                flags.setdefault(endorsement.cli_flag, []).append(
                    f"{name}: {endorsement.description}"
                )
    for flag, helps in flags.items():
        parser.add_argument(flag, dest=dest(flag), help="; ".join(helps))
    parser.add_argument("--measurement", action="append", help="allowed (repeat; required)")
    parser.add_argument("--host-data", action="append", help="allowed host_data (repeat)")
    parser.add_argument("--max-age", default="10m", help="oldest acceptable quote (default 10m)")
    parser.add_argument("--min-tcb", type=int, default=1, help="insecure-virtual's TCB version")
    snp.add_snp_flags(parser)


def _endorsements(args: argparse.Namespace) -> tuple[str, dict[str, bytes]]:
    """The chosen platform and its public endorsement files, from that platform's flags."""
    try:
        platform = platforms.by_name(args.platform)
    except UnknownPlatformError as exc:
        raise CtlError(f"--platform: {exc}", EXIT_USAGE) from exc
    files = {}
    for endorsement in platform.endorsements:
        if endorsement.private or endorsement.cli_flag is None:
            continue
        value = getattr(args, dest(endorsement.cli_flag))
        if not value and endorsement.optional:
            continue
        if not value:
            raise CtlError(
                f"{endorsement.cli_flag} is required with --platform {platform.name}: "
                f"{endorsement.description}",
                EXIT_USAGE,
            )
        files[endorsement.file] = read_input(value, endorsement.cli_flag)
    return platform.name, files


def registry_of(args: argparse.Namespace) -> VerifierRegistry:
    platform, endorsements = _endorsements(args)
    try:
        return platforms.verifier_registry({platform: endorsements})
    except (ValueError, AttestationError) as exc:  # material the platform cannot use
        raise CtlError(f"{platform} endorsements: {exc}", EXIT_USAGE) from exc


def policy_of(args: argparse.Namespace) -> Policy:
    if not args.measurement:
        raise CtlError("--measurement is required (repeat for each allowed one)", EXIT_USAGE)
    platform = {"sev-snp": snp.snp_policy_of(args).to_json()} if args.platform == "sev-snp" else {}
    return Policy(
        allowed_measurements=frozenset(args.measurement),
        allowed_host_data=frozenset(args.host_data) if args.host_data else None,
        max_age=parse_duration(args.max_age),
        min_tcb_version=args.min_tcb,
        platform=platform,
    )


def verified_claims(
    registry: VerifierRegistry,
    response: Any,
    nonce: bytes,
    policy: Policy,
    public_pem: str | None = None,
) -> Claims:
    """The claims of a ``/node/quote`` answer (or a saved quote) for ``nonce``; CtlError
    ``quote refused: <reason>: <detail>`` otherwise. ``public_pem`` overrides the answer's
    ``public_key``."""
    if not isinstance(response, dict):
        raise CtlError("--quote: expected a JSON object", EXIT_USAGE)
    quote = response.get("quote", response)
    public_pem = public_pem or response.get("public_key")
    if not public_pem:
        raise CtlError("the node's public key is needed: --public-key FILE", EXIT_USAGE)
    try:
        public_der = keys.public_key_der(keys.load_public_key(public_pem.encode()))
    except IdentityError as exc:
        raise CtlError(f"--public-key: {exc}", EXIT_USAGE) from exc
    result = registry.verify(quote, public_key_der=public_der, nonce=nonce, policy=policy)
    if not result.ok:
        reason = result.reason.value if result.reason else "?"
        raise CtlError(f"quote refused: {reason}: {result.detail}")
    assert result.claims is not None
    return result.claims
