"""How a node comes up: its TEE (the configured platform) and key, then genesis, join or restart.

Why a module of its own: start-up decides once, before anything is served, which identity
and which ledger this node runs with, and when an identity must be set aside instead of used;
the running node (``node.py``) never needs any of it again. ``Node.open`` calls
``open_node``, which provisions the TEE (``_platform``) and the node key, then one of

* **genesis**: create the service identity and ledger secret inside the enclave, write the
  genesis transaction, trust itself and issue trusted-node list version 1;
* **join**: attest to the primary and receive the secrets wrapped to this node's key
  (``joiner``), then catch up through Raft;
* **restart**: unseal, replay the ledger (a storage fault set aside, ``Ledger.open(repair=
  True)``); consensus tells what is committed;
* **re-join**: part of the sealed state is gone (service identity or ledger secret), the node
  key is not: attest again and receive the secrets, keeping the ledger.

An identity is set aside (moved to ``retired-<stamp>-<why>/``, never deleted; ``recovery``)
when this code cannot unseal it (a code upgrade: sealing keys derive from the measurement),
its node key is lost, or the published trusted-node list says the node was Retired; the node
then starts afresh as a joiner (a genesis node through the peers it knew).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import (
    AttestationError,
    Attester,
    AttesterSettings,
    VerifierRegistry,
    host_data_for,
    measure_installed,
    parse_faults,
    platforms,
)
from consortium_node.common.files import write_atomic
from consortium_node.common.timeutil import utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_der,
    certificate_pem,
    load_certificate,
    load_member_certificate,
)
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.wrap import unwrap
from consortium_node.ledger import EntryKind, LedgerSecrets
from consortium_node.ledger.damage import DamageKind
from consortium_node.server import joiner, snapshot_fetch, snapshot_install
from consortium_node.server.config import JoinConfig, NodeConfig
from consortium_node.server.errors import NodeStartError
from consortium_node.server.genesis import (
    attestation_policy,
    genesis_writes,
)
from consortium_node.server.join_secrets import join_context
from consortium_node.server.ledger_secrets import FIRST as FIRST_SECRET
from consortium_node.server.ledger_secrets import decode_later
from consortium_node.server.recover import SEALED_RECOVERING, recover
from consortium_node.server.recovery import (
    check_repairable,
    known_peers,
    retired_by_published_list,
    set_aside,
    set_aside_retired_identity,
)
from consortium_node.server.sealed import IdentityLostError, SealedStore, SealedStoreError
from consortium_node.server.start_steps import (
    check_own_attestation,
    open_ledger,
    seal_service,
    start_views,
    trust_self,
    use_certificate,
)

if TYPE_CHECKING:
    from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.node")  # start-up is the node's own story in the logs


@dataclass(frozen=True)
class Tee:
    """The TEE a node runs in, as ``_platform`` builds it."""

    measurement: str
    host_data: str
    enclave: Attester
    verifiers: VerifierRegistry
    sealed: SealedStore


# Makes a Node from its configuration, TEE and node key (``Node.__init__``).
NewNode = Callable[[NodeConfig, Tee, keys.PrivateKey], "Node"]


def open_node(new: NewNode, config: NodeConfig) -> Node:
    """Start a node from its configuration and data directory (see above)."""
    rejoin: JoinConfig | None = None
    try:
        node = _provision(new, config)
    except SealedStoreError as exc:
        # Sealed by other code (a code upgrade: sealing keys derive from the measurement)
        # or another chip, or the node key is gone. That identity can never be used again;
        # keep its data and join afresh (never as a second genesis: a second network). A
        # genesis node joins through the peers it knew.
        if config.mode in ("genesis", "recover") and known_peers(config.data_dir) is None:
            raise NodeStartError(
                f"{exc}; a genesis node will not start a second network over it, and knows "
                "no peer to join: start this node as a joiner"
            ) from exc
        lost = isinstance(exc, IdentityLostError)
        aside = set_aside(config.data_dir, "identity-lost" if lost else "sealed-elsewhere")
        if config.mode in ("genesis", "recover"):
            rejoin = known_peers(aside)
        log.warning("%s; the data is kept at %s and the node starts afresh", exc, aside)
        node = _provision(new, config)
    if node.sealed.exists("service-identity") and retired_by_published_list(node):
        set_aside_retired_identity(node)
        node = _provision(new, config)
    has_service, has_secret = (
        node.sealed.exists("service-identity"),
        node.sealed.exists(FIRST_SECRET),
    )
    # Part of the sealed state was lost: get it again with the same identity, if a peer can.
    again = (config.join or known_peers(config.data_dir)) if has_service != has_secret else None
    if has_service and has_secret:
        _restart(node)
    elif has_service and node.sealed.exists(SEALED_RECOVERING):
        _restart(node, LedgerSecrets(None))  # WaitingForRecoveryShares (``recover``)
    elif again is not None:
        _rejoin(node, again)
    elif rejoin is not None:
        _join(node, rejoin)
    elif config.mode == "genesis":
        _genesis(node)
    elif config.mode == "recover":
        recover(node)
    else:
        _join(node)
    # Public: how a local user obtains the service certificate (CCF writes it the same way).
    write_atomic(
        node.data_dir / "service_cert.pem",
        node.service.certificate_pem.encode("ascii"),
        mode=0o644,
    )
    node.refresh_metrics()
    return node


def _provision(new: NewNode, config: NodeConfig) -> Node:
    """A node in its TEE with its key (unsealed, or created and sealed); nothing started."""
    tee = _platform(config)
    return new(config, tee, _node_key(tee.sealed))


def _platform(config: NodeConfig) -> Tee:
    """The TEE this node runs in: the configured platform's attester (quotes and sealing)
    for this node's chip and code, the verifiers of quotes, and the sealed store. Nothing
    here knows one platform: the registry (``attestation.platforms``) builds both sides."""
    platform = platforms.by_name(config.platform.name)
    optional = {e.file for e in platform.endorsements if e.optional}
    material = {
        file: _read(path, f"platform.{_config_key(platform, file)}")
        for file, path in config.platform.endorsements.items()
        if file not in optional or path.exists()  # an optional file may be left out
    }
    measurement = measure_installed()
    # A recovery node starts a service again, as genesis does: it is launched as genesis.
    role = "genesis" if config.mode == "recover" else config.mode
    host_data = host_data_for(config.consortium, role)
    try:
        enclave = platform.attester(
            AttesterSettings(
                chip_id=config.platform.chip_id,
                tcb_version=config.platform.tcb_version,
                measurement=measurement,
                host_data=host_data,
                endorsements=material,
                faults=parse_faults(config.insecure_test_faults),
                options=config.platform.options,
            )
        )
        verifiers = platforms.verifier_registry({platform.name: material})
    except AttestationError as exc:
        raise NodeStartError(f"platform {platform.name}: {exc}") from exc
    sealed = SealedStore(config.data_dir / "sealed", enclave)
    # What the hardware reports (SEV-SNP: the launch digest) is what policies must allow.
    return Tee(enclave.measurement, enclave.host_data, enclave, verifiers, sealed)


def _node_key(sealed: SealedStore) -> keys.PrivateKey:
    if sealed.exists("node-key"):
        return keys.load_private_key(sealed.get("node-key"))
    others = sorted(p.name for p in sealed.directory.glob("*.sealed"))
    ledger = sealed.directory.parent / "ledger"
    if others or any(ledger.glob("ledger_*.chunk")):
        # The identity this data belongs to is gone (a storage fault): nobody can ever use
        # it again, and a new key must not impersonate it. Keep the data, start afresh.
        raise IdentityLostError(
            f"{sealed.directory}/node-key.sealed is missing although this node holds "
            f"{', '.join(others) or 'a ledger'}: its identity is lost"
        )
    key = keys.generate_key("p256")
    sealed.put("node-key", keys.private_key_pem(key))
    return key


def _config_key(platform: platforms.Platform, file: str) -> str:
    return next(e.config_key for e in platform.endorsements if e.file == file)


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NodeStartError(f"{field}: cannot read {path}: {exc}") from exc


# ---------------------------------------------------------------------- set-aside
def _set_aside_interrupted_genesis(node: Node, ledger_dir: Path) -> None:
    """Move aside a ledger left by a genesis that crashed before sealing its service key.

    Such a ledger holds at most the genesis transaction, which nobody could ever extend or
    verify (its service key was lost) and nobody was told about. Anything longer means the
    sealed identity was removed by hand: refuse, rather than start a second history.
    """
    if not node.sealed.exists("ledger-secret"):
        raise NodeStartError(f"{ledger_dir} holds a ledger but no sealed secrets; refusing")
    with open_ledger(node, node.sealed.get("ledger-secret")) as orphan:
        entries = orphan.last_index
    if entries > 1:
        raise NodeStartError(
            f"{ledger_dir} holds {entries} transactions but no sealed service identity; "
            "refusing to start a second history over it (restore the sealed/ directory)"
        )
    aside = ledger_dir.with_name(f"ledger.interrupted-genesis-{utcnow():%Y%m%dT%H%M%SZ}")
    ledger_dir.rename(aside)
    log.warning("genesis was interrupted before completing; its ledger is kept at %s", aside)


# ---------------------------------------------------------------------- genesis
def _genesis(node: Node) -> None:
    config = node.config
    ledger_dir = node.data_dir / "ledger"
    if ledger_dir.exists() and any(ledger_dir.glob("*.chunk")):
        _set_aside_interrupted_genesis(node, ledger_dir)
    members = [
        load_member_certificate(m.certificate_pem, f"members[{i}].certificate")
        for i, m in enumerate(config.members)
    ]
    check_own_attestation(node, attestation_policy(config))
    node.service = ServiceIdentity.create(config.consortium)
    node.ledger = open_ledger(node, node.vault.create(os.urandom(32)))
    start_views(node)
    nonce = hashlib.sha256(certificate_der(node.service.certificate)).digest()
    quote = node.enclave.quote(keys.public_key_der(node.node_key), nonce).to_json()
    writes = genesis_writes(
        config,
        service=node.service,
        members=members,
        node_id=node.node_id,
        genesis_quote=quote,
        platform=node.enclave.platform_name,
    )
    node.raft_state.save(1, node.node_id)
    node.ledger.term = 1
    node.ledger.append([writes], EntryKind.PUBLIC)
    node.ledger.sync_and_commit()
    # Sealed only once genesis is durable; see _set_aside_interrupted_genesis.
    seal_service(node)
    trust_self(node)
    log.info(
        "genesis complete: consortium %s, service certificate sha256 %s",
        config.consortium,
        node.service.certificate_sha256,
    )


# ---------------------------------------------------------------------- join
def _join(node: Node, settings: JoinConfig | None = None) -> None:
    settings = settings or node.config.join
    if settings is None:
        raise NodeStartError(
            "join: mode join needs a join section (service_certificate, trusted_list)"
        )
    service_cert = load_certificate(_read(settings.service_certificate, "join.service_certificate"))
    answer = joiner.join(
        consortium=node.config.consortium,
        name=node.config.name,
        address=node.config.address,
        public_key_pem=keys.public_key_pem(node.node_key),
        quote_for=lambda nonce: node.enclave.quote(
            keys.public_key_der(node.node_key), nonce
        ).to_json(),
        service_certificate=service_cert,
        trusted_list_source=settings.trusted_list,
        retry_interval=settings.retry_interval,
        timeout=settings.timeout,
        subject_alt_names=node.config.subject_alt_names,
    )
    assert isinstance(node.node_key, ec.EllipticCurvePrivateKey)
    secrets = json.loads(
        unwrap(
            node.node_key,
            answer.wrapped_secrets,
            join_context(node.config.consortium, node.node_id),
        )
    )
    node.service = ServiceIdentity.from_parts(
        keys.load_private_key(secrets["service_key"].encode("ascii")),
        load_certificate(secrets["service_certificate"], "service certificate"),
    )
    if node.service.certificate_sha256 != hashlib.sha256(certificate_der(service_cert)).hexdigest():
        raise NodeStartError("join: the primary sent another service identity")
    # Every version the primary holds, so history from before this node joined reads too.
    keyring = node.vault.create(
        bytes.fromhex(secrets["ledger_secret"]), decode_later(secrets.get("ledger_secrets", {}))
    )
    seal_service(node)
    snapshot_fetch.on_empty_volume(
        node.data_dir / "ledger",
        answer.trusted_list,
        consortium=node.config.consortium,
        own_address=node.config.address,
        certificate=service_cert,
        secrets=keyring,
        first=answer.source,
    )
    node.ledger = open_ledger(node, keyring)
    start_views(node)
    node.membership.store.accept(answer.trusted_list)
    use_certificate(node, load_certificate(answer.node_certificate, "node certificate"))
    log.info("joined consortium %s as %s", node.config.consortium, node.node_id[:16])


def _rejoin(node: Node, settings: JoinConfig) -> None:
    """Sealed secrets lost to a storage fault (the service identity or the ledger secret),
    the node key intact: attest to the primary again (``settings``: the join section, or the
    peers the node knew), as a Trusted node that lost a join answer does, and receive the
    secrets wrapped to this key; the ledger on disk is kept."""
    missing = [f"{label}.sealed" for label in ("service-identity", FIRST_SECRET)
               if not node.sealed.exists(label)]  # fmt: skip
    log.warning("sealed state lost (%s): getting it again from the primary", ", ".join(missing))
    _join(node, settings)
    node.metrics.repairs.labels(DamageKind.SEALED.value).inc()
    log.warning("sealed state repaired: %s obtained again from the primary", ", ".join(missing))


# ---------------------------------------------------------------------- restart
def _restart(node: Node, secrets: LedgerSecrets | None = None) -> None:
    """Unseal and replay; ``secrets``: a recovery node waiting for its members' shares holds
    none (``recover``)."""
    blob = json.loads(node.sealed.get("service-identity"))
    node.service = ServiceIdentity.from_parts(
        keys.load_private_key(blob["key"].encode("ascii")),
        load_certificate(blob["certificate"], "sealed service certificate"),
    )
    secrets = node.vault.load() if secrets is None else secrets
    aside = snapshot_install.install_staged(node.data_dir)
    if aside is not None:
        log.warning("installing the staged snapshot; the old ledger is kept in %s", aside)
    peers = known_peers(node.data_dir)
    if peers is not None:  # ledger files lost, sealed state kept: from a snapshot if one is
        with contextlib.suppress(OSError, IdentityError):
            snapshot_fetch.on_empty_volume(
                node.data_dir / "ledger",
                Path(peers.trusted_list).read_bytes(),
                consortium=node.config.consortium,
                own_address=node.config.address,
                certificate=node.service.certificate,
                secrets=secrets,
            )
    node.ledger = open_ledger(node, secrets)
    start_views(node)
    check_repairable(node)
    record = node.node_record(node.node_id)
    pem = record.get("certificate") if record else None
    saved = node.data_dir / "node_cert.pem"
    if saved.exists():
        on_disk = load_certificate(saved.read_bytes(), "node_cert.pem")
        if pem is None or on_disk.not_valid_after_utc > load_certificate(pem).not_valid_after_utc:
            pem = certificate_pem(on_disk)
    if pem is None:
        raise NodeStartError("no node certificate for this node in the ledger or on disk")
    use_certificate(node, load_certificate(pem, "node certificate"))
    ledger = node.ledger
    log.info(
        "restarted: log ends at %d (term %d)%s; waiting for consensus to commit the rest",
        ledger.last_index,
        ledger.term_at(ledger.last_index),
        f", committed state from the snapshot at {ledger.commit_index}"
        if ledger.commit_index
        else ", every entry replayed",
    )
