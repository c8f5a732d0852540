"""A node that lost its key and joined again under a new identity: its old identity is retired.

Why: a node whose sealed node key is gone (a wiped or failed volume, the pod moved to other
TEE hardware) cannot be that node again. It sets its data aside and joins afresh under a new
identity, with the same name and address. Its old identity stays a Trusted voter until
someone retires it, yet it can never answer again (every Raft RPC names its recipient, and
the node now at that address answers 421 Misdirected): left alone it only lowers the fault
tolerance for good — 4 voters need 3 for a majority where 3 needed 2, so one more failure
stops writes. The primary retires it once a newer Trusted node at the same name and address
answers and the old identity has been silent for ten election timeouts (at least
``SILENT_MIN_S``), one list change at a time like every other (``Primary.retire_superseded``).

Safety: only one process listens at an address, so two Trusted identities there cannot both
be live; the one that answers is the newer one (attested later), and the old one is retired
only after a silence far longer than an election timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consortium_node.identity.trusted_list import NodeEntry, NodeStatus

SILENT_MIN_S = 5.0  # the old identity unheard for at least this long
ANSWERING_S = 5.0  # the new identity heard within this


def silence_for(election_timeout: float) -> float:
    """How long the old identity must have been silent: ten election timeouts, at least
    ``SILENT_MIN_S`` (10 s with the default 1 s timeout)."""
    return max(SILENT_MIN_S, 10 * election_timeout)


def superseded(
    nodes: Sequence[NodeEntry],
    silent_for: Callable[[str], float | None],
    own_id: str,
    *,
    silent: float,
    answering: float = ANSWERING_S,
) -> tuple[NodeEntry, NodeEntry] | None:
    """``(old, new)``: a Trusted node ``old`` silent for ``silent`` seconds whose name and
    address a newer Trusted node ``new`` (attested later) answers at, heard within
    ``answering`` seconds; or None. ``silent_for(node_id)`` is how long the leader has not
    heard from a voter (None: unknown); ``own_id`` is the leader, which answers."""

    def quiet(node_id: str) -> float | None:
        return 0.0 if node_id == own_id else silent_for(node_id)

    trusted = [n for n in nodes if n.status is NodeStatus.TRUSTED]
    for old in sorted(trusted, key=lambda n: n.attested_at):
        old_quiet = quiet(old.node_id)
        if old_quiet is None or old_quiet < silent:
            continue
        for new in trusted:
            new_quiet = quiet(new.node_id)
            if (
                new.node_id != old.node_id
                and (new.name, new.address) == (old.name, old.address)
                and new.attested_at_datetime > old.attested_at_datetime
                and new_quiet is not None
                and new_quiet < answering
            ):
                return old, new
    return None
