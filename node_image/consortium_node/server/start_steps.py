"""The steps start-up paths share (``startup.py`` genesis, join, restart; ``recover.py``):
open the ledger, seal the service identity, start the membership views, use a node certificate,
check this node's own attestation, and trust itself in a new trusted-node list.

Why a module of its own: genesis and a disaster recovery both create a service identity and
trust the very node that made it, and each path must do it the same way.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509

from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_pem, issue_node_certificate
from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_node.identity.trusted_list_store import TrustedListStore
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, LedgerSecrets, TxId, WriteSet
from consortium_node.server.certificates import NodeCertificate, certificate_names
from consortium_node.server.errors import NodeStartError
from consortium_node.server.genesis import T_LISTS, T_NODES, policy_from_value
from consortium_node.server.membership import Membership

if TYPE_CHECKING:
    from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.node")


def open_ledger(node: Node, secrets: bytes | LedgerSecrets) -> Ledger:
    """The node's ledger; a storage fault in it is set aside (kept) and the entries it held
    are replicated again by the leader (``Ledger.open(repair=True)``)."""
    settings = node.config.ledger
    service = getattr(node, "service", None)
    ledger = Ledger.open(
        node.data_dir / "ledger",
        ledger_secret=secrets,
        service_certificate=service.certificate if service is not None else None,
        config=LedgerConfig(
            signature_interval_tx=settings.signature_interval_tx,
            signature_interval_ms=settings.signature_interval_ms,
            chunk_max_bytes=settings.chunk_max_bytes,
            snapshot_interval=settings.snapshot_interval,
            snapshot_writes_percent=settings.snapshot_writes_percent,
        ),
        repair=True,
    )
    missing = ledger.missing_committed
    if ledger.damage is not None:
        log.error(
            "ledger storage fault: %s; the log now ends at %d%s; this node gets the rest from "
            "the primary and neither leads nor votes for a log without it until then",
            ledger.damage.describe(),
            ledger.last_index,
            f", before committed entries up to {missing.term}.{missing.index}" if missing else "",
        )
    return ledger


def seal_service(node: Node) -> None:
    node.sealed.put(
        "service-identity",
        canonical_json(
            {
                "key": keys.private_key_pem(node.service.key).decode("ascii"),
                "certificate": node.service.certificate_pem,
            }
        ),
    )


def start_views(node: Node) -> None:
    store = TrustedListStore(
        node.data_dir / "trusted-list" / "current.cose",
        node.service.certificate,
        node.config.consortium,
    )
    node.membership = Membership(node.ledger, store)
    recovered = recovered_through(node)
    if recovered:  # the old identity's history: no snapshot there would verify now
        node.ledger.no_snapshots_before(recovered + 1)


def recovered_through(node: Node) -> int:
    """The last index written under a service identity this one replaced (0: none), from the
    history records in the log (``service_state``)."""
    last = 0
    for record in node.service_history():
        try:
            last = max(last, TxId.parse(record["last_txid"]).index)
        except (TypeError, KeyError, ValueError):  # not a record this code wrote: no floor
            continue
    return last


def use_certificate(node: Node, cert: x509.Certificate) -> None:
    node.certificate = NodeCertificate(
        node.node_key, node.service.certificate, node.data_dir / "node_cert.pem", cert
    )


def check_own_attestation(node: Node, policy: dict[str, Any]) -> None:
    """Genesis: refuse to write anything if the configured policy rejects this very node.

    A wrong ``measurements`` list would otherwise leave a sealed identity and a ledger
    that no node (not even this one) can ever be trusted in.
    """
    nonce = os.urandom(32)
    public_der = keys.public_key_der(node.node_key)
    quote = node.enclave.quote(public_der, nonce).to_json()
    result = node.verifiers.verify(
        quote, public_key_der=public_der, nonce=nonce, policy=policy_from_value(policy)
    )
    if not result.ok:
        mine = "" if node.measurement in result.detail else f" (measures {node.measurement})"
        raise NodeStartError(
            "this node's own attestation is refused by the configured policy: "
            f"{result.reason.value if result.reason else '?'}: {result.detail}{mine}"
        )


def trust_self(node: Node, version: int = 1, also: WriteSet | None = None) -> None:
    """Genesis (list version 1) and recovery (the recovered list's version + 1, with the
    recovery's own writes ``also`` in the same entry): verify our own quote like a joiner's
    and issue a trusted-node list naming only this node."""
    nonce = os.urandom(32)
    quote = node.enclave.quote(keys.public_key_der(node.node_key), nonce).to_json()
    result = node.verify_quote(quote, keys.public_key_der(node.node_key), nonce)
    if not result.ok:
        raise NodeStartError(
            "this node's own attestation is refused by the ledger's policy: "
            f"{result.reason.value if result.reason else '?'}: {result.detail}"
        )
    now = utcnow()
    expires = now + timedelta(seconds=node.policy_value()["validity_seconds"])
    entry = NodeEntry(
        node_id=node.node_id,
        name=node.config.name,
        address=node.config.address,
        public_key_pem=keys.public_key_pem(node.node_key),
        measurement=node.measurement,
        host_data=node.host_data,
        status=NodeStatus.TRUSTED,
        attested_at=rfc3339(now),
        attestation_expires_at=rfc3339(expires),
    )
    cert = issue_node_certificate(
        node.service,
        node.node_key.public_key(),
        subject_alt_names=certificate_names(node.config),
        not_after=expires,
    )
    use_certificate(node, cert)
    lst = TrustedNodeList(
        consortium=node.config.consortium,
        version=version,
        issued_at=rfc3339(now),
        service_certificate_sha256=node.service.certificate_sha256,
        allowed_measurements=tuple(node.policy_value()["measurements"]),
        nodes=(entry,),
    )
    envelope = node.sign_list(lst)
    row = {
        "name": entry.name,
        "address": entry.address,
        "status": "Trusted",
        "measurement": entry.measurement,
        "host_data": entry.host_data,
        "attested_at": entry.attested_at,
        "attestation_expires_at": entry.attestation_expires_at,
        "quote": quote,
        "certificate": certificate_pem(cert),
        # kept for renewals, as a joiner's requested names are
        "subject_alt_names": certificate_names(node.config),
    }
    listed = {
        "cose": base64.b64encode(envelope).decode("ascii"),
        "sha256": hashlib.sha256(envelope).hexdigest(),
        "issued_at": lst.issued_at,
    }
    writes: dict[str, dict[str, Any]] = {table: dict(rows) for table, rows in (also or {}).items()}
    writes.setdefault(T_NODES, {})[node.node_id] = row
    writes.setdefault(T_LISTS, {})[str(version)] = listed
    node.ledger.append([writes], EntryKind.PUBLIC)
    node.ledger.append_signature(node.certificate.signer)
    node.ledger.sync_and_commit()
    node.membership.adopt_committed()
