"""Code upgrades: which image the nodes may run, and the next step of a rolling replacement.

A node's code is its measurement, and which measurements may join is the members' decision
(the ledger's attestation policy). So a changed ``spec.image`` is not rolled out when the spec
lists a measurement the ledger does not allow yet: the StatefulSet keeps the image it runs, and
an ``add_measurement`` proposal (``intents.py``) goes to the members. Once the ledger allows
every measurement of the spec, the operator replaces the pods **one at a time**:

1. wait until every desired pod is Ready and runs a Trusted, verified node, and the current
   trusted-node list is published (so no step starts while another is still settling);
2. pick an outdated pod (backups before the primary, highest ordinal first);
3. if its image changed: retire its node (``POST /gov/nodes/retire``: one voter fewer, the
   majority of the rest still commits), and the Retired node's pod is replaced as any Retired
   node's is; the new pod cannot unseal the old identity (sealing keys derive from the
   measurement), keeps it aside and joins afresh with the new measurement;
   otherwise (only the pod template changed) delete the pod: it comes back as the same node.

One configuration change at a time never removes more than one voter, so quorum is never lost
for a consortium that had one to spare (3 nodes or more). A one-node consortium is not rolled:
its only node cannot be retired, and a new pod could not join without it
(``UpToDate=False ScaleUpToUpgrade``). Rejected → the old image stays, and
``UpToDate=False ProposalRejected`` says why.

Pure: facts in, decisions out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consortium_node.governance import ProposalState
from consortium_operator.api import conditions as c
from consortium_operator.proposals.mirror import WILL_NOT_APPLY


@dataclass(frozen=True)
class PodFacts:
    name: str
    ordinal: int
    image: str  # the node container's image
    revision: str | None  # controller-revision-hash
    ready: bool
    deleting: bool
    node_id: str | None  # verified by the operator
    trusted: bool  # its node is Trusted and unexpired in the current list


@dataclass(frozen=True)
class Step:
    action: str  # "retire" | "delete"
    pod: str
    node_id: str | None


@dataclass(frozen=True)
class Asked:
    """An operator proposal the spec still needs, and where it stands."""

    name: str  # the Proposal CR
    category: str
    state: str  # Pending | Open | Accepted | Rejected | Refused | Invalid | Expired | Withdrawn
    reason: str
    votes: str = ""
    subject: str = ""  # the intent's Member or pod name, if any


def node_image(
    spec_image: str, live_image: str | None, bootstrapped: bool, asked: Sequence[Asked]
) -> str:
    """The image for the StatefulSet template: spec.image unless new code awaits the members."""
    waiting = any(a.category == "measurements" for a in asked)
    if not bootstrapped or live_image is None or not waiting:
        return spec_image
    return live_image


def next_step(
    pods: Sequence[PodFacts],
    *,
    template_image: str,
    update_revision: str | None,
    desired: int,
    primary: str | None,
    list_published: bool,
) -> Step | None:
    """The one replacement to make now, or None (nothing outdated, or not settled yet)."""
    current = [p for p in pods if p.ordinal < desired]
    outdated = [p for p in current if _outdated(p, template_image, update_revision)]
    if not outdated:
        return None
    settled = (
        list_published
        and len(current) == desired
        and all(p.ready and not p.deleting and p.trusted for p in current)
    )
    if not settled:
        return None
    pick = sorted(outdated, key=lambda p: (p.name == primary, -p.ordinal))[0]
    if pick.image != template_image:
        if desired < 2:
            return None  # retiring the only node would strand the ledger (see up_to_date)
        return Step("retire", pick.name, pick.node_id)
    return Step("delete", pick.name, pick.node_id)


def _outdated(pod: PodFacts, template_image: str, update_revision: str | None) -> bool:
    """Runs another image, or another revision of the pod template, than the StatefulSet's."""
    if pod.image != template_image:
        return True
    return (
        update_revision is not None and pod.revision is not None and pod.revision != update_revision
    )


def up_to_date(
    asked: Sequence[Asked],
    pods: Sequence[PodFacts],
    template_image: str,
    desired: int,
    update_revision: str | None = None,
) -> c.Condition:
    """UpToDate: nothing waits for the members, and every node runs the template's image."""
    refused = [a for a in asked if a.state in WILL_NOT_APPLY]
    if refused:
        text = "; ".join(f"Proposal {a.name} is {a.state}: {a.reason}" for a in refused)
        keeps = (
            " (the nodes keep running the approved image)"
            if any(a.category == "measurements" for a in refused)
            else ""
        )
        return c.Condition(c.UP_TO_DATE, False, c.PROPOSAL_REJECTED, text + keeps)
    if asked:
        text = "; ".join(
            f"Proposal {a.name} ({a.category}) is {a.state}"
            + (f", {a.votes} approvals" if a.votes else "")
            for a in asked
        )
        return c.Condition(
            c.UP_TO_DATE, False, c.WAITING_FOR_APPROVAL, f"waiting for the members: {text}"
        )
    current = [p for p in pods if p.ordinal < desired]
    on_template = [p for p in current if not _outdated(p, template_image, update_revision)]
    if (
        len(on_template) < desired
        and desired < 2
        and any(p.image != template_image for p in current)
    ):
        return c.Condition(
            c.UP_TO_DATE,
            False,
            c.SCALE_UP_TO_UPGRADE,
            f"one node cannot be replaced by new code without losing the ledger's only voter: "
            f"scale spec.nodes to 3, and the nodes will be rolled to {template_image} one by one",
        )
    if len(on_template) < desired:
        return c.Condition(
            c.UP_TO_DATE,
            False,
            c.ROLLING_NODES,
            f"{len(on_template)}/{desired} nodes run {template_image}",
        )
    return c.Condition(
        c.UP_TO_DATE, True, c.UP_TO_DATE_REASON, f"{desired} nodes run {template_image}"
    )


def asked_for(
    wanted: Mapping[str, tuple[str, str]], proposals: Mapping[str, Mapping[str, Any]]
) -> list[Asked]:
    """``wanted``: Proposal CR name → (intent category, subject); ``proposals``: CR name → its
    status."""
    out = []
    for name, (category, subject) in sorted(wanted.items()):
        st = proposals.get(name) or {}
        out.append(
            Asked(
                name,
                category,
                str(st.get("state") or ProposalState.PENDING),
                str(st.get("reason") or ""),
                str(st.get("votes") or ""),
                subject,
            )
        )
    return out
