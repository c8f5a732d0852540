"""Node configuration (YAML), parsed once at start into frozen dataclasses.

A bad file fails fast with the dotted path of the offending field and why, before anything on
disk is touched. The operator renders this file into a ConfigMap; humans write it for the local
demo. Keys that we do not know are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from consortium_node.attestation import platforms, sev_snp
from consortium_node.attestation.sev_snp.tcb import COMPONENTS
from consortium_node.common.timeutil import parse_duration
from consortium_node.recovery.record import RecoveryError, load_recovery_key, recovery_key_pem

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
# A measurement: SHA-256 (insecure-virtual) or SEV-SNP's 48-byte launch digest.
MEASUREMENT_RE = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{96})$")
MODES = ("genesis", "join", "recover")
ROLES = ("governor", "user", "operator")


class ConfigError(ValueError):
    """The configuration is invalid; the message starts with the field's dotted path."""


@dataclass(frozen=True)
class MemberConfig:
    certificate_pem: str
    role: str
    recovery_key_pem: str | None = None  # a recovery member's P-256 public key (``recovery``)


@dataclass(frozen=True)
class PlatformConfig:
    """The TEE platform this node runs on (``attestation.platforms``) and where its
    endorsement material is: ``platform.<Endorsement.config_key>`` paths, kept here keyed by
    ``Endorsement.file``."""

    endorsements: Mapping[str, Path]
    chip_id: str
    name: str = platforms.DEFAULT
    tcb_version: int = 1
    min_tcb_version: int = 1
    revoked_chip_ids: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # ``platform.sev_snp``: device…
    policy: Mapping[str, Any] | None = None  # the platform's own policy (genesis records it)


@dataclass(frozen=True)
class AttestationConfig:
    measurements: tuple[str, ...]
    host_data: tuple[str, ...]
    validity: timedelta = timedelta(hours=24)
    renew_before: timedelta = timedelta(hours=8)
    max_quote_age: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class LedgerSettings:
    signature_interval_tx: int = 100
    signature_interval_ms: int = 100
    chunk_max_bytes: int = 8 * 1024 * 1024
    snapshot_interval: int = 10_000
    snapshot_writes_percent: int = 50


@dataclass(frozen=True)
class JoinConfig:
    service_certificate: Path
    trusted_list: str  # a file path (the mounted ConfigMap) or an https:// URL
    retry_interval: float = 1.0
    timeout: float | None = None


@dataclass(frozen=True)
class RaftConfig:
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    commit_timeout: float = 10.0


@dataclass(frozen=True)
class Limits:
    """Request size limits (``limits:`` in the file). The shape of a JSON body is bounded in
    code, the same for every node and every JSON it parses (``common/bounded_json.py``:
    ``MAX_DEPTH`` nesting, ``MAX_NUMBER_CHARS`` per number), since a recursive walker's
    safety must not depend on a setting."""

    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_key_bytes: int = 1024
    max_value_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Constitution:
    threshold: str = "majority"
    auto_trust_nodes: bool = True
    recovery_threshold: str | int = "majority"  # k of the recovery shares (``recovery``)

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "auto_trust_nodes": self.auto_trust_nodes,
            "recovery_threshold": self.recovery_threshold,
        }


@dataclass(frozen=True)
class BackupConfig:
    """``backup:``: where and how often the primary ships the ledger (``server/backup.py``).
    Credentials are files (a mounted Secret) read at every round, so a rotated key is used
    without a restart and a missing one is reported, not fatal."""

    endpoint: str
    bucket: str
    prefix: str
    region: str
    access_key_id_file: Path
    secret_access_key_file: Path
    ca_file: Path | None = None
    mode: str = "continuous"
    max_lag: timedelta = timedelta(seconds=60)
    schedule: str | None = None
    retention: timedelta | None = None


