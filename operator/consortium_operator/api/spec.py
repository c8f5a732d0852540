"""Consortium and Member specs → frozen dataclasses, or ``SpecError`` naming the field.

The CRD schema already rejects most bad input at the API server; these checks repeat what a
schema cannot say (renewBefore < validity, a certificate that parses, a consortium that
exists) and guard against objects stored under an older, laxer schema. A spec that fails here
produces no resources at all: the reconciler stops before building anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from croniter import CroniterError, croniter
from cryptography import x509

from consortium_node.attestation import host_data_for, platforms
from consortium_node.common.timeutil import parse_duration
from consortium_node.identity.certs import (
    certificate_pem,
    load_certificate,
    load_member_certificate,
)
from consortium_node.identity.errors import IdentityError
from consortium_node.recovery.record import RecoveryError, load_recovery_key, recovery_key_pem
from consortium_operator.api.names import BACKUP_CREDENTIAL_KEYS
from consortium_operator.api.sev_snp import (
    MEASUREMENT_HEX,
    SevSnpSpec,
    SevSnpSpecError,
    parse_sev_snp,
)

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
# spec.backup (the node configuration's ``backup:`` section; see BACKUP_MODES for the mapping)
BACKUP_MODES = {"Continuous": "continuous", "Scheduled": "schedule"}  # spec → node config
MIN_MAX_LAG = timedelta(seconds=5)
MAX_MAX_LAG = timedelta(hours=1)
DEFAULT_MAX_LAG = "60s"
MIN_RETENTION = timedelta(hours=1)
DEFAULT_REGION = "us-east-1"
MAX_ENDPOINT = 2048
MAX_PREFIX = 512
MAX_CA_BUNDLE = 256 * 1024  # well inside a ConfigMap's 1 MiB, next to node.yaml
# S3 bucket names: 3..63 of a-z 0-9 . -, starting and ending with a letter or digit, no "..",
# not an IPv4 address, none of the prefixes and suffixes S3 reserves.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")
# Key prefixes: "" or segments of A-Z a-z 0-9 . _ - each ending in "/" (no "." or ".." segment).
PREFIX_RE = re.compile(r"^([A-Za-z0-9._-]+/)*$")
REGION_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A Secret's name: a DNS-1123 subdomain.
MANIFEST_RE = re.compile(r"^manifests/[0-9]{20}-[0-9a-f]{16}\.cose$")
SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_SUBDOMAIN = 253


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
    sev_snp: SevSnpSpec | None = None  # platform sev-snp only


@dataclass(frozen=True)
class Storage:
    size: str
    storage_class_name: str | None
    retain_on_delete: bool


@dataclass(frozen=True)
class BackupS3:
    """``spec.backup.s3``: where the primary ships the ledger."""

    endpoint: str  # http(s) URL, no credentials, query or fragment
    bucket: str
    prefix: str  # "" or ending in "/"; default "<consortium>/"
    region: str
    credentials_secret: str  # a Secret in the Consortium's namespace (BACKUP_CREDENTIAL_KEYS)
    ca_bundle: str | None  # PEM certificates to trust for https, or None

    def node_section(self, credentials_dir: str, ca_file: str) -> dict[str, Any]:
        """The node configuration's bucket settings: every one explicit, the credentials as
        files of the mounted Secret in ``credentials_dir``, ``ca_file`` with a CA bundle."""
        section: dict[str, Any] = {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            **{
                f"{name}_file": f"{credentials_dir}/{key}"
                for name, key in zip(
                    ("access_key_id", "secret_access_key"), BACKUP_CREDENTIAL_KEYS, strict=True
                )
            },
        }
        if self.ca_bundle is not None:
            section["ca_file"] = ca_file
        return section


@dataclass(frozen=True)
class Backup:
    """``spec.backup``: ship the committed ledger to an S3-compatible bucket."""

    s3: BackupS3
    mode: str  # a key of BACKUP_MODES: Continuous | Scheduled
    max_lag: timedelta | None  # Continuous only
    schedule: str | None  # Scheduled only: a 5-field cron expression (UTC)
    retention: timedelta | None

    @property
    def node_mode(self) -> str:
        """The node configuration's ``mode``: ``continuous`` or ``schedule``."""
        return BACKUP_MODES[self.mode]


