"""A consortium node: the enclave's state and the operations the API exposes.

``Node.open`` is the whole start-up: provision the (virtual) chip, unseal or create the node
key, then either **genesis** (create the service identity and ledger secret inside the enclave,
write the genesis transaction, trust itself, issue trusted-node list version 1) or **restart**
(unseal, replay the ledger, re-attest itself and issue the next list version). The genesis quote
binds the service certificate: its nonce is the SHA-256 of the service certificate DER.

Only this module turns configuration into trust decisions; the HTTP layer only calls it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from consortium_node import __version__
from consortium_node.attestation import (
    InsecureVirtualVerifier,
    Policy,
    VerifierRegistry,
    VirtualEnclave,
    VirtualPlatform,
    host_data_for,
    measure_installed,
    parse_faults,
)
from consortium_node.common.canonical import canonical_json
from consortium_node.common.files import write_atomic
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    MemberCertificate,
    ServiceIdentity,
    certificate_der,
    certificate_pem,
    issue_node_certificate,
    load_certificate,
    load_member_certificate,
)
from consortium_node.identity.trusted_list import (
    NodeEntry,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
    verify_trusted_list,
)
from consortium_node.identity.trusted_list_store import TrustedListStore
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner, TxId
from consortium_node.server.config import NodeConfig
from consortium_node.server.metrics import NodeMetrics
from consortium_node.server.sealed import SealedStore

log = logging.getLogger("consortium_node.node")

T_INFO = "public:consortium.info"
T_MEMBERS = "public:consortium.members"
T_CONSTITUTION = "public:consortium.constitution"
T_ATTESTATION = "public:consortium.attestation"
T_NODES = "public:consortium.nodes"
T_LISTS = "public:consortium.trusted_lists"


class NodeStartError(RuntimeError):
    """The node cannot start; the message says what to fix."""


@dataclass(frozen=True)
class Member:
    member_id: str
    role: str
    status: str
    certificate_pem: str


def _policy_from_ledger(value: dict[str, Any]) -> Policy:
    return Policy(
        allowed_measurements=frozenset(value["measurements"]),
        allowed_host_data=frozenset(value["host_data"]),
        max_age=timedelta(seconds=value["max_quote_age_seconds"]),
        min_tcb_version=value["min_tcb_version"],
        revoked_chip_ids=frozenset(value["revoked_chip_ids"]),
    )


class Node:
    """The running node. Construct with :meth:`open`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.started_at = utcnow()
        platform = VirtualPlatform.load(
            _read(config.platform.root_key, "platform.root_key"),
            _read(config.platform.root_certificate, "platform.root_certificate"),
        )
        self.platform = platform
        self.measurement = measure_installed()
        self.host_data = host_data_for(config.consortium, config.mode)
        faults = parse_faults(config.insecure_test_faults)
        self.enclave = VirtualEnclave(
            platform,
            config.platform.chip_id,
            self.measurement,
            self.host_data,
            tcb_version=config.platform.tcb_version,
            faults=faults,
        )
        self.verifiers = VerifierRegistry()
        self.verifiers.register(InsecureVirtualVerifier(platform.root_certificate_pem))
        self.sealed = SealedStore(self.data_dir / "sealed", self.enclave)
        self.node_key = self._node_key()
        self.node_id = keys.node_id_of(self.node_key)
        self.metrics = NodeMetrics(
            consortium=config.consortium,
            node_id=self.node_id,
            name=config.name,
            version=__version__,
        )
        self.role = "pending"
        # Set by genesis/restart:
        self.service: ServiceIdentity
        self.ledger: Ledger
        self.lists: TrustedListStore
        self.signer: NodeKeySigner
        self.node_certificate: x509.Certificate

    # ----------------------------------------------------------------- start-up
    @classmethod
    def open(cls, config: NodeConfig) -> Node:
        """Start a node from its configuration and data directory (genesis or restart)."""
        node = cls(config)
        if node.sealed.exists("service-identity"):
            node._restart()
        elif config.mode == "genesis":
            node._genesis()
        else:
            raise NodeStartError(f"mode {config.mode!r}: joining arrives with replication")
        # Public: how a local user obtains the service certificate (CCF writes it the same way).
        write_atomic(
            node.data_dir / "service_cert.pem",
            node.service.certificate_pem.encode("ascii"),
            mode=0o644,
        )
        node.role = "primary"
        node.metrics.set_role(node.role)
        node._refresh_metrics()
        return node

    def _node_key(self) -> keys.PrivateKey:
        if self.sealed.exists("node-key"):
            return keys.load_private_key(self.sealed.get("node-key"))
        key = keys.generate_key("p256")
        self.sealed.put("node-key", keys.private_key_pem(key))
        return key

    def _open_ledger(self, secret: bytes) -> Ledger:
        settings = self.config.ledger
        return Ledger.open(
            self.data_dir / "ledger",
            ledger_secret=secret,
            config=LedgerConfig(
                signature_interval_tx=settings.signature_interval_tx,
                signature_interval_ms=settings.signature_interval_ms,
                chunk_max_bytes=settings.chunk_max_bytes,
            ),
        )

    def _genesis(self) -> None:
        config = self.config
        ledger_dir = self.data_dir / "ledger"
        if ledger_dir.exists() and any(ledger_dir.glob("*.chunk")):
            self._set_aside_interrupted_genesis(ledger_dir)
        members = [
            load_member_certificate(m.certificate_pem, f"members[{i}].certificate")
            for i, m in enumerate(config.members)
        ]
        self.service = ServiceIdentity.create(config.consortium)
        secret = os.urandom(32)
        self.sealed.put("ledger-secret", secret)
        self.ledger = self._open_ledger(secret)
        self._init_lists()
        genesis_nonce = hashlib.sha256(certificate_der(self.service.certificate)).digest()
        genesis_quote = self.enclave.quote(keys.public_key_der(self.node_key), genesis_nonce)
        policy = {
            "measurements": sorted(config.attestation.measurements),
            "host_data": sorted(
                config.attestation.host_data
                or {host_data_for(config.consortium, m) for m in ("genesis", "join")}
            ),
            "validity_seconds": int(config.attestation.validity.total_seconds()),
            "renew_before_seconds": int(config.attestation.renew_before.total_seconds()),
            "max_quote_age_seconds": int(config.attestation.max_quote_age.total_seconds()),
            "min_tcb_version": config.platform.min_tcb_version,
            "revoked_chip_ids": sorted(config.platform.revoked_chip_ids),
        }
        writes: dict[str, dict[str, Any]] = {
            T_INFO: {
                "service": {
                    "consortium": config.consortium,
                    "service_certificate": self.service.certificate_pem,
                    "service_certificate_sha256": self.service.certificate_sha256,
                    "created_at": rfc3339(utcnow()),
                    "genesis_node_id": self.node_id,
                    "genesis_quote": genesis_quote.to_json(),
                    "platform": self.enclave.platform_name,
                }
            },
            T_MEMBERS: {
                m.member_id: {"certificate": m.pem, "role": cfg.role, "status": "Active"}
                for m, cfg in zip(members, config.members, strict=True)
            },
            T_CONSTITUTION: {"constitution": config.constitution.to_json()},
            T_ATTESTATION: {"policy": policy},
        }
        self.ledger.append([writes], EntryKind.PUBLIC)
        self.ledger.sync()
        # The service identity is sealed only once the genesis transaction is durable:
        # a crash before this point leaves no half-born service (restart redoes genesis).
        self.sealed.put(
            "service-identity",
            canonical_json(
                {
                    "key": keys.private_key_pem(self.service.key).decode("ascii"),
                    "certificate": self.service.certificate_pem,
                }
            ),
        )
        self._attest_self(previous=None)
        log.info(
            "genesis complete: consortium %s, service certificate sha256 %s",
            config.consortium,
            self.service.certificate_sha256,
        )

    def _set_aside_interrupted_genesis(self, ledger_dir: Path) -> None:
        """Move aside a ledger left by a genesis that crashed before sealing its service key.

        Such a ledger holds at most the genesis transaction, which nobody could ever extend or
        verify (its service key was lost) and nobody was told about. Anything longer means the
        sealed identity was removed by hand: refuse, rather than start a second history.
        """
        if not self.sealed.exists("ledger-secret"):
            raise NodeStartError(f"{ledger_dir} holds a ledger but no sealed secrets; refusing")
        with self._open_ledger(self.sealed.get("ledger-secret")) as orphan:
            entries = orphan.last_index
        if entries > 1:
            raise NodeStartError(
                f"{ledger_dir} holds {entries} transactions but no sealed service identity; "
                "refusing to start a second history over it (restore the sealed/ directory)"
            )
        aside = ledger_dir.with_name(f"ledger.interrupted-genesis-{utcnow():%Y%m%dT%H%M%SZ}")
        ledger_dir.rename(aside)
        log.warning("genesis was interrupted before completing; its ledger is kept at %s", aside)

    def _restart(self) -> None:
        blob = json.loads(self.sealed.get("service-identity"))
        self.service = ServiceIdentity.from_parts(
            keys.load_private_key(blob["key"].encode("ascii")),
            load_certificate(blob["certificate"], "sealed service certificate"),
        )
        self.ledger = self._open_ledger(self.sealed.get("ledger-secret"))
        if self.ledger.get(T_INFO, "service") is None:
            raise NodeStartError(
                "ledger has no genesis transaction but a service identity "
                "is sealed: the ledger directory was replaced or emptied"
            )
        self._init_lists()
        latest = self._latest_list_in_ledger()
        if latest is not None:
            self.lists.accept(latest)
        self._attest_self(previous=self.lists.current)
        log.info(
            "restarted: replayed to %s, trusted list version %s",
            self.ledger.commit_txid,
            self.lists.current.version if self.lists.current else None,
        )

    def _init_lists(self) -> None:
        self.lists = TrustedListStore(
            self.data_dir / "trusted-list" / "current.cose",
            self.service.certificate,
            self.config.consortium,
        )

    def _latest_list_in_ledger(self) -> bytes | None:
        versions = list(self.ledger.kv.keys(T_LISTS))
        if not versions:
            return None
        entry = self.ledger.get(T_LISTS, max(versions, key=int))
        assert entry is not None
        return base64.b64decode(entry[0]["cose"])

    # ----------------------------------------------------------------- attestation
    @property
    def policy(self) -> Policy:
        value = self.ledger.get(T_ATTESTATION, "policy")
        assert value is not None
        return _policy_from_ledger(value[0])

    def _attest_self(self, previous: TrustedNodeList | None) -> None:
        """Verify our own fresh quote like any joiner's, then issue the next list version."""
        nonce = os.urandom(32)
        quote = self.enclave.quote(keys.public_key_der(self.node_key), nonce)
        result = self.verify_quote(quote.to_json(), keys.public_key_der(self.node_key), nonce)
        if not result.ok:
            raise NodeStartError(
                f"this node's own attestation is refused by the ledger's policy: "
                f"{result.reason.value if result.reason else '?'}: {result.detail}"
            )
        policy_value = self.ledger.get(T_ATTESTATION, "policy")
        assert policy_value is not None
        validity = timedelta(seconds=policy_value[0]["validity_seconds"])
        now = utcnow()
        entry = NodeEntry(
            node_id=self.node_id,
            name=self.config.name,
            address=self.config.address,
            public_key_pem=keys.public_key_pem(self.node_key),
            measurement=self.measurement,
            host_data=self.host_data,
            status=NodeStatus.TRUSTED,
            attested_at=rfc3339(now),
            attestation_expires_at=rfc3339(now + validity),
        )
        others = [n for n in (previous.nodes if previous else ()) if n.node_id != self.node_id]
        self.node_certificate = issue_node_certificate(
            self.service,
            self.node_key.public_key(),
            subject_alt_names=self._san(),
            not_after=now + validity,
        )
        self.signer = NodeKeySigner(self.node_key, certificate_pem(self.node_certificate))
        self.issue_list(
            [*others, entry],
            extra_writes={
                T_NODES: {
                    self.node_id: {
                        "name": entry.name,
                        "address": entry.address,
                        "status": entry.status.value,
                        "measurement": entry.measurement,
                        "host_data": entry.host_data,
                        "attested_at": entry.attested_at,
                        "attestation_expires_at": entry.attestation_expires_at,
                        "quote": quote.to_json(),
                    }
                }
            },
        )

    def verify_quote(self, quote: dict[str, Any], public_key_der: bytes, nonce: bytes) -> Any:
        """Verify a quote against the ledger's policy; counts the result in metrics."""
        result = self.verifiers.verify(
            quote, public_key_der=public_key_der, nonce=nonce, policy=self.policy
        )
        self.metrics.verifications.labels(
            self.enclave.platform_name,
            "ok" if result.ok else "refused",
            result.reason.value if result.reason else "",
        ).inc()
        return result

    def issue_list(self, nodes: list[NodeEntry], extra_writes: dict[str, Any]) -> TrustedNodeList:
        """Sign the next trusted-node list version and record it as a public ledger entry."""
        current = self.lists.current
        policy_value = self.ledger.get(T_ATTESTATION, "policy")
        assert policy_value is not None
        lst = TrustedNodeList(
            consortium=self.config.consortium,
            version=(current.version + 1) if current else 1,
            issued_at=rfc3339(utcnow()),
            service_certificate_sha256=self.service.certificate_sha256,
            allowed_measurements=tuple(policy_value[0]["measurements"]),
            nodes=tuple(nodes),
        )
        envelope = sign_trusted_list(lst, self.service)
        verify_trusted_list(envelope, self.service.certificate, consortium=lst.consortium)
        writes = dict(extra_writes)
        writes[T_LISTS] = {
            str(lst.version): {
                "cose": base64.b64encode(envelope).decode("ascii"),
                "sha256": hashlib.sha256(envelope).hexdigest(),
                "issued_at": lst.issued_at,
            }
        }
        self.ledger.append([writes], EntryKind.PUBLIC)
        self.ledger.append_signature(self.signer)
        self.ledger.sync()
        accepted = self.lists.accept(envelope)
        self.metrics.observe_list(accepted, utcnow())
        log.info("issued trusted-node list version %d (%d nodes)", lst.version, len(nodes))
        return accepted

    def _san(self) -> list[str]:
        host = self.config.address.rsplit(":", 1)[0].strip("[]")
        names = [host, *self.config.subject_alt_names]
        if self.config.listen_host not in ("0.0.0.0", "::"):  # noqa: S104 - a comparison, not a bind
            names.append(self.config.listen_host)
        return list(dict.fromkeys(names))

    # ----------------------------------------------------------------- queries
    def members(self) -> dict[str, Member]:
        out = {}
        for member_id in list(self.ledger.kv.keys(T_MEMBERS)):
            value = self.ledger.get(T_MEMBERS, member_id)
            if value is not None and value[0] is not None:
                v = value[0]
                out[member_id] = Member(member_id, v["role"], v["status"], v["certificate"])
        return out

    def member_certificates(self) -> list[MemberCertificate]:
        return [load_member_certificate(m.certificate_pem) for m in self.members().values()]

    def authenticate(self, certificate_der: bytes | None) -> Member | None:
        """The Active member or user whose certificate the client presented, if any."""
        if not certificate_der:
            return None
        member = self.members().get(keys.member_id_of(certificate_der))
        return member if member is not None and member.status == "Active" else None

    def state(self) -> dict[str, Any]:
        lst = self.lists.current
        return {
            "node_id": self.node_id,
            "name": self.config.name,
            "consortium": self.config.consortium,
            "role": self.role,
            "status": self._own_status(lst),
            "platform": self.enclave.platform_name,
            "measurement": self.measurement,
            "host_data": self.host_data,
            "version": __version__,
            "service_certificate_sha256": self.service.certificate_sha256,
            "trusted_list_version": lst.version if lst else None,
            "term": self.ledger.term,
            "commit_index": self.ledger.commit_index,
            "commit_txid": str(self.ledger.commit_txid) if self.ledger.commit_index else None,
            "last_signed_index": self.ledger.last_signed_index,
            "started_at": rfc3339(self.started_at),
        }

    def _own_status(self, lst: TrustedNodeList | None) -> str:
        own = lst.node(self.node_id) if lst else None
        return own.status.value if own else "Unknown"

    def network(self) -> dict[str, Any]:
        lst = self.lists.current
        return {
            "consortium": self.config.consortium,
            "service_certificate": self.service.certificate_pem,
            "service_certificate_sha256": self.service.certificate_sha256,
            "primary": {"node_id": self.node_id, "address": self.config.address},
            "trusted_list_version": lst.version if lst else None,
            "nodes": [_node_json(n) for n in (lst.nodes if lst else ())],
        }

    def quote(self, nonce: bytes) -> dict[str, Any]:
        quote = self.enclave.quote(keys.public_key_der(self.node_key), nonce)
        return {
            "node_id": self.node_id,
            "public_key": keys.public_key_pem(self.node_key),
            "quote": quote.to_json(),
        }

    def commit(self) -> dict[str, Any]:
        return {
            "term": self.ledger.term,
            "commit_index": self.ledger.commit_index,
            "txid": str(self.ledger.commit_txid) if self.ledger.commit_index else None,
        }

    def _refresh_metrics(self) -> None:
        self.metrics.commit_index.set(self.ledger.commit_index)
        self.metrics.term.set(self.ledger.term)
        self.metrics.observe_list(self.lists.current, utcnow())
        ledger_dir = self.data_dir / "ledger"
        self.metrics.ledger_bytes.set(sum(p.stat().st_size for p in ledger_dir.glob("*.chunk")))

    def render_metrics(self) -> bytes:
        self._refresh_metrics()
        return self.metrics.render()

    def transaction(self, txid: TxId) -> dict[str, Any]:
        view = self.ledger.read(txid)
        return {
            "txid": str(view.txid),
            "kind": view.kind.name.lower(),
            "writes": view.writes,
            "salt": view.salt,
            "leaf_components": view.leaf_components,
        }

    def close(self) -> None:
        self.ledger.close()


def _node_json(node: NodeEntry) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "name": node.name,
        "address": node.address,
        "status": node.status.value,
        "measurement": node.measurement,
        "attested_at": node.attested_at,
        "attestation_expires_at": node.attestation_expires_at,
    }


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NodeStartError(f"{field}: cannot read {path}: {exc}") from exc
