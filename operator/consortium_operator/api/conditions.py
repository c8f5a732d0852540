"""Condition types, reasons and bookkeeping, kept the way cert-manager keeps them.

A condition's ``lastTransitionTime`` changes only when its ``status`` flips; ``reason`` and
``message`` may change without a transition. Every condition carries ``observedGeneration``.
Reasons are CamelCase constants from this module only, so alerts and tests can match them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Consortium condition types (DESIGN §8)
READY = "Ready"
BOOTSTRAPPED = "Bootstrapped"
NODES_ATTESTED = "NodesAttested"
LIST_DISTRIBUTED = "TrustedListDistributed"
DEGRADED = "Degraded"
CONSORTIUM_TYPES = (READY, BOOTSTRAPPED, NODES_ATTESTED, LIST_DISTRIBUTED, DEGRADED)
# Once bootstrapped: the nodes run spec.image and the ledger allows what the spec asks.
UP_TO_DATE = "UpToDate"
# With spec.backup only: the primary ships the ledger to the bucket within spec.backup.maxLag.
# Never part of Ready or Degraded (a failing backup does not stop the ledger serving).
BACKUP_HEALTHY = "BackupHealthy"

# Member condition types
ACCEPTED = "Accepted"
ACTIVE = "Active"

# ConsortiumBackup condition type (a one-shot request, like a Job's)
COMPLETE = "Complete"

# Proposal condition types
SUBMITTED = "Submitted"
DECIDED = "Decided"
BALLOTS_ACCEPTED = "BallotsAccepted"
PROPOSAL_TYPES = (SUBMITTED, DECIDED, BALLOTS_ACCEPTED)

# Reasons
INVALID_SPEC = "InvalidSpec"
NO_GOVERNOR = "NoGovernor"
IMAGE_UNAVAILABLE = "ImageUnavailable"
NODE_START_FAILED = "NodeStartFailed"
ATTESTATION_REFUSED = "AttestationRefused"
WAITING_FOR_GENESIS = "WaitingForGenesis"
GENESIS_COMPLETE = "GenesisComplete"
NODES_JOINING = "NodesJoining"
ALL_NODES_ATTESTED = "AllNodesAttested"
NODE_NOT_VERIFIED = "NodeNotVerified"
LIST_PUBLISHED = "ListPublished"
LIST_NOT_PUBLISHED = "ListNotPublished"
LIST_UNVERIFIED = "ListUnverified"
REATTESTATION_FAILING = "ReattestationFailing"
NODE_RETIRED = "NodeRetired"
NO_QUORUM = "NoQuorum"
LEDGER_RECOVERING = "LedgerRecovering"  # a node repairs committed entries lost to a storage fault
LEDGER_DIVERGED = "LedgerDiverged"  # a node was sent a history contradicting what it committed
SCALING = "Scaling"
# A Consortium started with spec.recovery (docs/recovery.md): Ready's reasons until it is open,
# and the Member condition of each recovery member while shares are awaited.
WAITING_FOR_RECOVERY_SHARES = "WaitingForRecoveryShares"
WAITING_FOR_OPEN = "WaitingForOpen"
RECOVERY_SHARE = "RecoveryShare"
RECOVERY_SHARE_REQUESTED = "RecoveryShareRequested"
RECOVERY_SHARE_SUBMITTED = "RecoveryShareSubmitted"
AS_EXPECTED = "AsExpected"
READY_REASON = "ConsortiumReady"
NOT_READY = "NotReady"
CONSORTIUM_NOT_FOUND = "ConsortiumNotFound"
CERTIFICATE_INVALID = "CertificateInvalid"
CONSORTIUM_IMMUTABLE = "ConsortiumImmutable"
MEMBER_OF_GENESIS = "InGenesis"
GOVERNANCE_PENDING = "GovernancePending"
LEDGER_ACTIVE = "ActiveInLedger"
LEDGER_UNKNOWN = "LedgerNotReachable"
ACK_NEEDED = "AcknowledgementNeeded"
# Upgrades and other spec changes that need the members (UpToDate)
WAITING_FOR_APPROVAL = "WaitingForApproval"
PROPOSAL_REJECTED = "ProposalRejected"
ROLLING_NODES = "RollingNodes"
SCALE_UP_TO_UPGRADE = "ScaleUpToUpgrade"
UP_TO_DATE_REASON = "UpToDate"
# Proposals
RECORDED = "RecordedInLedger"
NOT_RELAYED = "NotRelayed"
DOCUMENT_INVALID = "DocumentInvalid"
REFUSED_BY_NODES = "RefusedByNodes"
OPEN = "Open"
BALLOT_REFUSED = "BallotRefused"
ALL_BALLOTS_RECORDED = "AllBallotsRecorded"
# Backups (BackupHealthy). The node's own reasons (GET /node/backup last_error.reason) are
# passed through when they are one of NODE_BACKUP_REASONS; any other becomes UploadFailed.
BACKUP_HEALTHY_REASON = "BackupHealthy"
BACKUP_LAGGING = "BackupLagging"
CREDENTIALS_SECRET_NOT_FOUND = "CredentialsSecretNotFound"  # noqa: S105 - a reason
BACKUP_STATUS_UNKNOWN = "BackupStatusUnknown"  # no primary, or it did not answer
BACKUP_CONFIG_PENDING = "BackupConfigPending"  # the primary runs without spec.backup yet
UPLOAD_FAILED = "UploadFailed"
NODE_BACKUP_REASONS = (
    "CredentialsMissing",
    "EndpointUnreachable",
    "InvalidCredentials",
    "AccessDenied",
    "BucketNotFound",
    "BucketOwnedByAnotherConsortium",
    "ObjectConflict",
    "HistoryNotHeld",
    UPLOAD_FAILED,
)
# ConsortiumBackup (Complete)
BACKUP_NOT_CONFIGURED = "BackupNotConfigured"  # its Consortium has no spec.backup
BACKUP_PENDING = "BackupPending"  # not requested yet (no primary, nodes not configured yet)
BACKUP_RUNNING = "BackupRunning"  # requested; waiting for a manifest that covers it
BACKUP_COMPLETED = "BackupCompleted"
BACKUP_REQUEST_REFUSED = "BackupRequestRefused"
DEADLINE_EXCEEDED = "DeadlineExceeded"
SPEC_CHANGED = "SpecChanged"

# Phases derived from conditions
PHASE_PENDING = "Pending"
PHASE_BOOTSTRAPPING = "Bootstrapping"
PHASE_READY = "Ready"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"
PHASE_DELETING = "Deleting"
# ConsortiumBackup: Pending → Running → Completed | Failed (the last two are final)
PHASE_RUNNING = "Running"
PHASE_COMPLETED = "Completed"


def backup_reason(node_reason: str) -> str:
    """A node's backup failure reason as a condition reason: the contract's, else UploadFailed
    (reasons stay a closed set, so alerts and tests can match them)."""
    return node_reason if node_reason in NODE_BACKUP_REASONS else UPLOAD_FAILED


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    now: str,
    generation: int,
) -> list[dict[str, Any]]:
    """New conditions as status dicts, keeping ``lastTransitionTime`` where status is unchanged.

    Conditions not in ``new`` are kept as they are (another controller may own them).
    """
    old = {c.get("type"): c for c in existing or () if isinstance(c, Mapping)}
    out: dict[str, dict[str, Any]] = {str(t): dict(c) for t, c in old.items() if isinstance(t, str)}
    for cond in new:
        previous = old.get(cond.type)
        changed = previous is None or previous.get("status") != cond.status_text
        out[cond.type] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message or cond.reason,
            "lastTransitionTime": now
            if changed or previous is None
            else previous.get("lastTransitionTime", now),
            "observedGeneration": generation,
        }
    known = (
        *CONSORTIUM_TYPES,
        UP_TO_DATE,
        BACKUP_HEALTHY,
        ACCEPTED,
        ACTIVE,
        *PROPOSAL_TYPES,
        COMPLETE,
    )
    order = {t: i for i, t in enumerate(known)}
    return sorted(out.values(), key=lambda c: (order.get(c["type"], 99), c["type"]))


def without_transition_times(st: Mapping[str, Any]) -> dict[str, Any]:
    """A status with its conditions' ``lastTransitionTime`` dropped: what decides whether a
    status write is needed (a time alone never justifies one)."""
    out = dict(st)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in st.get("conditions", [])
    ]
    return out


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def phase(
    conditions: Sequence[Condition], *, deleting: bool = False, was_ready: bool = False
) -> str:
    """The one-word phase shown by ``kubectl get``, derived from the conditions.

    ``was_ready``: the Consortium has been Ready before (``status.firstReadyTime``). It
    never goes back to Pending or Bootstrapping: a formed consortium that is not Ready is
    Degraded (or Failed, for a cause only the user can fix).
    """
    if deleting:
        return PHASE_DELETING
    ready = find(conditions, READY)
    if (
        ready is not None
        and ready.status is False
        and ready.reason
        in (
            INVALID_SPEC,
            IMAGE_UNAVAILABLE,
            ATTESTATION_REFUSED,
            NODE_START_FAILED,
        )
    ):
        return PHASE_FAILED
    degraded = find(conditions, DEGRADED)
    if ready is not None and ready.status:
        return PHASE_DEGRADED if degraded is not None and degraded.status else PHASE_READY
    if was_ready:
        return PHASE_DEGRADED
    boot = find(conditions, BOOTSTRAPPED)
    if boot is None or not boot.status:
        return PHASE_PENDING if boot is None else PHASE_BOOTSTRAPPING
    return PHASE_DEGRADED if degraded is not None and degraded.status else PHASE_BOOTSTRAPPING