@dataclass(frozen=True)
class RecoveryConfig:
    """``recovery:`` (mode ``recover``): where the lost consortium's ledger is read from and the
    service certificate it was written under (``server/recover.py``). The source is a backup:
    a bucket (``bucket``, the settings of ``backup:``, read access is enough) or a local copy
    of one (``directory``)."""

    previous_service_certificate: Path
    directory: Path | None = None
    bucket: BackupConfig | None = None
    manifest: str | None = None  # a manifest key; default the newest


@dataclass(frozen=True)
class NodeConfig:
    consortium: str
    name: str
    mode: str
    data_dir: Path
    listen_host: str
    listen_port: int
    address: str
    platform: PlatformConfig
    attestation: AttestationConfig
    subject_alt_names: tuple[str, ...] = ()
    members: tuple[MemberConfig, ...] = ()
    constitution: Constitution = field(default_factory=Constitution)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    limits: Limits = field(default_factory=Limits)
    insecure_test_faults: tuple[str, ...] = ()
    join: JoinConfig | None = None
    raft: RaftConfig = field(default_factory=RaftConfig)
    trusted_list_path: Path | None = None
    peer_hosts_file: Path | None = None
    insecure_test_faults_file: Path | None = None
    backup: BackupConfig | None = None
    recovery: RecoveryConfig | None = None


class _Reader:
    """Reads one mapping, remembering its dotted path and which keys were consumed."""

    def __init__(self, data: Any, path: str, base: Path) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
        self.data, self.path, self.base, self.used = data, path, base, set[str]()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default: Any = ..., required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required or default is ...:
                raise ConfigError(f"{self._p(key)}: required")
            return default
        return self.data[key]

    def str_(self, key: str, default: Any = ..., pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._p(key)}: expected a non-empty string")
        if pattern and not pattern.match(value):
            raise ConfigError(f"{self._p(key)}: {value!r} does not match {pattern.pattern}")
        return value

    def int_(self, key: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._p(key)}: expected an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self._p(key)}: {value} is outside {minimum}..{maximum}")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._p(key)}: expected true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise ConfigError(f"{self._p(key)}: {value!r} is not one of {', '.join(choices)}")
        return str(value)

    def duration(self, key: str, default: timedelta) -> timedelta:
        value = self.raw(key, None)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{self._p(key)}: {exc}") from exc

    def path_(self, key: str, default: Any = ...) -> Path:
        path = Path(self.str_(key, default))
        return path if path.is_absolute() else self.base / path

    def strings(self, key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"{self._p(key)}: expected a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern and not pattern.match(item)):
                want = f"match {pattern.pattern}" if pattern else "be a string"
                raise ConfigError(f"{self._p(key)}[{i}]: {item!r} must {want}")
        return tuple(value)

    def child(self, key: str) -> _Reader:
        return _Reader(self.raw(key, {}), self._p(key), self.base)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = self.path or "<root>"
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _member(item: Any, path: str, base: Path) -> MemberConfig:
    reader = _Reader(item, path, base)
    text = reader.str_("certificate")
    if "-----BEGIN CERTIFICATE-----" not in text:
        cert_path = Path(text) if Path(text).is_absolute() else base / text
        try:
            text = cert_path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}.certificate: cannot read {cert_path}: {exc}") from exc
    role = reader.choice("role", ROLES, "governor")
    recovery = reader.raw("recovery_key", None)
    if recovery is not None:
        if role != "governor":
            raise ConfigError(f"{path}.recovery_key: only governors are recovery members")
        try:
            recovery = recovery_key_pem(load_recovery_key(recovery))
        except RecoveryError as exc:
            raise ConfigError(f"{path}.recovery_key: {exc}") from exc
    reader.done()
    return MemberConfig(certificate_pem=text, role=role, recovery_key_pem=recovery)