@dataclass(frozen=True)
class Recovery:
    """``spec.recovery``: this Consortium starts by recovering a lost one from its backup
    (``docs/recovery.md``); used only until it is bootstrapped (pod 0 in mode ``recover``)."""

    previous_service_certificate: str  # PEM, re-encoded
    s3: BackupS3  # the lost consortium's backup bucket (read access is enough)
    manifest: str | None  # a manifest key; None: the newest


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
    snapshot_writes_percent: int = 50
    backup: Backup | None = None  # None: no backups (the node config has no backup section)
    recovery_threshold: str | int = "majority"  # k of the members' recovery shares
    recovery: Recovery | None = None  # started by a disaster recovery (docs/recovery.md)

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
    recovery_key_pem: str | None = None  # spec.recoveryKey: a recovery member's public key


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


def _measurements(value: Any, platform: str) -> tuple[str, ...]:
    """Allowed measurements: SHA-256 (insecure-virtual), SEV-SNP's 48-byte launch digest."""
    field, digits = "spec.attestation.measurements", MEASUREMENT_HEX.get(platform, 64)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(field, f"expected a list of {digits}-digit lowercase hex measurements")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(f"[0-9a-f]{{{digits}}}", item):
            raise SpecError(
                f"{field}[{i}]",
                f"{item!r} is not {digits} lowercase hex digits (a measurement of platform "
                f"{platform})",
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


def _ledger(led: Mapping[str, Any]) -> tuple[int, timedelta, int, int]:
    """``spec.ledger``: signature interval (entries, time), snapshot interval and writes
    percent."""
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
    writes = led.get("snapshotWritesPercent", 50)
    if isinstance(writes, bool) or not isinstance(writes, int) or not 0 <= writes <= 10_000:
        raise SpecError(
            "spec.ledger.snapshotWritesPercent",
            "must be an integer in 0..10000 (0: the interval alone decides)",
        )
    return sig_tx, sig, snap, writes


def _string(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field, f"required: {what}")
    return value


def _endpoint(value: Any, base: str = "spec.backup.s3") -> str:
    field = f"{base}.endpoint"
    text = _string(value, field, "the S3 endpoint URL, e.g. https://minio.example:9000")
    if len(text) > MAX_ENDPOINT or any(ch.isspace() for ch in text):
        raise SpecError(field, f"must be a URL without spaces, at most {MAX_ENDPOINT} characters")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise SpecError(field, f"{text!r} must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise SpecError(
            field,
            "must not carry credentials (user:password@): they go in the Secret named by "
            f"{base}.credentialsSecret",
        )
    if not parts.hostname:
        raise SpecError(field, f"{text!r} names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise SpecError(field, f"{text!r} has an invalid port") from None
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise SpecError(field, f"{text!r} must not have a query or a fragment")
    if parts.path not in ("", "/"):
        raise SpecError(field, f"{text!r}: the S3 API's root URL, without a path")
    return text


def _bucket(value: Any, base: str = "spec.backup.s3") -> str:
    field = f"{base}.bucket"
    text = _string(value, field, "the bucket name")
    rules = (
        "S3 bucket names are 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending "
        "with a letter or digit"
    )
    if not BUCKET_RE.match(text):
        raise SpecError(field, f"{text!r}: {rules}")
    if ".." in text or ".-" in text or "-." in text:
        raise SpecError(field, f"{text!r}: no '..', '.-' or '-.' in a bucket name")
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        pass
    else:
        raise SpecError(field, f"{text!r}: a bucket name must not be an IP address")
    if text.startswith(BUCKET_RESERVED_PREFIXES) or text.endswith(BUCKET_RESERVED_SUFFIXES):
        raise SpecError(field, f"{text!r} uses a prefix or suffix S3 reserves")
    return text


def _prefix(value: Any, consortium: str, base: str = "spec.backup.s3") -> str:
    field = f"{base}.prefix"
    if value is None:
        return f"{consortium}/"
    if not isinstance(value, str):
        raise SpecError(field, 'expected a string ("" for the bucket\'s root)')
    if len(value) > MAX_PREFIX:
        raise SpecError(field, f"at most {MAX_PREFIX} characters")
    if not PREFIX_RE.match(value) or any(s in (".", "..") for s in value.split("/")):
        raise SpecError(
            field,
            f"{value!r}: \"\" or path segments of A-Z, a-z, 0-9, '.', '_' and '-' each ending "
            "in '/' (e.g. prod/ledger/), no '.' or '..' segment",
        )
    return value


def _region(value: Any, base: str = "spec.backup.s3") -> str:
    field = f"{base}.region"
    if value is None:
        return DEFAULT_REGION
    if not isinstance(value, str) or not REGION_RE.match(value):
        raise SpecError(field, f"{value!r} is not a region name like us-east-1")
    return value


def _credentials_secret(value: Any, base: str = "spec.backup.s3") -> str:
    field = f"{base}.credentialsSecret"
    what = (
        "the name of a Secret in this namespace with keys AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY"
    )
    text = _string(value, field, what)
    if len(text) > MAX_SUBDOMAIN or not SUBDOMAIN_RE.match(text):
        raise SpecError(field, f"{text!r} is not a Secret name (a DNS-1123 subdomain)")
    return text


def _ca_bundle(value: Any, base: str = "spec.backup.s3") -> str | None:
    field = f"{base}.caBundle"
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field, "expected PEM certificates (-----BEGIN CERTIFICATE-----), or none")
    if len(value) > MAX_CA_BUNDLE:
        raise SpecError(field, f"at most {MAX_CA_BUNDLE} characters")
    if "PRIVATE KEY" in value:
        raise SpecError(
            field,
            "holds a private key: the CA bundle is public (it goes into a ConfigMap); list only "
            "the CA certificates that issued the endpoint's TLS certificate",
        )
    blocks = re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", value)
    if not blocks or set(blocks) != {"CERTIFICATE"}:
        found = ", ".join(sorted(set(blocks))) or "no PEM block"
        raise SpecError(field, f"expected only CERTIFICATE PEM blocks, found {found}")
    try:
        certificates = x509.load_pem_x509_certificates(value.encode("utf-8"))
    except ValueError as exc:
        raise SpecError(field, f"does not parse as PEM certificates: {exc}") from None
    if len(certificates) != len(blocks):
        raise SpecError(field, f"{len(blocks)} PEM blocks but {len(certificates)} certificates")
    return value.strip() + "\n"


def _schedule(value: Any) -> str:
    field = "spec.backup.schedule"
    example = 'a 5-field cron expression in UTC (minute hour day month weekday), e.g. "0 */6 * * *"'
    if value is None:
        raise SpecError(field, f"required with mode Scheduled: {example}")
    if not isinstance(value, str) or len(value.split()) != 5:
        raise SpecError(field, f"{value!r} is not {example}")
    text = " ".join(value.split())
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise SpecError(field, f"{text!r} is not a valid cron expression: {exc}") from None
    return text


def _s3(s3: Mapping[str, Any], consortium: str, base: str) -> BackupS3:
    return BackupS3(
        endpoint=_endpoint(s3.get("endpoint"), base),
        bucket=_bucket(s3.get("bucket"), base),
        prefix=_prefix(s3.get("prefix"), consortium, base),
        region=_region(s3.get("region"), base),
        credentials_secret=_credentials_secret(s3.get("credentialsSecret"), base),
        ca_bundle=_ca_bundle(s3.get("caBundle"), base),
    )


def _recovery(rec: Mapping[str, Any], consortium: str) -> Recovery:
    """``spec.recovery``: the previous service certificate (a certificate, no key) and the
    backup to recover from."""
    field = "spec.recovery.previousServiceCertificate"
    pem = rec.get("previousServiceCertificate")
    if not isinstance(pem, str) or not pem.strip():
        raise SpecError(field, "required: the lost service's certificate (PEM)")
    if "PRIVATE KEY" in pem:
        raise SpecError(field, "holds a private key: give the certificate only (it is public)")
    if pem.count("-----BEGIN") != 1:
        raise SpecError(field, "expected exactly one PEM certificate (the lost service's)")
    try:
        certificate = load_certificate(pem, field)
    except IdentityError as exc:
        raise SpecError(field, str(exc).removeprefix(f"{field}: ")) from None
    source = _obj(rec.get("source"), "spec.recovery.source")
    s3 = _obj(source.get("s3"), "spec.recovery.source.s3")
    if not s3:
        raise SpecError(
            "spec.recovery.source.s3",
            "required: the bucket the lost consortium backed up to (endpoint, bucket, "
            "credentialsSecret; prefix and region as in its spec.backup.s3)",
        )
    manifest = rec.get("manifest")
    if manifest is not None and (
        not isinstance(manifest, str) or not MANIFEST_RE.fullmatch(manifest)
    ):
        raise SpecError(
            "spec.recovery.manifest",
            f"{manifest!r} is not a manifest key (manifests/<last index>-<hash>.cose)",
        )
    return Recovery(
        previous_service_certificate=certificate_pem(certificate),
        s3=_s3(s3, consortium, "spec.recovery.source.s3"),
        manifest=manifest,
    )


def _same_place(a: BackupS3, b: BackupS3) -> bool:
    return (a.endpoint.rstrip("/"), a.bucket, a.prefix) == (
        b.endpoint.rstrip("/"),
        b.bucket,
        b.prefix,
    )


def _backup(bak: Mapping[str, Any], consortium: str) -> Backup:
    """``spec.backup``: the checks the schema cannot make (URL parts, cron, ranges, PEM)."""
    s3 = _obj(bak.get("s3"), "spec.backup.s3")
    if not s3:
        raise SpecError("spec.backup.s3", "required: endpoint, bucket and credentialsSecret")
    target = _s3(s3, consortium, "spec.backup.s3")
    mode = bak.get("mode", "Continuous")
    if mode not in BACKUP_MODES:
        raise SpecError("spec.backup.mode", f"{mode!r} is not one of {', '.join(BACKUP_MODES)}")
    max_lag = schedule = None
    if mode == "Continuous":
        if bak.get("schedule") is not None:
            raise SpecError(
                "spec.backup.schedule", "applies to mode Scheduled only (mode is Continuous)"
            )
        max_lag = _duration(bak.get("maxLag"), "spec.backup.maxLag", DEFAULT_MAX_LAG)
        if not MIN_MAX_LAG <= max_lag <= MAX_MAX_LAG:
            raise SpecError(
                "spec.backup.maxLag",
                f"{_text(max_lag)} is out of range: from {_text(MIN_MAX_LAG)} to 1h",
            )
    else:
        if bak.get("maxLag") is not None:
            raise SpecError(
                "spec.backup.maxLag",
                "applies to mode Continuous only: with mode Scheduled the schedule decides",
            )
        schedule = _schedule(bak.get("schedule"))
    retention = None
    if bak.get("retention") is not None:
        retention = _duration(bak.get("retention"), "spec.backup.retention", "")
        if retention < MIN_RETENTION:
            raise SpecError(
                "spec.backup.retention", f"{_text(retention)} is too short: at least 1h"
            )
    return Backup(target, mode, max_lag, schedule, retention)


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
    measurements = _measurements(att.get("measurements"), platform)
    try:
        sev_snp = parse_sev_snp(att.get("sevSnp"), platform)
    except SevSnpSpecError as exc:
        raise SpecError(exc.field, exc.message) from exc
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
    threshold = _threshold(gov, "threshold")
    recovery_threshold = _threshold(gov, "recoveryThreshold")
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
    sig_tx, sig, snap, snap_writes = _ledger(_obj(spec.get("ledger"), "spec.ledger"))
    bak = spec.get("backup")
    backup = None if bak is None else _backup(_obj(bak, "spec.backup"), name)
    rec = spec.get("recovery")
    recovery = None if rec is None else _recovery(_obj(rec, "spec.recovery"), name)
    if backup is not None and recovery is not None and _same_place(backup.s3, recovery.s3):
        raise SpecError(
            "spec.backup.s3.prefix",
            f"{backup.s3.prefix!r} in bucket {backup.s3.bucket!r} is the recovery source: the "
            "recovered service backs up elsewhere (another prefix or bucket; the source's "
            "marker names the previous service)",
        )
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
            sev_snp=sev_snp,
        ),
        threshold=threshold,
        auto_trust_nodes=auto,
        recovery_threshold=recovery_threshold,
        storage=Storage(size=size, storage_class_name=sc, retain_on_delete=retain),
        resources=dict(_obj(spec.get("resources"), "spec.resources")),
        signature_interval_tx=sig_tx,
        signature_interval=sig,
        snapshot_interval=snap,
        snapshot_writes_percent=snap_writes,
        client_selector=dict(_obj(spec.get("clientSelector"), "spec.clientSelector")),
        backup=backup,
        recovery=recovery,
    )


def _threshold(gov: Mapping[str, Any], key: str) -> str | int:
    """``spec.governance.<key>``: 'majority' or a positive integer (a digit string too)."""
    value = gov.get(key, "majority")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value == "majority":
        return "majority"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise SpecError(f"spec.governance.{key}", "must be 'majority' or a positive integer")


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
    recovery = spec.get("recoveryKey")
    if recovery is not None and role != "governor":
        raise SpecError("spec.recoveryKey", f"only governors are recovery members (role {role})")
    if recovery is not None:
        try:
            recovery = recovery_key_pem(load_recovery_key(recovery))
        except RecoveryError as exc:
            raise SpecError("spec.recoveryKey", str(exc)) from None
    return MemberSpec(
        name=name,
        consortium=consortium,
        certificate_pem=member.pem,
        role=role,
        member_id=member.member_id,
        recovery_key_pem=recovery,
    )
