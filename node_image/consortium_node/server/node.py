"""A running consortium node: the enclave's state and the operations the API exposes.

``Node.open`` is the entry: start-up (provisioning the TEE and key, then genesis, join or
restart) lives in ``startup.py``; what the node does once running is here: the ledger views
every trust decision reads (policy, constitution, members, node records), quotes and their
verification, and keeping up with commits (a new trusted-node list, a renewed certificate,
new members). Its certificate is held by ``certificates.py``, who may call what is decided in
``callers.py``, and the primary's duties are in ``primary.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node import __version__
from consortium_node.attestation import VerificationResult, parse_faults
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.trusted_list import TrustedNodeList, sign_trusted_list
from consortium_node.ledger import Ledger, TxId
from consortium_node.ledger.snapshot import SnapshotError, peek_txid
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY, RecoveryError
from consortium_node.replication.state import PersistentState
from consortium_node.server import startup
from consortium_node.server.callers import Member
from consortium_node.server.certificates import NodeCertificate
from consortium_node.server.config import NodeConfig
from consortium_node.server.genesis import (
    T_ATTESTATION,
    T_CONSTITUTION,
    T_MEMBERS,
    T_NODES,
    policy_from_value,
)
from consortium_node.server.ledger_secrets import SecretVault
from consortium_node.server.membership import Membership
from consortium_node.server.metrics import NodeMetrics
from consortium_node.server.recovery_keeper import holders, needed
from consortium_node.server.service_state import (
    OPEN,
    SERVICE_KEY,
    T_PREVIOUS_SERVICES,
    T_SERVICE,
    phase_of,
    status_of,
)

log = logging.getLogger("consortium_node.node")


class Node:
    """The running node. Construct with :meth:`open`."""

    def __init__(self, config: NodeConfig, tee: startup.Tee, node_key: keys.PrivateKey) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.started_at = utcnow()
        self.measurement, self.host_data = tee.measurement, tee.host_data
        self.enclave, self.verifiers, self.sealed = tee.enclave, tee.verifiers, tee.sealed
        self.node_key = node_key
        self.node_id = keys.node_id_of(self.node_key)
        assert isinstance(self.node_key, ec.EllipticCurvePrivateKey)
        self.vault = SecretVault(self.sealed, self.node_key, config.consortium)
        self.raft_state = PersistentState(self.data_dir / "raft-state.json")
        self.metrics = NodeMetrics(
            consortium=config.consortium,
            node_id=self.node_id,
            name=config.name,
            platform=config.platform.name,
            version=__version__,
        )
        self.role = "backup"
        self.shares_submitted = 0  # valid recovery shares taken (``recovery_api``)
        self._repair_counted = False  # a storage fault set aside at start was repaired
        self.on_new_members: Callable[[list[str]], None] | None = None
        self._announced_members: set[str] = set()
        # Set by start-up (genesis / join / restart):
        self.service: ServiceIdentity
        self.ledger: Ledger
        self.membership: Membership
        self.certificate: NodeCertificate

    @classmethod
    def open(cls, config: NodeConfig) -> Node:
        """Start a node from its configuration and data directory (``startup.py``)."""
        return startup.open_node(cls, config)

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
        self.metrics.observe_commit(index)
        self.note_repair()
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
            self.certificate.adopt(pem, "renewed node certificate")

    def note_repair(self) -> None:
        """Count a storage-fault repair once the log again holds every entry it knew committed
        (replicated by the leader or fetched from a peer; each checked like any replicated
        entry). Called after each commit and each follower append."""
        damage = self.ledger.damage
        if damage is None or self._repair_counted:
            return
        ledger = self.ledger
        if ledger.missing_committed is None and ledger.unvouched is None and not ledger.diverged:
            self._repair_counted = True
            self.metrics.repairs.labels(damage.kind.value).inc()
            log.warning(
                "ledger repaired from the consortium: %s; the log holds every committed entry "
                "again (commit %s)",
                damage.describe(),
                self.ledger.commit_txid,
            )

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
                    member_id,
                    value["role"],
                    value["status"],
                    value["certificate"],
                    value.get("recovery_key"),
                )
        return out

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
            "held_from": self.ledger.base_index + 1,  # receipts before: 404 HistoryNotHeld
            "snapshot": self._newest_snapshot(),
            "recovery": self.recovery_summary(),
            "service_phase": self.service_phase(),
            "node_certificate_expires_at": rfc3339(self.certificate.current.not_valid_after_utc),
            "started_at": rfc3339(self.started_at),
            "ledger_repair": self.ledger_repair(),
        }

    def _newest_snapshot(self) -> dict[str, Any] | None:
        """The newest committed snapshot this node holds (index and the txid its header
        names), or None: none yet, or pruned while being read."""
        stored = self.ledger.snapshots.newest_committed()
        if stored is None:
            return None
        try:
            with stored.path.open("rb") as file:
                txid = peek_txid(file.read(64))  # the header: magic, format, term, index
        except (OSError, SnapshotError):
            return None
        return {"index": stored.index, "txid": str(txid)}

    def ledger_repair(self) -> dict[str, Any] | None:
        """A storage fault found at start and where its repair stands (None: no fault).

        ``state``: ``recovering`` while committed entries lost to it are not replicated
        again, ``repaired`` once they are, ``diverged`` if what was replicated contradicts
        what this node knew committed."""
        damage = self.ledger.damage
        if damage is None:
            return None
        missing = self.ledger.missing_committed or self.ledger.unvouched
        state = "diverged" if self.ledger.diverged else "recovering" if missing else "repaired"
        known = self.ledger.known_commit
        return {
            "state": state,
            "damage": damage.describe(),
            "kind": damage.kind.value,
            "known_committed": f"{known.term}.{known.index}",
            "set_aside": [str(path) for path in damage.aside],
        }

    def ledger_problem(self) -> str | None:
        """Why the ledger keeps this node from being ready, or None."""
        repair = self.ledger_repair()
        if repair is None or repair["state"] == "repaired":
            return None
        if repair["state"] == "diverged":
            return (
                f"the entries replicated to this node contradict the committed entry "
                f"{repair['known_committed']} it held before a storage fault ({repair['damage']})"
            )
        return (
            f"recovering committed entries up to {repair['known_committed']} lost to a storage "
            f"fault ({repair['damage']}) from the primary"
        )

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
        self.metrics.observe_node(
            self.ledger, self.raft_state.current_term, self.membership.current(), utcnow()
        )
        summary = self.recovery_summary()
        self.metrics.observe_recovery(
            summary["epoch"], summary["members"], summary["threshold"], summary["stale"]
        )
        self.metrics.observe_phase(self.service_phase(), self.shares_submitted)

    def holds_every_secret(self) -> bool:
        """Does this node hold every ledger secret version its log introduced?"""
        secrets = self.ledger.secrets
        return all(secrets.holds(v) for v in range(1, secrets.current_version + 1))

    def service_phase(self) -> str:
        """``Open``, or where a recovered service stands (``service_state``)."""
        row = self.public_value(T_SERVICE, SERVICE_KEY)
        if status_of(row) == OPEN:
            return OPEN
        return phase_of(row, self.holds_every_secret())

    def service_history(self) -> list[Any]:
        """The history records of the service identities this one replaced (``service_state``),
        oldest key first."""
        table = T_PREVIOUS_SERVICES
        return [self.public_value(table, key) for key in sorted(self.ledger.public_keys(table))]

    def recovery_summary(self) -> dict[str, Any]:
        """The newest recovery record as status shows it: ``epoch`` and ``threshold`` (0: no
        record), ``members`` (Active governors with a recovery key), ``stale`` (the record
        does not cover what the ledger asks: every secret version, those members and keys,
        the threshold; ``recovery_keeper``)."""
        members = self.members()
        record = self.public_value(T_RECOVERY, RECORD_KEY)
        current = record if isinstance(record, dict) else None
        versions = list(self.ledger.secrets.by_version())
        try:
            stale = needed(members, self.constitution(), current, versions) is not None
        except RecoveryError:  # a stored key that does not load: the keeper says so
            stale = False
        return {
            "epoch": int(current["epoch"]) if current else 0,
            "threshold": int(current["threshold"]) if current else 0,
            "members": len(holders(members)),
            "stale": stale,
        }

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