def _platform(plat: _Reader, node_name: str) -> PlatformConfig:
    """``platform``: its ``name`` picks the registered platform, whose endorsements decide
    which path keys are required (``platform.<config_key>``; optional ones may be left out)."""
    tee = platforms.by_name(plat.choice("name", platforms.names(), platforms.DEFAULT))
    endorsements = {
        e.file: plat.path_(e.config_key)
        for e in tee.endorsements
        if not e.optional or plat.raw(e.config_key, None) is not None
    }
    options, policy = _sev_snp(plat.child("sev_snp")) if tee.name == "sev-snp" else ({}, None)
    platform = PlatformConfig(
        name=tee.name,
        endorsements=endorsements,
        chip_id=plat.str_("chip_id", node_name),
        tcb_version=plat.int_("tcb_version", 1, 0, 255),
        min_tcb_version=plat.int_("min_tcb_version", 1, 0, 255),
        revoked_chip_ids=plat.strings("revoked_chip_ids"),
        options=options,
        policy=policy,
    )
    plat.done()
    return platform


def _sev_snp(snp: _Reader) -> tuple[dict[str, Any], dict[str, Any]]:
    """``platform.sev_snp``: where reports come from (``device``, paths, ``vmpl``), the
    emulator's chip (tests only) and the SEV-SNP ``policy`` genesis records."""
    options: dict[str, Any] = {
        "device": snp.choice("device", sev_snp.DEVICES, "auto"),
        "sev_guest_path": str(snp.path_("sev_guest_path", "/dev/sev-guest")),
        "configfs_path": str(snp.path_("configfs_path", "/sys/kernel/config/tsm/report")),
        "vmpl": snp.int_("vmpl", 0, 0, 3),
    }
    emu = snp.child("emulator")
    if options["device"] == "insecure-emulator":
        options["report_version"] = emu.int_("report_version", 3, 2, 5)
        options["derived_keys"] = emu.bool_("derived_keys", True)  # False: as configfs-tsm
        tcb = emu.raw("tcb", {})
        if not isinstance(tcb, Mapping) or any(
            k not in COMPONENTS or not isinstance(v, int) or not 0 <= v <= 255
            for k, v in tcb.items()
        ):
            raise ConfigError(f"platform.sev_snp.emulator.tcb: components {COMPONENTS}, 0..255")
        options["tcb"] = dict(tcb)
    emu.done()
    try:
        policy = sev_snp.SnpPolicy.from_json(snp.raw("policy", {}), "platform.sev_snp.policy")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    snp.done()
    return options, policy.to_json()


def _constitution(con: _Reader) -> Constitution:
    """``constitution``: the genesis constitution (thresholds as 'majority' or an integer)."""
    values = {}
    for key in ("threshold", "recovery_threshold"):
        value = con.raw(key, "majority")
        if value != "majority" and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise ConfigError(f"constitution.{key}: must be 'majority' or a positive integer")
        values[key] = value
    constitution = Constitution(
        str(values["threshold"]),
        con.bool_("auto_trust_nodes", True),
        recovery_threshold=values["recovery_threshold"],
    )
    con.done()
    return constitution


