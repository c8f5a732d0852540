"""A recovery node: the first node of a consortium brought back from its backup after a disaster.

Why: when every node lost its sealed state at once (``docs/recovery.md``), nobody can unwrap
the ledger secrets or use the old service key. The public ledger survives in the backup and
verifies with the previous service certificate alone; the private entries come back with the
members' recovery shares. This module is the start of a node in mode ``recover``:

1. verify the backup with the previous service certificate (``backup.verify``: the manifest's
   signature, every object's digest, every entry in order, every signature over the Merkle
   root by a node certificate the previous service issued, every snapshot against its
   evidence), copying each segment's entries into a fresh ledger as it verifies (the same
   bytes at the same indexes: the Merkle tree and every old receipt stay valid). Private
   entries are committed unread (``LedgerSecrets(None)``): the public state is rebuilt, the
   private one waits for the secrets;
2. create a **new service identity** inside the enclave and write one public entry under Raft
   term (last recovered term + 1) that records the recovery: the service row ``Recovering``
   (``service_state``) with the previous certificate's digest and the last recovered txid; the
   history record (``identity/endorsement.py``: the previous certificate and the new identity's
   endorsement of it); every old node Retired (their keys were sealed to lost hardware); this
   node Trusted after verifying its own quote against the **recovered** attestation policy;
   and trusted-node list version (recovered + 1) naming only this node, so it never waits for a
   vote from a dead voter; the configuration's ``operator`` member replaces the recovered one
   (``_operator_members``). A signature entry under the new identity follows;
3. seal the service identity (nothing else: no ledger secret is held yet).

The node then serves in phase ``WaitingForRecoveryShares`` (``recovery_api``): governance
works (public), application writes and joins are refused, and the recovery members submit
their shares. With k of them the node seals every ledger secret version and restarts
(``recovery_api``; exit 75); the restart replays the ledger with the secrets (an ordinary
restart) and the phase is ``WaitingForOpen`` until the governors pass
``transition_service_to_open``, which also rotates a fresh ledger secret in.

Crash-safety: nothing is sealed before the recovery entry is durable; a node that crashed
before then finds a ledger and no sealed service identity, moves that ledger aside (kept as
``ledger.interrupted-recovery-<stamp>``) and starts over from the backup, which is unchanged.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from consortium_node.backup.format import BackupError
from consortium_node.backup.s3 import S3Store, StoreError
from consortium_node.backup.source import BackupSource, DirectorySource
from consortium_node.backup.verify import verify_backup
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_sha256,
    load_certificate,
    load_member_certificate,
)
from consortium_node.identity.endorsement import endorse, history_record
from consortium_node.identity.errors import IdentityError
from consortium_node.ledger import LedgerSecrets, TxId
from consortium_node.ledger.errors import LedgerError
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY
from consortium_node.server.backup import store_settings
from consortium_node.server.config import RecoveryConfig
from consortium_node.server.errors import NodeStartError
from consortium_node.server.genesis import T_LISTS, T_MEMBERS, T_NODES
from consortium_node.server.service_state import (
    RECOVERING,
    SERVICE_KEY,
    T_PREVIOUS_SERVICES,
    T_SERVICE,
    recovering_row,
    status_of,
)
from consortium_node.server.start_steps import (
    check_own_attestation,
    open_ledger,
    seal_service,
    start_views,
    trust_self,
)

if TYPE_CHECKING:
    from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.node")

# Sealed beside the service identity while no ledger secret is held: a restart in any mode
# (the operator renders mode ``join`` once the new service certificate is published) resumes
# the recovery instead of trying to join itself.
SEALED_RECOVERING = "recovering"


def open_source(settings: RecoveryConfig) -> tuple[BackupSource, str]:
    """The backup to recover from and where it is (for messages)."""
    if settings.directory is not None:
        try:
            directory = DirectorySource(settings.directory)
        except FileNotFoundError as exc:
            raise NodeStartError(f"recovery.source.directory: {exc}") from exc
        return directory, directory.location
    assert settings.bucket is not None  # the configuration names exactly one
    try:
        s3 = store_settings(settings.bucket)
        return S3Store(s3), s3.location
    except (StoreError, ValueError) as exc:
        raise NodeStartError(f"recovery.source.bucket: {exc}") from exc


def _set_aside_interrupted(ledger_dir: Path) -> None:
    if ledger_dir.exists() and any(ledger_dir.iterdir()):
        aside = ledger_dir.with_name(f"ledger.interrupted-recovery-{utcnow():%Y%m%dT%H%M%SZ}")
        ledger_dir.rename(aside)
        log.warning("a recovery was interrupted before it completed; its copy is kept at %s", aside)


def recover(node: Node) -> None:
    """Start as the recovery node (module docstring, steps 1 to 3)."""
    config = node.config
    settings = config.recovery
    if settings is None:
        raise NodeStartError("recovery: mode recover needs a recovery section")
    try:
        previous = load_certificate(
            settings.previous_service_certificate.read_bytes(), "previous service certificate"
        )
    except (OSError, IdentityError) as exc:
        raise NodeStartError(f"recovery.previous_service_certificate: {exc}") from exc
    source, location = open_source(settings)
    _set_aside_interrupted(node.data_dir / "ledger")
    started = utcnow()
    ledger_dir = node.data_dir / "ledger"
    node.ledger = open_ledger(node, LedgerSecrets(None))
    try:
        last = _copy_and_start(node, previous, source, location, started)
    except BaseException:
        # Nothing is sealed yet: the partial copy (of the bucket, which is unchanged) goes, so
        # a node failing again and again (wrong credentials, say) leaves nothing behind.
        node.ledger.close()
        shutil.rmtree(ledger_dir, ignore_errors=True)
        raise
    seal_service(node)  # only once the recovery entry is durable (module docstring)
    node.sealed.put(SEALED_RECOVERING, b"WaitingForRecoveryShares")
    log.info(
        "recovery: new service certificate sha256 %s replaces %s (history up to %s); "
        "WaitingForRecoveryShares",
        node.service.certificate_sha256,
        certificate_sha256(previous),
        last,
    )


def _copy_and_start(
    node: Node, previous: x509.Certificate, source: BackupSource, location: str, started: datetime
) -> TxId:
    """Steps 1 and 2 of the module docstring: the backup verified and copied, the new
    identity and the recovery entry written (durable); the last recovered txid."""
    ledger, config, settings = node.ledger, node.config, node.config.recovery
    assert settings is not None
    clock = time.monotonic()

    def copy(payloads: list[bytes]) -> None:
        ledger.append_entries(payloads)
        ledger.advance_commit(ledger.sync())

    log.info("recovery: verifying the backup at %s with the previous service certificate",
             location)  # fmt: skip
    try:
        verified = verify_backup(source, previous, manifest_key=settings.manifest, on_segment=copy)
    except BackupError as exc:
        raise NodeStartError(f"recovery: the backup at {location} does not verify: {exc}") from exc
    except (StoreError, LedgerError) as exc:
        raise NodeStartError(f"recovery: cannot read the backup at {location}: {exc}") from exc
    if verified.consortium != config.consortium:
        raise NodeStartError(
            f"recovery: the backup at {location} is consortium {verified.consortium!r}, "
            f"this node is configured for {config.consortium!r}"
        )
    last = verified.last_txid
    log.info(
        "recovery: %d entries (%d signatures) up to %s verified and copied in %.1f s",
        verified.entries, verified.signatures, last, time.monotonic() - clock,
    )  # fmt: skip
    _check_recoverable(node)
    node.service = ServiceIdentity.create(config.consortium)
    start_views(node)
    check_own_attestation(node, node.policy_value())
    term = last.term + 1
    node.raft_state.save(term, node.node_id)
    ledger.term = term
    also = _recovery_writes(node, previous, last, f"{location}{verified.manifest_key}", started)
    trust_self(node, _next_list_version(node), also)
    return last


def _check_recoverable(node: Node) -> None:
    """The recovered ledger must be able to come back: a recovery record and a policy."""
    if status_of(node.public_value(T_SERVICE, SERVICE_KEY)) == RECOVERING:
        raise NodeStartError(
            "recovery: the backup ends while that service was itself recovering (never "
            "opened); recover from a backup of an open service"
        )
    if node.public_value(T_RECOVERY, RECORD_KEY) is None:
        raise NodeStartError(
            "recovery: the backed-up ledger holds no recovery record (no governor had a "
            "recovery key): its private entries can never be decrypted; nothing was started"
        )


def _operator_members(node: Node) -> dict[str, dict[str, Any] | None]:
    """The ``operator`` member of the configuration replaces the recovered ledger's: the old
    one's key was in the lost namespace's Secret. Governors and users come from the ledger
    alone (the configuration's are ignored); the operator member can propose and ask for
    maintenance, never vote, and the governors see the change in the recovery entry
    (``GET /recovery``) before they vote to open the service."""
    configured = [m for m in node.config.members if m.role == "operator"]
    if not configured:
        return {}
    out: dict[str, dict[str, Any] | None] = {
        member_id: None for member_id, m in node.members().items() if m.role == "operator"
    }
    for m in configured:
        certificate = load_member_certificate(m.certificate_pem, "members[operator].certificate")
        out[certificate.member_id] = {
            "certificate": certificate.pem,
            "role": "operator",
            "status": "Active",
        }
    return out


def _next_list_version(node: Node) -> int:
    versions = [int(v) for v in node.ledger.public_keys(T_LISTS)]
    return max(versions, default=0) + 1


def _recovery_writes(
    node: Node, previous: x509.Certificate, last: TxId, source: str, started: datetime
) -> dict[str, dict[str, Any]]:
    """The recovery entry's own writes (module docstring, step 2); ``trust_self`` adds this
    node and the new list."""
    consortium, service = node.config.consortium, node.service
    envelope = endorse(service, consortium, previous, str(last))
    retired = {}
    for node_id in node.ledger.public_keys(T_NODES):
        row = node.public_value(T_NODES, node_id)
        if isinstance(row, dict) and row.get("status") != "Retired":
            retired[node_id] = {**row, "status": "Retired"}
    members = _operator_members(node)
    return {
        T_MEMBERS: members,
        T_SERVICE: {
            SERVICE_KEY: recovering_row(
                service.certificate_sha256,
                certificate_sha256(previous),
                str(last),
                source,
                rfc3339(started),
            )
        },
        T_PREVIOUS_SERVICES: {
            certificate_sha256(previous): history_record(previous, str(last), envelope)
        },
        T_NODES: retired,
    }
