"""The only module that talks to the Kubernetes API (through the official client); the
import-linter contract "Only kube.k8s talks to the Kubernetes client" keeps it so.

Writes are server-side apply under one field manager (``consortium-operator``), status
patches, deletions and Events; each is counted in ``consortium_operator_api_writes_total`` so
tests and the benchmark can prove that a steady-state reconcile writes nothing.
``apply_if_changed`` decides whether an apply is needed at all: a desired manifest already
contained in the live object (``contains``: quantities compared by value) is not sent.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from consortium_operator.api import metrics
from consortium_operator.api.names import FIELD_MANAGER, GROUP, VERSION


@dataclass(frozen=True)
class Kind:
    group_version: str  # "v1", "apps/v1", ...
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base if name is None else f"{base}/{name}"


KINDS: dict[str, Kind] = {
    "Secret": Kind("v1", "secrets"),
    "ConfigMap": Kind("v1", "configmaps"),
    "Service": Kind("v1", "services"),
    "Pod": Kind("v1", "pods"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "Event": Kind("v1", "events"),
    "StatefulSet": Kind("apps/v1", "statefulsets"),
    "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies"),
    "PodDisruptionBudget": Kind("policy/v1", "poddisruptionbudgets"),
    "Consortium": Kind(f"{GROUP}/{VERSION}", "consortia"),
    "Member": Kind(f"{GROUP}/{VERSION}", "members"),
    "Proposal": Kind(f"{GROUP}/{VERSION}", "proposals"),
    "ConsortiumBackup": Kind(f"{GROUP}/{VERSION}", "consortiumbackups"),
    "Namespace": Kind("v1", "namespaces", namespaced=False),
}


# Accept header of a metadata-only read: the API server answers with the object's
# PartialObjectMetadata (names, labels, resourceVersion), never its data.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    """A thin JSON client: get, list, apply, delete, status, events, discovery."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        if api is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        self.api = api
        self._pdb_version: str | None = None

    # ------------------------------------------------------------------ transport
    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        request = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*request, _request_timeout=30)
            data = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise ApiError(exc.status or 0, str(exc.reason)) from None
        if not 200 <= response.status < 300:
            message = data.decode("utf-8", "replace")[:500] if data else ""
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(data).get("message", message)
            raise ApiError(response.status, message)
        return json.loads(data) if data else None

    def _write(self, verb: str, kind: str) -> None:
        metrics.API_WRITES.labels(verb, kind).inc()

    # ------------------------------------------------------------------ reads
    def get(
        self, kind: str, namespace: str | None, name: str, *, metadata_only: bool = False
    ) -> dict[str, Any] | None:
        """The object, or None if there is none. ``metadata_only``: only its metadata (the
        operator checks that a user's Secret exists without ever reading its data)."""
        accept = METADATA_ONLY if metadata_only else "application/json"
        try:
            found: dict[str, Any] = self._call(
                "GET", self._kind(kind).path(namespace, name), accept=accept
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def namespace_terminating(self, namespace: str) -> bool:
        """The namespace is being deleted (or already gone): everything in it goes, and the
        operator's Role there may already be gone with it."""
        try:
            found = self.get("Namespace", None, namespace)
        except ApiError as exc:
            if exc.status == 403:  # no right to read namespaces (cluster-wide mode): its
                return False  # ClusterRole outlives any namespace, so carry on as usual
            raise
        return found is None or found["metadata"].get("deletionTimestamp") is not None

    def list(
        self, kind: str, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = []
        if selector:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items())))
        found = self._call("GET", self._kind(kind).path(namespace), query=query)
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def pdb_api_version(self) -> str:
        """``policy/v1`` where served (Kubernetes ≥ 1.21), else ``policy/v1beta1``."""
        if self._pdb_version is None:
            try:
                found = self._call("GET", "/apis/policy/v1")
                names = {r.get("name") for r in found.get("resources", [])}
                self._pdb_version = (
                    "policy/v1" if "poddisruptionbudgets" in names else "policy/v1beta1"
                )
            except ApiError:
                self._pdb_version = "policy/v1beta1"
        return self._pdb_version

    def _kind(self, kind: str) -> Kind:
        if kind == "PodDisruptionBudget":
            return Kind(self.pdb_api_version(), "poddisruptionbudgets")
        return KINDS[kind]

    # ------------------------------------------------------------------ writes
    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a whole manifest under the operator's field manager."""
        meta = manifest["metadata"]
        kind = self._kind(str(manifest["kind"]))
        self._write("apply", str(manifest["kind"]))
        result: dict[str, Any] = self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=json.dumps(manifest),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return result

    def apply_if_changed(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
        """Apply only when ``manifest`` is not already contained in ``live``; True if sent."""
        if live is not None and contains(live, manifest):
            return False
        self.apply(manifest)
        return True

    def delete(
        self, kind: str, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete (background propagation: owned objects go after it); False if already gone
        or no longer the object ``uid`` names (a guard against deleting a re-created one)."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        self._write("delete", kind)
        try:
            self._call("DELETE", self._kind(kind).path(namespace, name), body=body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._write("patch-status", kind)
        self._call(
            "PATCH",
            self._kind(kind).path(namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    def event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        now: str,
    ) -> None:
        """Record a core/v1 Event on ``involved`` (a Consortium, Member or Proposal body)."""
        meta = involved["metadata"]
        self._write("create", "Event")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME", FIELD_MANAGER),
        }
        with contextlib.suppress(ApiError):  # best effort; the status carries the same facts
            self._call("POST", KINDS["Event"].path(meta["namespace"]), body=body)


# ---------------------------------------------------------------------- comparison
def _same_scalar(desired: Any, live: Any) -> bool:
    if isinstance(desired, bool) or isinstance(live, bool):
        return type(desired) is type(live) and desired == live
    if desired == live:
        return True
    if isinstance(desired, (str, int)) and isinstance(live, (str, int)):
        try:
            same: bool = parse_quantity(desired) == parse_quantity(live)  # type: ignore[no-untyped-call]
            return same
        except (ValueError, TypeError, ArithmeticError):
            return False
    return False


def contains(live: Any, desired: Any) -> bool:
    """Is every field of ``desired`` present with the same value in ``live``?

    Mappings: a subset check (the API server adds defaults and status). Lists: the same
    length and element-wise containment (so a removed item is a change). Scalars: equal, or
    equal as Kubernetes quantities (``0.5`` and ``500m``).
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(lv, dv) for lv, dv in zip(live, desired, strict=True))
    return _same_scalar(desired, live)