def parse_config(data: Any, base: Path) -> NodeConfig:
    """Build a NodeConfig from parsed YAML; relative paths resolve against ``base``."""
    root = _Reader(data, "", base)
    consortium = root.str_("consortium", pattern=NAME_RE)
    name = root.str_("name", pattern=NAME_RE)
    mode = root.choice("mode", MODES)
    listen = root.child("listen")
    host = listen.str_("host", "127.0.0.1")
    port = listen.int_("port", 8443, 0, 65535)
    listen.done()
    platform = _platform(root.child("platform"), name)
    att = root.child("attestation")
    attestation = AttestationConfig(
        measurements=att.strings("measurements", MEASUREMENT_RE),
        host_data=att.strings("host_data", HEX64_RE),
        validity=att.duration("validity", timedelta(hours=24)),
        renew_before=att.duration("renew_before", timedelta(hours=8)),
        max_quote_age=att.duration("max_quote_age", timedelta(minutes=10)),
    )
    att.done()
    if not attestation.measurements and mode == "genesis":
        raise ConfigError(
            "attestation.measurements: list at least one allowed measurement "
            "(`consortium-node measure` prints this build's)"
        )
    if attestation.renew_before >= attestation.validity:
        raise ConfigError("attestation.renew_before: must be shorter than attestation.validity")
    led = root.child("ledger")
    ledger = LedgerSettings(
        signature_interval_tx=led.int_("signature_interval_tx", 100, 1, 1_000_000),
        signature_interval_ms=led.int_("signature_interval_ms", 100, 1, 3_600_000),
        chunk_max_bytes=led.int_("chunk_max_bytes", 8 * 1024 * 1024, 4096, 2**31),
        snapshot_interval=led.int_("snapshot_interval", 10_000, 0, 100_000_000),
        snapshot_writes_percent=led.int_("snapshot_writes_percent", 50, 0, 10_000),
    )
    led.done()
    lim = root.child("limits")
    limits = Limits(
        max_body_bytes=lim.int_("max_body_bytes", 1024 * 1024, 1024, 64 * 1024 * 1024),
        max_batch=lim.int_("max_batch", 1000, 1, 100_000),
        max_key_bytes=lim.int_("max_key_bytes", 1024, 1, 65536),
        max_value_bytes=lim.int_("max_value_bytes", 64 * 1024, 1, 16 * 1024 * 1024),
    )
    lim.done()
    constitution = _constitution(root.child("constitution"))
    members_raw = root.raw("members", [])
    if not isinstance(members_raw, list):
        raise ConfigError("members: expected a list of {certificate, role}")
    members = tuple(_member(m, f"members[{i}]", base) for i, m in enumerate(members_raw))
    if mode == "genesis" and not any(m.role == "governor" for m in members):
        raise ConfigError("members: a genesis node needs at least one member with role governor")
    join = _join(root, base) if mode == "join" else None
    if mode == "genesis" and "join" in root.data:
        raise ConfigError("join: only for mode join")
    recovery = _recovery(root, consortium) if mode == "recover" else None
    if mode != "recover" and root.raw("recovery", None) is not None:
        raise ConfigError("recovery: only for mode recover")
    rft = root.child("raft")
    raft = RaftConfig(
        election_timeout=rft.duration("election_timeout", timedelta(seconds=1)).total_seconds(),
        heartbeat_interval=rft.duration(
            "heartbeat_interval", timedelta(milliseconds=100)
        ).total_seconds(),
        commit_timeout=rft.duration("commit_timeout", timedelta(seconds=10)).total_seconds(),
    )
    rft.done()
    if raft.heartbeat_interval * 2 > raft.election_timeout:
        raise ConfigError("raft.heartbeat_interval: must be at most half of election_timeout")
    watched = root.raw("trusted_list_path", None)
    hosts = root.raw("peer_hosts_file", None)
    faults_file = root.raw("insecure_test_faults_file", None)
    config = NodeConfig(
        consortium=consortium,
        name=name,
        mode=mode,
        data_dir=root.path_("data_dir"),
        listen_host=host,
        listen_port=port,
        address=root.str_("address", f"{host}:{port}"),
        platform=platform,
        attestation=attestation,
        subject_alt_names=root.strings("subject_alt_names"),
        members=members,
        constitution=constitution,
        ledger=ledger,
        limits=limits,
        insecure_test_faults=root.strings("insecure_test_faults"),
        join=join,
        raft=raft,
        trusted_list_path=root.path_("trusted_list_path") if watched is not None else None,
        peer_hosts_file=root.path_("peer_hosts_file") if hosts is not None else None,
        insecure_test_faults_file=(
            root.path_("insecure_test_faults_file") if faults_file is not None else None
        ),
        backup=_backup(root, consortium),
        recovery=recovery,
    )
    root.done()
    return config


BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX_RE = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)*$")
ENDPOINT_RE = re.compile(r"^https?://[^/?#\s]+/?$")


