"""Prometheus metrics of one node (DESIGN section 9), in a registry of its own.

One registry per Node (not the process-global one) so several nodes in one test process do not
collide. Labels are bounded: node ids (one per node of the consortium), statuses, reasons and
routes — never transaction ids or keys. Point-in-time values (expiry countdowns, nodes by
status, ledger size) are refreshed from the node's ledger and trusted-node list at scrape time
(``observe_node``); commits are counted as they happen (``observe_commit``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consortium_node.backup.s3 import REASONS
from consortium_node.identity.trusted_list import REFUSALS, NodeStatus, TrustedNodeList
from consortium_node.ledger.damage import DamageKind
from consortium_node.server.service_state import PHASES

if TYPE_CHECKING:
    from consortium_node.ledger import Ledger

ROLES = ("primary", "backup", "candidate", "pending", "retired")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    """All metrics one node exposes on ``/metrics``."""

    def __init__(
        self, *, consortium: str, node_id: str, name: str, platform: str, version: str
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counted = 0  # the highest index counted in ``committed``
        r = self.registry
        self.info = Gauge(
            "consortium_node_info",
            "Constant 1; labels describe this node and its TEE platform.",
            ["consortium", "node_id", "name", "platform", "version"],
            registry=r,
        )
        self.info.labels(consortium, node_id, name, platform, version).set(1)
        self.commit_index = Gauge(
            "consortium_commit_index",
            "Index of the last committed (durable) transaction.",
            registry=r,
        )
        self.term = Gauge("consortium_term", "Current consensus term.", registry=r)
        self.role = Gauge(
            "consortium_node_role",
            "1 for the role this node currently has, else 0.",
            ["role"],
            registry=r,
        )
        self.committed = Counter(
            "consortium_transactions_committed",
            "Ledger entries (transactions, governance and signature entries) this node has "
            "seen committed.",
            registry=r,
        )
        self.commit_latency = Histogram(
            "consortium_commit_latency_seconds",
            "Time from receiving a write batch to its durable commit acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signatures = Counter(
            "consortium_signature_transactions",
            "Signature transactions appended (Merkle root signed by this node).",
            registry=r,
        )
        self.join_requests = Counter(
            "consortium_join_requests",
            "Join requests handled by this node, by result (trusted, pending, refused) and the "
            "verifier's reason for refusals.",
            ["result", "reason"],
            registry=r,
        )
        self.reattestations = Counter(
            "consortium_reattestations",
            "Automatic re-attestations decided by this node as primary: renewed or retired.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("renewed", "retired"):
            self.reattestations.labels(outcome)
        self.list_version = Gauge(
            "consortium_trusted_list_version",
            "Version of the trusted-node list this node holds.",
            registry=r,
        )
        self.nodes = Gauge(
            "consortium_nodes",
            "Nodes in the trusted-node list, by trust status.",
            ["status"],
            registry=r,
        )
        self.expiry = Gauge(
            "consortium_attestation_expiry_seconds",
            "Seconds until each node's attestation expires (negative once expired).",
            ["node_id", "name"],
            registry=r,
        )
        self.verifications = Counter(
            "consortium_attestation_verifications",
            "Attestation quote verifications performed by this node, by result and reason.",
            ["platform", "result", "reason"],
            registry=r,
        )
        self.list_rejections = Counter(
            "consortium_trusted_list_rejections",
            "Trusted-node lists handed to this node and refused, by reason: a forged, "
            "foreign or inconsistent list (never an older validly signed one: see "
            "consortium_trusted_list_stale_total).",
            ["reason"],
            registry=r,
        )
        for reason in REFUSALS:  # present from the start, so increase() sees the first one
            self.list_rejections.labels(reason.value)
        self.list_stale = Counter(
            "consortium_trusted_list_stale",
            "Trusted-node lists handed to this node that verify but are older than the one it "
            "holds (e.g. a ConfigMap not yet updated): kept out, not counted as rejections.",
            registry=r,
        )
        self.http_requests = Counter(
            "consortium_http_requests",
            "HTTP requests served, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.ledger_secret_version = Gauge(
            "consortium_ledger_secret_version",
            "Ledger secret version new private entries are encrypted with: the newest in this "
            "node's log (1 until governance rotates the secret).",
            registry=r,
        )
        self.ledger_bytes = Gauge(
            "consortium_ledger_bytes", "Bytes of ledger chunks on this node's volume.", registry=r
        )
        self.history_start = Gauge(
            "consortium_ledger_history_start_index",
            "First ledger index this node holds: 1 if it holds the whole history, later if it "
            "started from a snapshot (a join, an emptied volume, or a snapshot installed because "
            "no voter held the entries its log lacked); receipts before it are served by nodes "
            "that hold them (404 HistoryNotHeld here).",
            registry=r,
        )
        self.repairs = Counter(
            "consortium_ledger_repairs",
            "Storage faults repaired from the consortium, by the kind of damage: truncated, "
            "corrupted or missing ledger records (counted once every entry lost was replicated "
            "again), or sealed secrets lost (counted once obtained again by an attested re-join).",
            ["reason"],
            registry=r,
        )
        for kind in DamageKind:  # present from the start, so increase() sees the first one
            self.repairs.labels(kind.value)
        self.recovering = Gauge(
            "consortium_ledger_recovering",
            "1 while this node's log lacks committed entries it lost to a storage fault (it "
            "neither votes for a log without them nor campaigns), else 0; 2 if the entries "
            "replicated to it contradict what it knew committed.",
            registry=r,
        )

        self.snapshots_written = Counter(
            "consortium_snapshots_written",
            "Snapshots of the committed state this node wrote (at a signature entry at least "
            "snapshot_interval committed entries and snapshot_writes_percent of the state's "
            "rows in writes after the previous one).",
            registry=r,
        )
        self.snapshots_fetched = Counter(
            "consortium_snapshots_fetched",
            "Snapshots this node fetched from another node (the primary's, kept only if their "
            "SHA-256 is the committed evidence's) instead of encoding its own: a backup's.",
            registry=r,
        )
        self.snapshot_seconds = Gauge(
            "consortium_snapshot_write_seconds",
            "Seconds the newest snapshot took to encode and write (off the event loop).",
            registry=r,
        )
        self.snapshot_bytes = Gauge(
            "consortium_snapshot_bytes", "Size of the newest snapshot written.", registry=r
        )
        self.snapshot_committed_index = Gauge(
            "consortium_snapshot_committed_index",
            "Index of the newest snapshot committed by its evidence receipt (0: none), the "
            "point a joining or restarting node can start from.",
            registry=r,
        )
        self._backup_metrics(r)
        self._recovery_metrics(r)

    def _recovery_metrics(self, r: CollectorRegistry) -> None:
        """The recovery record (``consortium_node.recovery``), as this node's ledger holds it."""
        self.recovery_epoch = Gauge(
            "consortium_recovery_record_epoch",
            "Epoch of the newest recovery record in the ledger (0: none: no recovery member).",
            registry=r,
        )
        self.recovery_members = Gauge(
            "consortium_recovery_members",
            "Active governors with a recovery key: the recovery members who hold shares.",
            registry=r,
        )
        self.recovery_threshold = Gauge(
            "consortium_recovery_threshold",
            "Shares the newest recovery record needs to bring the ledger secrets back (k; 0: "
            "no record).",
            registry=r,
        )
        self.recovery_stale = Gauge(
            "consortium_recovery_record_stale",
            "1 while the newest recovery record does not cover what the ledger asks (every "
            "ledger secret version, the current recovery members and their keys, the recovery "
            "threshold): shares of it would not recover everything; else 0.",
            registry=r,
        )

        self.service_phase = Gauge(
            "consortium_service_phase",
            "1 for the phase this node's service is in (Open; after a disaster recovery "
            "WaitingForRecoveryShares, then WaitingForOpen until the members vote it open), "
            "0 for the others.",
            ["phase"],
            registry=r,
        )
        self.recovery_shares_submitted = Gauge(
            "consortium_recovery_shares_submitted",
            "Valid recovery shares submitted to this recovery node so far (0 on other nodes).",
            registry=r,
        )
        self.recovery_share_refusals = Counter(
            "consortium_recovery_share_refusals_total",
            "Recovery shares this node refused, by reason (ShareDoesNotMatch, "
            "NotARecoveryMember, AlreadySubmitted, ShareFormat, ShareForAnotherRecord, ...).",
            ["reason"],
            registry=r,
        )

    def observe_phase(self, phase: str, submitted: int) -> None:
        """Refresh the service phase gauges (``service_state.PHASES``)."""
        for name in PHASES:
            self.service_phase.labels(name).set(1 if name == phase else 0)
        self.recovery_shares_submitted.set(submitted)

    def observe_recovery(self, epoch: int, members: int, threshold: int, stale: bool) -> None:
        """Refresh the recovery gauges (``Node.recovery_summary``)."""
        self.recovery_epoch.set(epoch)
        self.recovery_threshold.set(threshold)
        self.recovery_members.set(members)
        self.recovery_stale.set(1 if stale else 0)

    def _backup_metrics(self, r: CollectorRegistry) -> None:
        """Backups to object storage (``server/backup.py``); only the shipping node (the
        primary) moves them, the others keep lag at 0."""
        self.backup_last_success = Gauge(
            "consortium_backup_last_success_timestamp_seconds",
            "Unix time of the newest backup manifest this node wrote (0: none yet).",
            registry=r,
        )
        self.backup_lag_seconds = Gauge(
            "consortium_backup_lag_seconds",
            "Age of the oldest committed entry not yet covered by a backup manifest (0: none).",
            registry=r,
        )
        self.backup_lag_entries = Gauge(
            "consortium_backup_lag_entries",
            "Committed entries not yet covered by a backup manifest.",
            registry=r,
        )
        self.backup_max_lag_seconds = Gauge(
            "consortium_backup_max_lag_seconds",
            "The lag the backup configuration promises (max_lag; for a schedule, its period "
            "plus 60 s); alerts compare the lag with it.",
            registry=r,
        )
        self.backup_shipped_index = Gauge(
            "consortium_backup_shipped_index",
            "The last ledger index covered by a backup manifest this node wrote.",
            registry=r,
        )
        self.backup_bytes = Counter(
            "consortium_backup_uploaded_bytes", "Bytes uploaded to the backup store.", registry=r
        )
        self.backup_objects = Counter(
            "consortium_backup_objects_uploaded",
            "Objects uploaded to the backup store, by kind (ledger, snapshot, manifest).",
            ["kind"],
            registry=r,
        )
        for kind in ("ledger", "snapshot", "manifest"):
            self.backup_objects.labels(kind)
        self.backup_failures = Counter(
            "consortium_backup_failures",
            "Backup rounds that failed, by reason (CredentialsMissing, EndpointUnreachable, "
            "InvalidCredentials, AccessDenied, BucketNotFound, BucketOwnedByAnotherConsortium, "
            "ObjectConflict, HistoryNotHeld, UploadFailed).",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:  # at 0 from the start: increase() sees the first failure
            self.backup_failures.labels(reason)

    def observe_snapshot(self, index: int, size: int, seconds: float) -> None:
        """A snapshot was written."""
        self.snapshots_written.inc()
        self.snapshot_bytes.set(size)
        self.snapshot_seconds.set(seconds)

    def observe_fetched_snapshot(self, index: int, size: int, seconds: float) -> None:
        """A snapshot was fetched and checked."""
        self.snapshots_fetched.inc()
        self.snapshot_bytes.set(size)
        self.snapshot_seconds.set(seconds)

    def set_role(self, role: str) -> None:
        for candidate in ROLES:
            self.role.labels(candidate).set(1 if candidate == role else 0)

    def observe_list(self, trusted: TrustedNodeList | None, now: datetime) -> None:
        """Refresh list-derived gauges (called at scrape time and on every list change)."""
        if trusted is None:
            return
        self.list_version.set(trusted.version)
        counts = {status.value: 0 for status in NodeStatus}
        self.expiry.clear()
        for node in trusted.nodes:
            counts[node.status.value] += 1
            if node.status is not NodeStatus.RETIRED:
                remaining = (node.attestation_expires_at_datetime - now).total_seconds()
                self.expiry.labels(node.node_id, node.name).set(remaining)
        for status, count in counts.items():
            self.nodes.labels(status).set(count)

    def observe_commit(self, index: int) -> None:
        """Everything up to ``index`` is committed: count the entries not counted yet."""
        self.committed.inc(max(0, index - self._counted))
        self._counted = max(self._counted, index)
        self.commit_index.set(index)

    def observe_node(
        self, ledger: Ledger, term: int, trusted: TrustedNodeList | None, now: datetime
    ) -> None:
        """Refresh what is read from the node's state (at start and at scrape time)."""
        self.commit_index.set(ledger.commit_index)
        self.term.set(term)
        self.ledger_secret_version.set(ledger.secrets.current_version)
        self.observe_list(trusted, now)
        self.ledger_bytes.set(sum(p.stat().st_size for p in ledger.chunk_paths))
        self.history_start.set(ledger.base_index + 1)
        newest = ledger.snapshots.newest_committed()
        self.snapshot_committed_index.set(newest.index if newest else 0)
        self.recovering.set(
            2
            if ledger.diverged is not None
            else 1
            if ledger.missing_committed or ledger.unvouched
            else 0
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
