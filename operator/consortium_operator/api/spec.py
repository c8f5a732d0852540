"""Consortium and Member specs → frozen dataclasses, or ``SpecError`` naming the field.

The CRD schema already rejects most bad input at the API server; these checks repeat what a
schema cannot say (renewBefore < validity, a certificate that parses, a consortium that
exists) and guard against objects stored under an older, laxer schema. A spec that fails here
produces no resources at all: the reconciler stops before building anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consortium_node.attestation import host_data_for, platforms
from consortium_node.common.timeutil import parse_duration
from consortium_node.identity.certs import load_member_certificate

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
PLATFORMS = platforms.names()  # the TEE platforms the node image knows
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
ROLES = ("governor", "user")
MAX_CONSORTIUM_NAME = 40  # pods are <name>-<ordinal>, PVCs ledger-<name>-<ordinal>
# Raft fsyncs every write on a majority and the primary sends each entry to every peer: past
# 9 nodes (4 failures tolerated) more nodes cost write latency for no practical availability.
MAX_NODES = 9
# An attestation must outlive a renewal round and its retries (MIN_RENEW_BEFORE), and rounds
# must not come so often that status and alerts cannot follow them (MIN_RENEWAL_INTERVAL =
# validity - renewBefore, the time between two rounds).
MIN_VALIDITY = timedelta(minutes=1)
MIN_RENEW_BEFORE = timedelta(seconds=30)
MIN_RENEWAL_INTERVAL = timedelta(seconds=15)


class SpecError(ValueError):
    """An invalid spec: ``field`` is the dotted path (``spec.attestation.measurements[0]``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Attestation:
    platform: str
    measurements: tuple[str, ...]
    host_data: tuple[str, ...]
    validity: timedelta
    renew_before: timedelta


@dataclass(frozen=True)
class Storage:
    size: str
    storage_class_name: str | None
    retain_on_delete: bool


@dataclass(frozen=True)
class ConsortiumSpec:
    name: str
    nodes: int
    image: str
    image_pull_policy: str
    attestation: Attestation
    threshold: str | int
    auto_trust_nodes: bool
    storage: Storage
    resources: dict[str, Any]
    signature_interval_tx: int
    signature_interval: timedelta
    client_selector: dict[str, Any]
    snapshot_interval: int = 10_000

    def allowed_host_data(self) -> tuple[str, ...]:
        """The consortium's own genesis/join host_data plus any extra the spec allows."""
        own = [host_data_for(self.name, role) for role in ("genesis", "join")]
        return tuple(sorted({*own, *self.attestation.host_data}))


@dataclass(frozen=True)
class MemberSpec:
    name: str
    consortium: str
    certificate_pem: str
    role: str
    member_id: str


def _obj(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, "expected an object")
    return value


def _duration(value: Any, field: str, default: str) -> timedelta:
    try:
        return parse_duration(default if value is None else value)
    except ValueError as exc:
        raise SpecError(field, str(exc)) from None


def _digests(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(field, "expected a list of 64-character lowercase hex digests")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not HEX64_RE.match(item):
            raise SpecError(
                f"{field}[{i}]", f"{item!r} is not a 64-character lowercase hex SHA-256 digest"
            )
    return tuple(value)


def _check_renewal(validity: timedelta, renew: timedelta) -> None:
    if validity < MIN_VALIDITY:
        raise SpecError(
            "spec.attestation.validity",
            f"{_text(validity)} is too short: at least {_text(MIN_VALIDITY)}",
        )
    if renew < MIN_RENEW_BEFORE:
        raise SpecError(
            "spec.attestation.renewBefore",
            f"{_text(renew)} is too short: at least {_text(MIN_RENEW_BEFORE)}, time for a "
            "renewal round and its retries before the attestation expires",
        )
    if renew >= validity:
        raise SpecError(
            "spec.attestation.renewBefore", "must be shorter than spec.attestation.validity"
        )
    if validity - renew < MIN_RENEWAL_INTERVAL:
        raise SpecError(
            "spec.attestation.renewBefore",
            f"must be at least {_text(MIN_RENEWAL_INTERVAL)} shorter than "
            f"spec.attestation.validity ({_text(validity)}): renewal rounds come every "
            "validity - renewBefore",
        )


def _text(d: timedelta) -> str:
    seconds = d.total_seconds()
    return f"{seconds:g}s" if seconds < 120 else f"{seconds / 60:g}m"


def _ledger(led: Mapping[str, Any]) -> tuple[int, timedelta, int]:
    """``spec.ledger``: signature interval (entries, time) and snapshot interval."""
    sig_tx = led.get("signatureIntervalTx", 100)
    if isinstance(sig_tx, bool) or not isinstance(sig_tx, int) or not 1 <= sig_tx <= 1_000_000:
        raise SpecError("spec.ledger.signatureIntervalTx", "must be an integer in 1..1000000")
    sig = _duration(led.get("signatureInterval"), "spec.ledger.signatureInterval", "100ms")
    if sig > timedelta(hours=1):
        raise SpecError("spec.ledger.signatureInterval", "must be at most 1h")
    snap = led.get("snapshotInterval", 10_000)
    if isinstance(snap, bool) or not isinstance(snap, int) or not 0 <= snap <= 100_000_000:
        raise SpecError(
            "spec.ledger.snapshotInterval", "must be an integer in 0..100000000 (0: never)"
        )
    return sig_tx, sig, snap


def parse_consortium(name: str, spec: Mapping[str, Any]) -> ConsortiumSpec:
    """Validate a Consortium's spec (after API-server defaulting)."""
    if not NAME_RE.match(name) or len(name) > MAX_CONSORTIUM_NAME:
        raise SpecError(
            "metadata.name",
            f"{name!r} must be a DNS label of at most {MAX_CONSORTIUM_NAME} characters",
        )
    nodes = spec.get("nodes", 3)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise SpecError("spec.nodes", f"must be an integer from 1 to {MAX_NODES}, got {nodes!r}")
    image = spec.get("image")
    if not isinstance(image, str) or not image.strip():
        raise SpecError("spec.image", "required: the node image (e.g. localhost/consortium-node)")
    image = image.strip()
    if image.endswith(":latest") or ("@" not in image and ":" not in image.rsplit("/", 1)[-1]):
        raise SpecError("spec.image", f"{image!r}: pin a tag or digest (not :latest)")
    pull = spec.get("imagePullPolicy", "IfNotPresent")
    if pull not in PULL_POLICIES:
        raise SpecError(
            "spec.imagePullPolicy", f"{pull!r} is not one of {', '.join(PULL_POLICIES)}"
        )
    att = _obj(spec.get("attestation"), "spec.attestation")
    platform = att.get("platform", platforms.DEFAULT)
    if platform not in PLATFORMS:
        raise SpecError("spec.attestation.platform", f"{platform!r} is not one of {PLATFORMS}")
    measurements = _digests(att.get("measurements"), "spec.attestation.measurements")
    if not measurements:
        raise SpecError(
            "spec.attestation.measurements",
            "list at least one allowed measurement (the image label consortium.tee.dev/"
            "measurement, or `consortium-node measure` in the image)",
        )
    validity = _duration(att.get("validity"), "spec.attestation.validity", "24h")
    renew = _duration(att.get("renewBefore"), "spec.attestation.renewBefore", "8h")
    _check_renewal(validity, renew)
    gov = _obj(spec.get("governance"), "spec.governance")
    threshold = gov.get("threshold", "majority")
    if isinstance(threshold, str) and threshold.isdigit():
        threshold = int(threshold)
    if threshold != "majority" and not (
        isinstance(threshold, int) and not isinstance(threshold, bool) and threshold >= 1
    ):
        raise SpecError("spec.governance.threshold", "must be 'majority' or a positive integer")
    auto = gov.get("autoTrustNodes", True)
    if not isinstance(auto, bool):
        raise SpecError("spec.governance.autoTrustNodes", "expected true or false")
    sto = _obj(spec.get("storage"), "spec.storage")
    size = sto.get("size", "1Gi")
    if not isinstance(size, str) or not re.match(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|k)?$", size):
        raise SpecError("spec.storage.size", f"{size!r} is not a quantity like 1Gi")
    retain = sto.get("retainOnDelete", False)
    if not isinstance(retain, bool):
        raise SpecError("spec.storage.retainOnDelete", "expected true or false")
    sc = sto.get("storageClassName") or None
    sig_tx, sig, snap = _ledger(_obj(spec.get("ledger"), "spec.ledger"))
    return ConsortiumSpec(
        name=name,
        nodes=nodes,
        image=image,
        image_pull_policy=pull,
        attestation=Attestation(
            platform=platform,
            measurements=measurements,
            host_data=_digests(att.get("hostData"), "spec.attestation.hostData"),
            validity=validity,
            renew_before=renew,
        ),
        threshold=threshold,
        auto_trust_nodes=auto,
        storage=Storage(size=size, storage_class_name=sc, retain_on_delete=retain),
        resources=dict(_obj(spec.get("resources"), "spec.resources")),
        signature_interval_tx=sig_tx,
        signature_interval=sig,
        snapshot_interval=snap,
        client_selector=dict(_obj(spec.get("clientSelector"), "spec.clientSelector")),
    )


def parse_member(name: str, spec: Mapping[str, Any]) -> MemberSpec:
    """Validate a Member's spec; the certificate must parse as P-256 or Ed25519."""
    consortium = spec.get("consortium")
    if not isinstance(consortium, str) or not NAME_RE.match(consortium):
        raise SpecError("spec.consortium", "required: the name of a Consortium in this namespace")
    role = spec.get("role", "governor")
    if role not in ROLES:
        raise SpecError("spec.role", f"{role!r} is not one of {', '.join(ROLES)}")
    pem = spec.get("certificate")
    if not isinstance(pem, str) or not pem.strip():
        raise SpecError("spec.certificate", "required: the member's X.509 certificate (PEM)")
    try:
        member = load_member_certificate(pem, "spec.certificate")
    except Exception as exc:
        message = str(exc).removeprefix("spec.certificate: ")
        raise SpecError("spec.certificate", message) from None
    return MemberSpec(
        name=name,
        consortium=consortium,
        certificate_pem=member.pem,
        role=role,
        member_id=member.member_id,
    )
