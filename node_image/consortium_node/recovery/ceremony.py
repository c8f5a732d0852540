"""Collecting recovery shares on a recovery node, until k of them open the ledger secrets.

Why a state machine of its own: the recovery node takes shares one by one, from members who
each decrypted theirs on their own machine, and must tell each member at once whether its
share counts, naming why not; the secrets come back only when ``threshold`` valid shares are
in. The checks are the record's (``record.check_share``: the share the record committed to for
that member) plus the ceremony's own: the share names the record being recovered (``epoch``),
and a member submits once. Who signed a submission is checked before it reaches here
(``governance.documents``: an Active governor of the recovered ledger).

Refusal reasons (``RecoveryError.reason``): ``ShareForAnotherRecord``, ``NotARecoveryMember``,
``AlreadySubmitted``, ``ShareFormat``, ``ShareDoesNotMatch``; and ``Complete`` once the secrets
are back (later shares are not needed).

**In transit** a share is never in clear: the member wraps it (``seal_submission``: ECIES over
P-256, ``identity/wrap.py``) to the public key of the recovery node, which the member checked
is an attested enclave running allowed code (``consortiumctl recovery submit-share`` verifies
the node's quote first). The context binds consortium, record epoch, member and node::

    b"consortium-recovery-submission-v1" || lp(consortium) || u64be(epoch) || lp(member_id)
        || lp(node_id)

so a submission cannot be replayed to another node, for another member or another record.
Only that node's key opens it (``open_submission``; ``ShareNotForThisNode`` otherwise): a
TLS terminator, a Kubernetes object that carries it, or a node that is not the attested one
learns nothing.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.identity.errors import IdentityError
from consortium_node.identity.wrap import unwrap, wrap
from consortium_node.recovery.record import (
    RecoveryError,
    check_share,
    lp,
    recover_secrets,
)
from consortium_node.recovery.shares import Share, ShareError

SUBMISSION_PREFIX = b"consortium-recovery-submission-v1"


def submission_context(consortium: str, epoch: int, member_id: str, node_id: str) -> bytes:
    """The wrap context of a submitted share (module docstring)."""
    return (
        SUBMISSION_PREFIX
        + lp(consortium.encode())
        + struct.pack(">Q", epoch)
        + lp(member_id.encode())
        + lp(node_id.encode())
    )


def seal_submission(
    node_key: ec.EllipticCurvePublicKey,
    share: Share,
    *,
    consortium: str,
    epoch: int,
    member_id: str,
    node_id: str,
) -> str:
    """The ``share`` field of a ``recovery_share`` document: base64 of the wrapped share."""
    context = submission_context(consortium, epoch, member_id, node_id)
    return base64.b64encode(wrap(node_key, share.to_bytes(), context)).decode("ascii")


def open_submission(
    node_key: ec.EllipticCurvePrivateKey,
    sealed_b64: str,
    *,
    consortium: str,
    epoch: int,
    member_id: str,
    node_id: str,
) -> str:
    """The base64 share inside a submission (for ``ShareCollector.submit``); RecoveryError
    ``ShareNotForThisNode`` if this node's key does not open it with that context."""
    try:
        blob = base64.b64decode(sealed_b64, validate=True)
        plain = unwrap(node_key, blob, submission_context(consortium, epoch, member_id, node_id))
    except (binascii.Error, ValueError, IdentityError) as exc:
        raise RecoveryError(
            "ShareNotForThisNode",
            "the submitted share does not open with this recovery node's key for this member "
            f"and record ({exc}); fetch the node's attested key again and resubmit",
        ) from exc
    return base64.b64encode(plain).decode("ascii")


@dataclass(frozen=True)
class Progress:
    """Where a ceremony stands: who submitted, how many are needed, and whether it is done."""

    epoch: int
    threshold: int
    submitted: tuple[str, ...]  # member_ids, in submission order
    waiting_for: tuple[str, ...]  # recovery members who have not submitted
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "threshold": self.threshold,
            "submitted": list(self.submitted),
            "waiting_for": list(self.waiting_for),
            "complete": self.complete,
        }


class ShareCollector:
    """The shares submitted so far for one recovery record (``record``, as the recovered
    public ledger holds it)."""

    def __init__(self, record: Mapping[str, Any], consortium: str) -> None:
        self.record, self.consortium = record, consortium
        self.epoch, self.threshold = int(record["epoch"]), int(record["threshold"])
        self._shares: dict[str, Share] = {}
        self._secrets: dict[int, bytes] | None = None

    @property
    def secrets(self) -> dict[int, bytes] | None:
        """Every ledger secret version, once ``threshold`` valid shares are in (else None)."""
        return self._secrets

    def progress(self) -> Progress:
        holders = sorted(self.record.get("shares") or {})
        return Progress(
            self.epoch,
            self.threshold,
            tuple(self._shares),
            tuple(m for m in holders if m not in self._shares),
            self._secrets is not None,
        )

    def submit(self, member_id: str, epoch: int, share_b64: str) -> Progress:
        """Take ``member_id``'s share of record ``epoch`` (base64 of the 33-byte share), or
        raise RecoveryError naming why it does not count; with the ``threshold``-th valid
        share, open the ledger secrets."""
        if self._secrets is not None:
            raise RecoveryError("Complete", "the ledger secrets are already recovered")
        if epoch != self.epoch:
            raise RecoveryError(
                "ShareForAnotherRecord",
                f"a share of recovery record {epoch}; this recovery uses record {self.epoch}",
            )
        if member_id not in (self.record.get("shares") or {}):
            raise RecoveryError(
                "NotARecoveryMember",
                f"member {member_id[:16]} holds no share of recovery record {self.epoch}",
            )
        if member_id in self._shares:
            raise RecoveryError(
                "AlreadySubmitted", f"member {member_id[:16]} has already submitted its share"
            )
        try:
            share = Share.from_bytes(base64.b64decode(share_b64, validate=True))
        except (binascii.Error, ValueError, ShareError) as exc:
            raise RecoveryError("ShareFormat", f"not a base64 recovery share: {exc}") from exc
        check_share(self.record, self.consortium, member_id, share)
        self._shares[member_id] = share
        if len(self._shares) >= self.threshold:
            self._secrets = recover_secrets(self.record, self.consortium, self._shares)
        return self.progress()
