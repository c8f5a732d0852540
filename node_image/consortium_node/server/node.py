"""A consortium node: the enclave's state and the operations the API exposes.

``Node.open`` is the whole start-up: provision the (virtual) chip, unseal or create the node
key, then one of

* **genesis**: create the service identity and ledger secret inside the enclave, write the
  genesis transaction, trust itself and issue trusted-node list version 1;
* **join**: attest to the primary and receive the secrets wrapped to this node's key
  (``joiner``), then catch up through Raft;
* **restart**: unseal, replay the ledger; consensus tells what is committed.

Only this module turns configuration and ledger state into trust decisions; the HTTP layer and
the primary's duties call it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node import __version__
from consortium_node.attestation import (
    InsecureVirtualVerifier,
    Policy,
    VerificationResult,
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
    ServiceIdentity,
    certificate_der,
    certificate_pem,
    issue_node_certificate,
    load_certificate,
    load_member_certificate,
    verify_node_certificate,
)
from consortium_node.identity.trusted_list import (
    NodeEntry,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
    verify_trusted_list,
)
from consortium_node.identity.trusted_list_store import TrustedListStore
from consortium_node.identity.wrap import unwrap
from consortium_node.ledger import (
    EntryKind,
    Ledger,
    LedgerConfig,
    LedgerSecrets,
    NodeKeySigner,
    TxId,
)
from consortium_node.replication.state import PersistentState
from consortium_node.server import joiner
from consortium_node.server.config import NodeConfig
from consortium_node.server.genesis import (
    T_ATTESTATION,
    T_CONSTITUTION,
    T_INFO,
    T_LISTS,
    T_MEMBERS,
    T_NODES,
    attestation_policy,
    genesis_writes,
)
from consortium_node.server.join_secrets import join_context
from consortium_node.server.ledger_secrets import SecretVault, decode_later
from consortium_node.server.membership import Membership
from consortium_node.server.metrics import NodeMetrics
from consortium_node.server.sealed import SealedStore, SealedStoreError

log = logging.getLogger("consortium_node.node")


class NodeStartError(RuntimeError):
    """The node cannot start; the message says what to fix."""


@dataclass(frozen=True)
class Member:
    member_id: str
    role: str
    status: str
    certificate_pem: str


def policy_from_value(value: dict[str, Any]) -> Policy:
    return Policy(
        allowed_measurements=frozenset(value["measurements"]),
        allowed_host_data=frozenset(value["host_data"]),
        max_age=timedelta(seconds=value["max_quote_age_seconds"]),
        min_tcb_version=value["min_tcb_version"],
        revoked_chip_ids=frozenset(value["revoked_chip_ids"]),
    )


def set_aside(data_dir: Path, tag: str) -> Path:
    """Move everything in ``data_dir`` into ``retired-<UTC stamp>-<tag>/`` (never deleted:
    no data is lost) so the node can start with a fresh identity."""
    aside = data_dir / f"retired-{utcnow():%Y%m%dT%H%M%SZ}-{tag}"
    aside.mkdir(parents=True)
    for child in list(data_dir.iterdir()):
        if child != aside and not child.name.startswith("retired-"):
            child.rename(aside / child.name)
    return aside


class Node:
    """The running node. Construct with :meth:`open`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.started_at = utcnow()
        self.platform = VirtualPlatform.load(
            _read(config.platform.root_key, "platform.root_key"),
            _read(config.platform.root_certificate, "platform.root_certificate"),
        )
        self.measurement = measure_installed()
        self.host_data = host_data_for(config.consortium, config.mode)
        self.enclave = VirtualEnclave(
            self.platform,
            config.platform.chip_id,
            self.measurement,
            self.host_data,
            tcb_version=config.platform.tcb_version,
            faults=parse_faults(config.insecure_test_faults),
        )
        self.verifiers = VerifierRegistry()
        self.verifiers.register(InsecureVirtualVerifier(self.platform.root_certificate_pem))
        self.sealed = SealedStore(self.data_dir / "sealed", self.enclave)
        self.node_key = self._node_key()
        self.node_id = keys.node_id_of(self.node_key)
        assert isinstance(self.node_key, ec.EllipticCurvePrivateKey)
        self.vault = SecretVault(self.sealed, self.node_key, config.consortium)
        self.raft_state = PersistentState(self.data_dir / "raft-state.json")
        self.metrics = NodeMetrics(
            consortium=config.consortium,
            node_id=self.node_id,
            name=config.name,
            version=__version__,
        )
        self.role = "backup"
        self._counted = 0
        self.on_certificate_change: Callable[[], None] | None = None
        self.on_new_members: Callable[[list[str]], None] | None = None
        self._announced_members: set[str] = set()
        # Set by genesis / join / restart:
        self.service: ServiceIdentity
        self.ledger: Ledger
        self.membership: Membership
        self.signer: NodeKeySigner
        self.node_certificate: x509.Certificate

    # ----------------------------------------------------------------- start-up
    @classmethod
    def open(cls, config: NodeConfig) -> Node:
        """Start a node from its configuration and data directory."""
        try:
            node = cls(config)
        except SealedStoreError as exc:
            # Sealed by other code (a code upgrade: sealing keys derive from the measurement)
            # or another chip. This code can never use that identity; keep it and join afresh
            # (never as a second genesis: that would be a second network).
            if config.mode == "genesis":
                raise NodeStartError(
                    f"{exc}; a genesis node will not start a second network "
                    "over it: start this node as a joiner"
                ) from exc
            aside = set_aside(config.data_dir, "sealed-elsewhere")
            log.warning("%s; the data is kept at %s and the node starts afresh", exc, aside)
            node = cls(config)
        if node.sealed.exists("service-identity") and node._retired_by_published_list():
            node._set_aside_retired_identity()
            node = cls(config)
        if node.sealed.exists("service-identity"):
            node._restart()
        elif config.mode == "genesis":
            node._genesis()
        else:
            node._join()
        # Public: how a local user obtains the service certificate (CCF writes it the same way).
        write_atomic(
            node.data_dir / "service_cert.pem",
            node.service.certificate_pem.encode("ascii"),
            mode=0o644,
        )
        node.refresh_metrics()
        return node

    def _retired_by_published_list(self) -> bool:
        """Does the mounted, verified trusted-node list say this node was Retired?

        A Retired node can never rejoin with its old identity; the operator replaces its pod
        and the new pod must start fresh. The list is verified with the sealed service
        certificate, so nobody but the service can make a node discard its identity.
        """
        path = self.config.trusted_list_path
        if path is None or not path.is_file():
            return False
        try:
            blob = json.loads(self.sealed.get("service-identity"))
            lst = verify_trusted_list(
                path.read_bytes(), blob["certificate"], consortium=self.config.consortium
            )
        except Exception as exc:
            log.warning("cannot read the published trusted-node list %s: %s", path, exc)
            return False
        own = lst.node(self.node_id)
        return own is not None and own.status is NodeStatus.RETIRED

    def _set_aside_retired_identity(self) -> None:
        """Move this Retired node's data aside (kept, never deleted) and start afresh."""
        aside = set_aside(self.data_dir, self.node_id[:16])
        log.warning(
            "this node (%s) is Retired in the published trusted-node list; its data is kept "
            "at %s and the node starts with a fresh identity",
            self.node_id[:16],
            aside,
        )

    def _node_key(self) -> keys.PrivateKey:
        if self.sealed.exists("node-key"):
            return keys.load_private_key(self.sealed.get("node-key"))
        key = keys.generate_key("p256")
        self.sealed.put("node-key", keys.private_key_pem(key))
        return key

    def _open_ledger(self, secrets: bytes | LedgerSecrets) -> Ledger:
        settings = self.config.ledger
        return Ledger.open(
            self.data_dir / "ledger",
            ledger_secret=secrets,
            config=LedgerConfig(
                signature_interval_tx=settings.signature_interval_tx,
                signature_interval_ms=settings.signature_interval_ms,
                chunk_max_bytes=settings.chunk_max_bytes,
            ),
        )

    def _seal_service(self) -> None:
        self.sealed.put(
            "service-identity",
            canonical_json(
                {
                    "key": keys.private_key_pem(self.service.key).decode("ascii"),
                    "certificate": self.service.certificate_pem,
                }
            ),
        )

    def _start_views(self) -> None:
        store = TrustedListStore(
            self.data_dir / "trusted-list" / "current.cose",
            self.service.certificate,
            self.config.consortium,
        )
        self.membership = Membership(self.ledger, store)

    def _genesis(self) -> None:
        config = self.config
        ledger_dir = self.data_dir / "ledger"
        if ledger_dir.exists() and any(ledger_dir.glob("*.chunk")):
            self._set_aside_interrupted_genesis(ledger_dir)
        members = [
            load_member_certificate(m.certificate_pem, f"members[{i}].certificate")
            for i, m in enumerate(config.members)
        ]
        self._check_own_attestation(attestation_policy(config))
        self.service = ServiceIdentity.create(config.consortium)
        self.ledger = self._open_ledger(self.vault.create(os.urandom(32)))
        self._start_views()
        nonce = hashlib.sha256(certificate_der(self.service.certificate)).digest()
        quote = self.enclave.quote(keys.public_key_der(self.node_key), nonce).to_json()
        writes = genesis_writes(
            config,
            service=self.service,
            members=members,
            node_id=self.node_id,
            genesis_quote=quote,
            platform=self.enclave.platform_name,
        )
        self.raft_state.save(1, self.node_id)
        self.ledger.term = 1
        self.ledger.append([writes], EntryKind.PUBLIC)
        self.ledger.sync_and_commit()
        # Sealed only once genesis is durable; see _set_aside_interrupted_genesis.
        self._seal_service()
        self._trust_self()
        log.info(
            "genesis complete: consortium %s, service certificate sha256 %s",
            config.consortium,
            self.service.certificate_sha256,
        )

    def _check_own_attestation(self, policy: dict[str, Any]) -> None:
        """Genesis: refuse to write anything if the configured policy rejects this very node.

        A wrong ``measurements`` list would otherwise leave a sealed identity and a ledger
        that no node (not even this one) can ever be trusted in.
        """
        nonce = os.urandom(32)
        public_der = keys.public_key_der(self.node_key)
        quote = self.enclave.quote(public_der, nonce).to_json()
        result = self.verifiers.verify(
            quote, public_key_der=public_der, nonce=nonce, policy=policy_from_value(policy)
        )
        if not result.ok:
            mine = "" if self.measurement in result.detail else f" (measures {self.measurement})"
            raise NodeStartError(
                "this node's own attestation is refused by the configured policy: "
                f"{result.reason.value if result.reason else '?'}: {result.detail}{mine}"
            )

    def _trust_self(self) -> None:
        """Genesis only: verify our own quote like a joiner's and issue list version 1."""
        nonce = os.urandom(32)
        quote = self.enclave.quote(keys.public_key_der(self.node_key), nonce).to_json()
        result = self.verify_quote(quote, keys.public_key_der(self.node_key), nonce)
        if not result.ok:
            raise NodeStartError(
                "this node's own attestation is refused by the ledger's policy: "
                f"{result.reason.value if result.reason else '?'}: {result.detail}"
            )
        now = utcnow()
        expires = now + timedelta(seconds=self.policy_value()["validity_seconds"])
        entry = NodeEntry(
            node_id=self.node_id,
            name=self.config.name,
            address=self.config.address,
            public_key_pem=keys.public_key_pem(self.node_key),
            measurement=self.measurement,
            host_data=self.host_data,
            status=NodeStatus.TRUSTED,
            attested_at=rfc3339(now),
            attestation_expires_at=rfc3339(expires),
        )
        cert = issue_node_certificate(
            self.service,
            self.node_key.public_key(),
            subject_alt_names=self.certificate_names(),
            not_after=expires,
        )
        self._use_certificate(cert)
        lst = TrustedNodeList(
            consortium=self.config.consortium,
            version=1,
            issued_at=rfc3339(now),
            service_certificate_sha256=self.service.certificate_sha256,
            allowed_measurements=tuple(self.policy_value()["measurements"]),
            nodes=(entry,),
        )
        envelope = self.sign_list(lst)
        self.ledger.append(
            [
                {
                    T_NODES: {
                        self.node_id: {
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
                            "subject_alt_names": self.certificate_names(),
                        }
                    },
                    T_LISTS: {
                        "1": {
                            "cose": base64.b64encode(envelope).decode("ascii"),
                            "sha256": hashlib.sha256(envelope).hexdigest(),
                            "issued_at": lst.issued_at,
                        }
                    },
                }
            ],
            EntryKind.PUBLIC,
        )
        self.ledger.append_signature(self.signer)
        self.ledger.sync_and_commit()
        self.membership.adopt_committed()

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

    def _join(self) -> None:
        settings = self.config.join
        if settings is None:
            raise NodeStartError(
                "join: mode join needs a join section (service_certificate, trusted_list)"
            )
        service_cert = load_certificate(
            _read(settings.service_certificate, "join.service_certificate")
        )
        answer = joiner.join(
            consortium=self.config.consortium,
            name=self.config.name,
            address=self.config.address,
            public_key_pem=keys.public_key_pem(self.node_key),
            quote_for=lambda nonce: self.enclave.quote(
                keys.public_key_der(self.node_key), nonce
            ).to_json(),
            service_certificate=service_cert,
            trusted_list_source=settings.trusted_list,
            retry_interval=settings.retry_interval,
            timeout=settings.timeout,
            subject_alt_names=self.config.subject_alt_names,
        )
        assert isinstance(self.node_key, ec.EllipticCurvePrivateKey)
        secrets = json.loads(
            unwrap(
                self.node_key,
                answer.wrapped_secrets,
                join_context(self.config.consortium, self.node_id),
            )
        )
        self.service = ServiceIdentity.from_parts(
            keys.load_private_key(secrets["service_key"].encode("ascii")),
            load_certificate(secrets["service_certificate"], "service certificate"),
        )
        if (
            self.service.certificate_sha256
            != hashlib.sha256(certificate_der(service_cert)).hexdigest()
        ):
            raise NodeStartError("join: the primary sent another service identity")
        # Every version the primary holds, so history from before this node joined reads too.
        keyring = self.vault.create(
            bytes.fromhex(secrets["ledger_secret"]), decode_later(secrets.get("ledger_secrets", {}))
        )
        self._seal_service()
        self.ledger = self._open_ledger(keyring)
        self._start_views()
        self.membership.store.accept(answer.trusted_list)
        self._use_certificate(load_certificate(answer.node_certificate, "node certificate"))
        log.info("joined consortium %s as %s", self.config.consortium, self.node_id[:16])

    def _restart(self) -> None:
        blob = json.loads(self.sealed.get("service-identity"))
        self.service = ServiceIdentity.from_parts(
            keys.load_private_key(blob["key"].encode("ascii")),
            load_certificate(blob["certificate"], "sealed service certificate"),
        )
        self.ledger = self._open_ledger(self.vault.load())
        self._start_views()
        record = self.node_record(self.node_id)
        pem = record.get("certificate") if record else None
        saved = self.data_dir / "node_cert.pem"
        if saved.exists():
            on_disk = load_certificate(saved.read_bytes(), "node_cert.pem")
            if (
                pem is None
                or on_disk.not_valid_after_utc > load_certificate(pem).not_valid_after_utc
            ):
                pem = certificate_pem(on_disk)
        if pem is None:
            raise NodeStartError("no node certificate for this node in the ledger or on disk")
        self._use_certificate(load_certificate(pem, "node certificate"))
        log.info(
            "restarted: %d entries replayed (term %d); waiting for consensus to commit",
            self.ledger.last_index,
            self.ledger.term_at(self.ledger.last_index),
        )

    def _use_certificate(self, cert: x509.Certificate) -> None:
        self.node_certificate = cert
        self.signer = NodeKeySigner(self.node_key, certificate_pem(cert))
        write_atomic(self.data_dir / "node_cert.pem", certificate_pem(cert).encode(), mode=0o644)

    def certificate_names(self) -> list[str]:
        """The names this node's certificate must carry, from its configuration: the host of
        its address, its ``subject_alt_names``, localhost and a specific listen address."""
        host = self.config.address.rsplit(":", 1)[0].strip("[]")
        names = [host, *self.config.subject_alt_names, "localhost"]
        if self.config.listen_host not in ("0.0.0.0", "::"):  # noqa: S104 - a comparison
            names.append(self.config.listen_host)
        return list(dict.fromkeys(names))

    # ----------------------------------------------------------------- ledger views
    def public_value(self, table: str, key: str) -> Any:
        """The newest value in this node's log (Raft uses the newest configuration too)."""
        found = self.ledger.public_get(table, key) or self.ledger.get(table, key)
        return found[0] if found else None

    def policy_value(self) -> dict[str, Any]:
        value = self.public_value(T_ATTESTATION, "policy")
        assert isinstance(value, dict), "no attestation policy in the ledger"
        return value

    def constitution(self) -> dict[str, Any]:
        value = self.public_value(T_CONSTITUTION, "constitution")
        return value if isinstance(value, dict) else {"auto_trust_nodes": True}

    def node_record(self, node_id: str) -> dict[str, Any] | None:
        value = self.public_value(T_NODES, node_id)
        return value if isinstance(value, dict) else None

    def sign_list(self, lst: TrustedNodeList) -> bytes:
        return sign_trusted_list(lst, self.service)

    def verify_quote(
        self, quote: dict[str, Any], public_key_der: bytes, nonce: bytes
    ) -> VerificationResult:
        """Verify a quote against the ledger's policy; counts the result in metrics."""
        result = self.verifiers.verify(
            quote,
            public_key_der=public_key_der,
            nonce=nonce,
            policy=policy_from_value(self.policy_value()),
        )
        self.metrics.verifications.labels(
            self.enclave.platform_name,
            "ok" if result.ok else "refused",
            result.reason.value if result.reason else "",
        ).inc()
        return result

    def on_commit(self, index: int) -> None:
        """After each commit: adopt a new committed list, pick up a renewed certificate."""
        self.metrics.committed.inc(max(0, index - self._counted))
        self._counted = max(self._counted, index)
        self.metrics.commit_index.set(index)
        adopted = self.membership.adopt_committed()
        if adopted is not None:
            self.metrics.observe_list(adopted, utcnow())
            own = adopted.node(self.node_id)
            log.info(
                "trusted-node list version %d committed; this node is %s",
                adopted.version,
                own.status.value if own else "not listed",
            )
        self.announce_members()
        record = self.ledger.get(T_NODES, self.node_id)
        pem = record[0].get("certificate") if record and isinstance(record[0], dict) else None
        if pem:
            self.adopt_certificate(pem, "renewed node certificate")

    def adopt_certificate(self, pem: str, what: str) -> bool:
        """Use a node certificate the service issued for this node's key, unless the one in use
        is newer (a refresh answer arrives before this node's log commits the record that holds
        it; the older committed record must not take it back). Reloads TLS when it changes."""
        cert = load_certificate(pem, what)
        current = self.node_certificate
        if pem == self.signer.certificate_pem or (
            cert.not_valid_after_utc,
            cert.not_valid_before_utc,
        ) < (current.not_valid_after_utc, current.not_valid_before_utc):
            return False
        if verify_node_certificate(cert, self.service.certificate) != self.node_id:
            raise NodeStartError(f"{what}: issued for another node's key")
        self._use_certificate(cert)
        log.info("%s: valid until %s", what, cert.not_valid_after_utc)
        if self.on_certificate_change:
            self.on_certificate_change()
        return True

    def announce_members(self) -> None:
        """Hand certificates of members not seen before to ``on_new_members`` (TLS trust)."""
        fresh = [m for m in self.members().values() if m.member_id not in self._announced_members]
        if fresh and self.on_new_members is not None:
            self.on_new_members([m.certificate_pem for m in fresh])
            self._announced_members.update(m.member_id for m in fresh)

    # ----------------------------------------------------------------- queries
    def members(self) -> dict[str, Member]:
        out = {}
        for member_id in list(self.ledger.public_keys(T_MEMBERS)):
            value = self.public_value(T_MEMBERS, member_id)
            if isinstance(value, dict):
                out[member_id] = Member(
                    member_id, value["role"], value["status"], value["certificate"]
                )
        return out

    def authenticate(self, certificate_der: bytes | None) -> Member | None:
        """The Active member or user whose certificate the client presented, if any."""
        if not certificate_der:
            return None
        member = self.members().get(keys.member_id_of(certificate_der))
        return member if member is not None and member.status == "Active" else None

    def own_status(self) -> str:
        lst = self.membership.current()
        own = lst.node(self.node_id) if lst else None
        return own.status.value if own else "Unknown"

    def state(self) -> dict[str, Any]:
        lst = self.membership.current()
        return {
            "node_id": self.node_id,
            "name": self.config.name,
            "consortium": self.config.consortium,
            "role": self.role,
            "status": self.own_status(),
            "platform": self.enclave.platform_name,
            "measurement": self.measurement,
            "host_data": self.host_data,
            "version": __version__,
            "service_certificate_sha256": self.service.certificate_sha256,
            "trusted_list_version": lst.version if lst else None,
            "term": self.raft_state.current_term,
            "last_index": self.ledger.last_index,
            "commit_index": self.ledger.commit_index,
            "commit_txid": str(self.ledger.commit_txid) if self.ledger.commit_index else None,
            "last_signed_index": self.ledger.last_signed_index,
            "node_certificate_expires_at": rfc3339(self.node_certificate.not_valid_after_utc),
            "started_at": rfc3339(self.started_at),
        }

    def _refresh_test_faults(self) -> None:
        """Test-only: re-read ``insecure_test_faults_file`` (comma-separated fault names).

        Lets an end-to-end test make one running node fail its next re-attestation. Off unless
        the configuration names the file; an unreadable or invalid file means no faults.
        """
        path = self.config.insecure_test_faults_file
        if path is None:
            return
        try:
            text = path.read_text()
        except OSError:
            text = ""
        try:
            faults = parse_faults(text.strip())
        except ValueError as exc:
            log.warning("ignoring %s: %s", path, exc)
            faults = frozenset()
        self.enclave.set_faults(faults | parse_faults(self.config.insecure_test_faults))

    def quote(self, nonce: bytes) -> dict[str, Any]:
        self._refresh_test_faults()
        quote = self.enclave.quote(keys.public_key_der(self.node_key), nonce)
        return {
            "node_id": self.node_id,
            "public_key": keys.public_key_pem(self.node_key),
            "quote": quote.to_json(),
        }

    def commit(self) -> dict[str, Any]:
        return {
            "term": self.ledger.term_at(self.ledger.commit_index),
            "commit_index": self.ledger.commit_index,
            "txid": str(self.ledger.commit_txid) if self.ledger.commit_index else None,
        }

    def refresh_metrics(self) -> None:
        self.metrics.commit_index.set(self.ledger.commit_index)
        self.metrics.term.set(self.raft_state.current_term)
        self.metrics.ledger_secret_version.set(self.ledger.secrets.current_version)
        self.metrics.observe_list(self.membership.current(), utcnow())
        self.metrics.ledger_bytes.set(sum(p.stat().st_size for p in self.ledger.chunk_paths))

    def render_metrics(self) -> bytes:
        self.refresh_metrics()
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


def node_json(node: NodeEntry) -> dict[str, Any]:
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


__all__ = ["T_INFO", "T_LISTS", "T_MEMBERS", "Member", "Node", "NodeStartError", "node_json"]
