"""Disaster recovery: the recovery key that wraps the ledger secrets, its shares among the
recovery members (``shares``), and the public ledger record that holds both (``record``)."""

from consortium_node.recovery.record import (
    T_RECOVERY,
    RecoveryError,
    build_record,
    check_share,
    open_share,
    recover_secrets,
)
from consortium_node.recovery.shares import Share, ShareError, combine, split

__all__ = [
    "T_RECOVERY",
    "RecoveryError",
    "Share",
    "ShareError",
    "build_record",
    "check_share",
    "combine",
    "open_share",
    "recover_secrets",
    "split",
]