def _backup(root: _Reader, consortium: str) -> BackupConfig | None:
    if root.raw("backup", None) is None:
        return None
    reader = root.child("backup")
    mode = reader.choice("mode", ("continuous", "schedule"), "continuous")
    max_lag = reader.duration("max_lag", timedelta(seconds=60))
    if not timedelta(seconds=5) <= max_lag <= timedelta(hours=1):
        raise ConfigError("backup.max_lag: must be between 5s and 1h")
    schedule = reader.raw("schedule", None)
    if mode == "schedule":
        schedule = reader.str_("schedule")
        _check_cron(schedule)
    elif schedule is not None:
        raise ConfigError("backup.schedule: only for mode schedule")
    retention = (
        reader.duration("retention", timedelta(0)) if reader.raw("retention", None) else None
    )
    if retention is not None and retention < timedelta(hours=1):
        raise ConfigError("backup.retention: must be at least 1h")
    backup = _bucket(reader, consortium, mode=mode, max_lag=max_lag, schedule=schedule,
                     retention=retention)  # fmt: skip
    reader.done()
    return backup


def _bucket(reader: _Reader, consortium: str, **settings: Any) -> BackupConfig:
    """The bucket settings of ``backup:`` (or ``recovery.source.bucket:``)."""
    prefix = reader.raw("prefix", f"{consortium}/")
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise ConfigError(
            f"{reader.path}.prefix: must be empty or path segments each ending in '/' "
            "(e.g. prod/ledger/)"
        )
    ca = reader.raw("ca_file", None)
    return BackupConfig(
        endpoint=reader.str_("endpoint", pattern=ENDPOINT_RE).rstrip("/"),
        bucket=reader.str_("bucket", pattern=BUCKET_RE),
        prefix=prefix,
        region=reader.str_("region", "us-east-1"),
        access_key_id_file=reader.path_("access_key_id_file"),
        secret_access_key_file=reader.path_("secret_access_key_file"),
        ca_file=reader.path_("ca_file") if ca is not None else None,
        **settings,
    )


def _recovery(root: _Reader, consortium: str) -> RecoveryConfig:
    reader = root.child("recovery")
    previous = reader.path_("previous_service_certificate")
    source = reader.child("source")
    has_dir, has_bucket = (source.raw(k, None) is not None for k in ("directory", "bucket"))
    if has_dir == has_bucket:
        raise ConfigError("recovery.source: name exactly one of directory or bucket")
    directory = source.path_("directory") if has_dir else None
    bucket = None
    if has_bucket:
        bucket_reader = source.child("bucket")
        bucket = _bucket(bucket_reader, consortium)
        bucket_reader.done()
    source.done()
    manifest = reader.raw("manifest", None)
    if manifest is not None and (not isinstance(manifest, str) or not manifest.strip()):
        raise ConfigError("recovery.manifest: expected a manifest key (manifests/…), or none")
    reader.done()
    return RecoveryConfig(previous, directory, bucket, manifest)


def _check_cron(expression: str) -> None:
    from croniter import croniter  # noqa: PLC0415 - only nodes with a backup schedule need it

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ConfigError(
            f"backup.schedule: {expression!r} is not a 5-field cron expression (e.g. '0 */6 * * *')"
        )


def _join(root: _Reader, base: Path) -> JoinConfig:
    reader = root.child("join")
    source = reader.str_("trusted_list")
    if not source.startswith("https://") and not Path(source).is_absolute():
        source = str(base / source)
    timeout = reader.raw("timeout", None)
    join = JoinConfig(
        service_certificate=reader.path_("service_certificate"),
        trusted_list=source,
        retry_interval=reader.duration("retry_interval", timedelta(seconds=1)).total_seconds(),
        timeout=None
        if timeout is None
        else reader.duration("timeout", timedelta(0)).total_seconds(),
    )
    reader.done()
    return join


def read_yaml(path: Path) -> Any:
    """The parsed YAML at ``path``, or ConfigError saying why not."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_config(path: Path) -> NodeConfig:
    """Read and parse a YAML configuration file."""
    return parse_config(read_yaml(path), path.parent)
