"""A minimal dynamic volume provisioner for the single-node test cluster.

Why: the local Kubernetes has no storage provisioner, and the in-tree hostPath provisioner
creates directories that only root can write (0750), while node pods run as UID 10001.
This one watches PersistentVolumeClaims of StorageClass ``local-test`` (made the default),
creates a hostPath PersistentVolume for each under VOLUME_ROOT (mode 0777: a test cluster),
and deletes the directory and the PV once the claim is gone (reclaim policy Delete).

Usage: local-provisioner.py KUBECONFIG VOLUME_ROOT   (runs until killed)
"""

import os
import shutil
import sys
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

CLASS = "local-test"
PROVISIONER = "consortium.tee.dev/local-test"


def ensure_class(storage: client.StorageV1Api) -> None:
    body: Any = {  # the client accepts plain dicts as bodies
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
    try:
        storage.create_storage_class(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def as_dicts(items: list[Any]) -> list[dict[str, Any]]:
    """API objects as plain JSON-shaped dicts (the typed models make every field optional)."""
    found: list[dict[str, Any]] = client.ApiClient().sanitize_for_serialization(items)  # type: ignore[no-untyped-call]
    return found


def provision(core: client.CoreV1Api, root: str, pvc: dict[str, Any]) -> None:
    meta = pvc["metadata"]
    name = f"pv-{meta['uid']}"
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)  # noqa: S103 - test cluster volumes, any pod UID may write
    size = pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")
    body: Any = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": pvc["spec"].get("accessModes", ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "hostPath": {"path": path, "type": "Directory"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
    try:
        core.create_persistent_volume(body)
        print(f"provisioned {name} for {meta['namespace']}/{meta['name']}", flush=True)
    except ApiException as exc:
        if exc.status != 409:
            raise


def reclaim(core: client.CoreV1Api, root: str) -> None:
    for pv in as_dicts(core.list_persistent_volume().items):
        name = pv["metadata"]["name"]
        annotations = pv["metadata"].get("annotations") or {}
        if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            continue
        if pv.get("status", {}).get("phase") in ("Released", "Failed"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            try:
                core.delete_persistent_volume(name)
                print(f"deleted {name}", flush=True)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def main() -> None:
    kubeconfig, root = sys.argv[1], sys.argv[2]
    os.makedirs(root, exist_ok=True)
    config.load_kube_config(kubeconfig)  # type: ignore[no-untyped-call]
    core, storage = client.CoreV1Api(), client.StorageV1Api()
    ensure_class(storage)
    while True:
        try:
            claims = core.list_persistent_volume_claim_for_all_namespaces().items
            for pvc in as_dicts(claims):
                spec, phase = pvc["spec"], pvc.get("status", {}).get("phase")
                unbound = phase == "Pending" and not spec.get("volumeName")
                if unbound and spec.get("storageClassName") == CLASS:
                    provision(core, root, pvc)
            reclaim(core, root)
        except Exception as exc:  # keep serving; the API server may be restarting
            print(f"provisioner: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # a pass is two list calls; the cluster is tiny


if __name__ == "__main__":
    main()
