"""What a node does when its data cannot be used as it is: set it aside (never delete it),
find the peers that can hand back what was lost, or refuse to start, naming why.

Why a module of its own: start-up (``startup.py``) decides *which* path a node takes; the
rules for damaged, retired or lost state are the node's recovery policy, and they are the
same wherever they are needed (a Retired identity, a lost node key, sealed by other code, a
storage fault no peer can repair).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.trusted_list import NodeStatus, verify_trusted_list
from consortium_node.server.config import JoinConfig
from consortium_node.server.errors import NodeStartError

if TYPE_CHECKING:
    from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.node")


def set_aside(data_dir: Path, tag: str) -> Path:
    """Move everything in ``data_dir`` into ``retired-<UTC stamp>-<tag>/`` (never deleted:
    no data is lost) so the node can start with a fresh identity."""
    aside = data_dir / f"retired-{utcnow():%Y%m%dT%H%M%SZ}-{tag}"
    aside.mkdir(parents=True)
    for child in list(data_dir.iterdir()):
        if child != aside and not child.name.startswith("retired-"):
            child.rename(aside / child.name)
    return aside


def retired_by_published_list(node: Node) -> bool:
    """Does the mounted, verified trusted-node list say this node was Retired?

    A Retired node can never rejoin with its old identity; the operator replaces its pod
    and the new pod must start fresh. The list is verified with the sealed service
    certificate, so nobody but the service can make a node discard its identity.
    """
    path = node.config.trusted_list_path
    if path is None or not path.is_file():
        return False
    try:
        blob = json.loads(node.sealed.get("service-identity"))
        lst = verify_trusted_list(
            path.read_bytes(), blob["certificate"], consortium=node.config.consortium
        )
    except Exception as exc:
        log.warning("cannot read the published trusted-node list %s: %s", path, exc)
        return False
    own = lst.node(node.node_id)
    return own is not None and own.status is NodeStatus.RETIRED


def set_aside_retired_identity(node: Node) -> None:
    """Move this Retired node's data aside (kept, never deleted) and start afresh."""
    aside = set_aside(node.data_dir, node.node_id[:16])
    log.warning(
        "this node (%s) is Retired in the published trusted-node list; its data is kept "
        "at %s and the node starts with a fresh identity",
        node.node_id[:16],
        aside,
    )


def known_peers(data_dir: Path) -> JoinConfig | None:
    """Join settings from what a node kept in plain files in ``data_dir``: the service
    certificate it wrote at its last start and the last trusted-node list it adopted (both
    public, both verified again by the join: the list is signed by the service)."""
    cert, lst = data_dir / "service_cert.pem", data_dir / "trusted-list" / "current.cose"
    try:
        known = verify_trusted_list(lst.read_bytes(), cert.read_bytes().decode("ascii"))
    except (OSError, UnicodeDecodeError, IdentityError):
        return None
    trusted = [n for n in known.nodes if n.status is NodeStatus.TRUSTED]
    if len(trusted) < 2:  # only this node: nobody to get anything from
        return None
    return JoinConfig(service_certificate=cert, trusted_list=str(lst), retry_interval=0.5)


def check_repairable(node: Node) -> None:
    """A storage fault lost entries and no other node could hand them back (this node is the
    only Trusted one it knows of): refuse to start, naming the fault, instead of waiting for
    ever. The damaged bytes stay set aside; restoring them (or a backup) is the way back."""
    ledger, lst = node.ledger, node.membership.current()
    lacking = ledger.missing_committed or ledger.unvouched
    if ledger.damage is None or lacking is None:
        return
    others = [
        n
        for n in (lst.nodes if lst else ())
        if n.status is NodeStatus.TRUSTED and n.node_id != node.node_id
    ]
    if not others:
        raise NodeStartError(
            f"ledger storage fault: {ledger.damage.describe()}; entries up to "
            f"{lacking.term}.{lacking.index} are lost and no other node holds them (this node "
            f"is the only Trusted one); the damaged bytes are kept in {ledger.damage.aside}"
        )
