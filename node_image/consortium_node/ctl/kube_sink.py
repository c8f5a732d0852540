"""``consortiumctl … --kube NAME``: a signed document into a Kubernetes object.

The member signs on their own machine, as with ``--out``/``--node``; this only moves the signed
bytes (base64) into the cluster with ``kubectl`` (whatever kubeconfig and identity the member
already uses), where the operator relays them to the consortium:

* a proposal → ``kubectl create`` of ``Proposal NAME`` (spec.consortium, spec.proposal);
* a ballot → appended to ``spec.ballots`` with a JSON patch guarded by the object's
  resourceVersion (a concurrent append fails instead of being lost: run it again);
* a withdrawal → ``spec.withdrawal`` (merge patch);
* an ack → ``spec.acknowledgement`` of the member's own ``Member NAME`` (merge patch), after
  checking that the Member is of this consortium and carries the signer's certificate (so a
  typo in NAME fails here, not as a refusal in the operator's status).

No Kubernetes client library: the node package stays free of it, and ``kubectl`` is what a
cluster user has anyway (``$KUBECTL`` overrides which one).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from typing import Any

from consortium_node.ctl.client import EXIT_USAGE, CtlError
from consortium_node.governance.documents import document_id
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.keys import member_id_of

API_VERSION = "consortium.tee.dev/v1alpha1"


def _kubectl(namespace: str | None, *args: str, stdin: str | None = None) -> str:
    command = [os.environ.get("KUBECTL", "kubectl"), *args]
    if namespace:
        command += ["--namespace", namespace]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed program and our own arguments
            command, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CtlError(f"--kube: cannot run {command[0]}: {exc}", EXIT_USAGE) from exc
    if done.returncode != 0:
        raise CtlError(f"--kube: {' '.join(command[:3])}: {done.stderr.strip()}")
    return done.stdout


def read_proposal(name: str, namespace: str | None) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(_kubectl(namespace, "get", "proposal", name, "-o", "json"))
    return found


def proposal_id_of(obj: dict[str, Any]) -> str:
    """The id of the proposal a Proposal object carries (SHA-256 of its signed bytes)."""
    text = (obj.get("spec") or {}).get("proposal")
    if not isinstance(text, str):
        raise CtlError(f"--kube: Proposal {obj['metadata']['name']} has no spec.proposal")
    return document_id(base64.b64decode(text))


def put(
    name: str, namespace: str | None, payload: dict[str, Any], envelope: bytes
) -> dict[str, Any]:
    """Put ``envelope`` (of ``payload``'s type) into Proposal ``name``; the object after."""
    b64 = base64.b64encode(envelope).decode("ascii")
    kind = payload["type"]
    if kind == "proposal":
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Proposal",
            "metadata": {"name": name},
            "spec": {"consortium": payload["consortium"], "proposal": b64},
        }
        out = _kubectl(namespace, "create", "-f", "-", "-o", "json", stdin=json.dumps(manifest))
        created: dict[str, Any] = json.loads(out)
        return created
    if kind == "ack":
        return put_ack(name, namespace, payload, b64)
    obj = read_proposal(name, namespace)
    carried = proposal_id_of(obj)
    if carried != payload["proposal_id"]:
        raise CtlError(
            f"--kube: Proposal {name} carries proposal {carried[:16]}…, this {kind} is for "
            f"{payload['proposal_id'][:16]}…"
        )
    if kind == "withdrawal":
        patch: Any = {"spec": {"withdrawal": b64}}
        kind_args = ["--type", "merge"]
    else:
        version = obj["metadata"]["resourceVersion"]
        ballots = (obj.get("spec") or {}).get("ballots")
        add = (
            {"op": "add", "path": "/spec/ballots/-", "value": b64}
            if isinstance(ballots, list)
            else {"op": "add", "path": "/spec/ballots", "value": [b64]}
        )
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, add]
        kind_args = ["--type", "json"]
    out = _kubectl(
        namespace, "patch", "proposal", name, *kind_args, "-p", json.dumps(patch), "-o", "json"
    )
    patched: dict[str, Any] = json.loads(out)
    return patched


def put_ack(name: str, namespace: str | None, payload: dict[str, Any], b64: str) -> dict[str, Any]:
    """Put a signed ack into ``Member name``; the Member after. The operator relays it once the
    members have accepted the member (it may go in earlier: it waits there)."""
    found: dict[str, Any] = json.loads(_kubectl(namespace, "get", "member", name, "-o", "json"))
    spec = found.get("spec") or {}
    if spec.get("consortium") != payload["consortium"]:
        raise CtlError(
            f"--kube: Member {name} belongs to consortium {spec.get('consortium')!r}, this ack "
            f"to {payload['consortium']!r}"
        )
    try:
        carried = member_id_of(certificate_der(load_certificate(str(spec.get("certificate")))))
    except (IdentityError, ValueError) as exc:
        raise CtlError(f"--kube: Member {name} has no usable spec.certificate: {exc}") from exc
    if carried != payload["member_id"]:
        raise CtlError(
            f"--kube: Member {name} is member {carried[:16]}…, not the --cert's "
            f"{payload['member_id'][:16]}…: each member acknowledges with its own key"
        )
    patch = {"spec": {"acknowledgement": b64}}
    out = _kubectl(
        namespace, "patch", "member", name, "--type", "merge", "-p", json.dumps(patch), "-o", "json"
    )
    patched: dict[str, Any] = json.loads(out)
    return patched


def read_consortium(name: str, namespace: str | None) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(_kubectl(namespace, "get", "consortium", name, "-o", "json"))
    return found


def put_recovery_share(
    consortium: str, namespace: str | None, member_id: str, b64: str
) -> dict[str, Any]:
    """Put a signed recovery share into the Member of ``consortium`` whose certificate is
    ``member_id``'s (found by its certificate: a share goes to its own member only); the
    Member after. The operator relays it to the recovery node."""
    listed = json.loads(_kubectl(namespace, "get", "members", "-o", "json"))
    for item in listed.get("items", []):
        spec = item.get("spec") or {}
        if spec.get("consortium") != consortium:
            continue
        try:
            carried = member_id_of(certificate_der(load_certificate(str(spec.get("certificate")))))
        except (IdentityError, ValueError):
            continue
        if carried == member_id:
            name = item["metadata"]["name"]
            patch = {"spec": {"recoveryShare": b64}}
            out = _kubectl(
                namespace, "patch", "member", name, "--type", "merge", "-p", json.dumps(patch),
                "-o", "json",
            )  # fmt: skip
            patched: dict[str, Any] = json.loads(out)
            return patched
    raise CtlError(
        f"--kube: no Member of consortium {consortium!r} in this namespace carries the --cert "
        f"(member {member_id[:16]}…): apply your Member first"
    )
