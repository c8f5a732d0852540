"""``consortiumctl`` and SEV-SNP: verify a raw report offline, and the SEV-SNP policy flags.

Why a command that takes a bare report: an auditor holding a report, its VCEK and AMD's
chain (from a node, a cloud provider or AMD KDS) must be able to check it with nothing of
this project running: the same parser, signature, chain and policy code the nodes use.

``quote verify --platform sev-snp --report FILE --vcek FILE [--chain FILE]
[--allow-measurement HEX]... [--report-data HEX] [--host-data HEX]...
[--snp-min-tcb PRODUCT:COMPONENT=SPL]... [--allow-debug] [--vmpl N] [--product P]...
[--crl FILE] [--insecure-emulator-root FILE]``: the report as raw bytes or hex text, the
VCEK as DER or PEM, the chain as PEM (ASK then ARK; AMD's are pinned, so it may be left
out). Prints the claims as JSON and exits 0; prints ``quote refused: <Reason>: <detail>`` and
exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import binascii
import re
from typing import Any

from consortium_node.attestation.sev_snp import load_crls
from consortium_node.attestation.sev_snp.certificates import (
    ChainError,
    amd_anchors,
    as_anchor,
    load_certificates,
)
from consortium_node.attestation.sev_snp.policy import SnpPolicy
from consortium_node.attestation.sev_snp.report import REPORT_SIZE
from consortium_node.attestation.sev_snp.tcb import COMPONENTS, PRODUCTS
from consortium_node.attestation.sev_snp.verifier import Expectations, SnpClaims, verify_report
from consortium_node.common.timeutil import utcnow
from consortium_node.ctl.client import EXIT_USAGE, CtlError, read_input

_MIN_TCB = re.compile(r"^([A-Za-z]+):([a-z]+)=([0-9]{1,3})$")


def add_snp_flags(parser: Any) -> None:
    """The SEV-SNP policy flags and the raw-report inputs of ``quote verify``."""
    group = parser.add_argument_group("sev-snp")
    group.add_argument("--report", help="a raw SEV-SNP report: 1184 bytes, or hex text")
    group.add_argument("--vcek", help="the VCEK or VLEK (DER or PEM), with --report")
    group.add_argument("--chain", help="the ASK then ARK (PEM), with --report (optional)")
    group.add_argument("--allow-measurement", action="append", help="allowed (repeat)")
    group.add_argument("--report-data", help="the 64 REPORT_DATA bytes expected, hex")
    group.add_argument(
        "--snp-min-tcb",
        action="append",
        metavar="PRODUCT:COMPONENT=SPL",
        help=f"minimum SPL (repeat), e.g. Genoa:snp=23; components {COMPONENTS}",
    )
    group.add_argument("--allow-debug", action="store_true", help="accept guest policy DEBUG")
    group.add_argument("--vmpl", type=int, default=0, help="required VMPL (default 0)")
    group.add_argument("--product", action="append", choices=PRODUCTS,
                       help="allowed processor products (repeat; default all)")  # fmt: skip


def snp_policy_of(args: argparse.Namespace) -> SnpPolicy:
    """The SEV-SNP policy the flags describe; a usage error naming the flag otherwise."""
    minimum: dict[str, dict[str, int]] = {}
    for item in args.snp_min_tcb or []:
        match = _MIN_TCB.match(item)
        if match is None:
            raise CtlError(f"--snp-min-tcb {item!r}: expected PRODUCT:COMPONENT=SPL", EXIT_USAGE)
        product, component, spl = match.groups()
        minimum.setdefault(product, {})[component] = int(spl)
    value = {"minimum_tcb": minimum, "allow_debug": args.allow_debug, "vmpl": args.vmpl,
             "products": args.product or list(PRODUCTS)}  # fmt: skip
    try:
        return SnpPolicy.from_json(value, "sev-snp policy")
    except ValueError as exc:
        raise CtlError(f"--snp-min-tcb/--vmpl/--product: {exc}", EXIT_USAGE) from exc


def _report_bytes(path: str) -> bytes:
    data = read_input(path, "--report")
    if len(data) == REPORT_SIZE:
        return data
    text = re.sub(rb"\s+", b"", data)
    try:
        decoded = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise CtlError(
            f"--report: neither {REPORT_SIZE} raw bytes nor hex text ({len(data)} bytes)",
            EXIT_USAGE,
        ) from None
    return decoded


def _hex_bytes(value: str, flag: str, size: int | None = None) -> bytes:
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise CtlError(f"{flag}: not hex", EXIT_USAGE) from None
    if size is not None and len(data) != size:
        raise CtlError(f"{flag}: expected {size} bytes, got {len(data)}", EXIT_USAGE)
    return data


def verify_raw(args: argparse.Namespace) -> dict[str, Any]:
    """``quote verify --report``: the claims of a verified report, or CtlError (exit 1)."""
    if args.platform != "sev-snp":
        raise CtlError("--report is an SEV-SNP report: give --platform sev-snp", EXIT_USAGE)
    if not args.vcek:
        raise CtlError("--report needs --vcek (the VCEK or VLEK, DER or PEM)", EXIT_USAGE)
    report, vcek = _report_bytes(args.report), read_input(args.vcek, "--vcek")
    anchors = amd_anchors()
    try:
        presented = (
            load_certificates(read_input(args.chain, "--chain"), "--chain") if args.chain else []
        )
        root = getattr(args, "insecure_emulator_root", None)
        if root:
            anchors.append(as_anchor(read_input(root, "--insecure-emulator-root"), insecure=True))
        crls = load_crls(read_input(args.crl, "--crl")) if getattr(args, "crl", None) else []
    except ChainError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc
    # --measurement (the node-quote flag) means the same here; --max-age and --min-tcb do not
    # apply: a report has no time (freshness is --report-data), its TCB is --snp-min-tcb.
    measurements = [m.lower() for m in [*(args.allow_measurement or []), *(args.measurement or [])]]
    for measurement in measurements:
        _hex_bytes(measurement, "--allow-measurement", 48)
    expect = Expectations(
        snp=snp_policy_of(args),
        report_data=_hex_bytes(args.report_data, "--report-data", 64) if args.report_data else None,
        measurements=frozenset(measurements) if measurements else None,
        host_data=frozenset(h.lower() for h in args.host_data) if args.host_data else None,
    )
    outcome = verify_report(report, vcek, anchors, expect, now=utcnow(), presented=presented,
                            crls=crls)  # fmt: skip
    if not outcome.ok or outcome.claims is None:
        reason = outcome.reason.value if outcome.reason else "?"
        raise CtlError(f"quote refused: {reason}: {outcome.detail}")
    return {"verified": True, **SnpClaims.to_json(outcome.claims)}


__all__ = ["add_snp_flags", "snp_policy_of", "verify_raw"]
