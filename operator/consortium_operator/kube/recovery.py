"""What ``spec.recovery`` adds to a Consortium's manifests (``docs/recovery.md``).

Why a module of its own: these pieces matter only for the first pod of a Consortium that
starts by recovering a lost one, and ``builders`` stays the shape of an ordinary one. Pod 0
runs in mode ``recover`` while no service certificate is published (the node decides it from
what is mounted, ``consortium_node.server.kube``); every later start joins or restarts, so the
section stays in the configuration harmlessly after the recovery.

* the node configuration's ``recovery:`` section: the previous service certificate and the
  CA bundle (files of the config ConfigMap: public), the bucket and its credentials (files of
  the user's Secret, mounted read-only and optional: a missing Secret makes the recovery node
  fail naming ``CredentialsMissing``, and kubelet adds the files once it exists);
* the ConfigMap keys and the Secret volume.
"""

from __future__ import annotations

from typing import Any

from consortium_operator.api.names import (
    BACKUP_CREDENTIAL_KEYS,
    MOUNT_CONFIG,
    MOUNT_RECOVERY_CREDENTIALS,
    RECOVERY_CA_KEY,
    RECOVERY_PREVIOUS_KEY,
)
from consortium_operator.api.spec import ConsortiumSpec


def recovery_config(spec: ConsortiumSpec) -> dict[str, Any] | None:
    """The node configuration's ``recovery:`` section (None without ``spec.recovery``)."""
    recovery = spec.recovery
    if recovery is None:
        return None
    bucket = recovery.s3.node_section(
        MOUNT_RECOVERY_CREDENTIALS, f"{MOUNT_CONFIG}/{RECOVERY_CA_KEY}"
    )
    section: dict[str, Any] = {
        "previous_service_certificate": f"{MOUNT_CONFIG}/{RECOVERY_PREVIOUS_KEY}",
        "source": {"bucket": bucket},
    }
    if recovery.manifest is not None:
        section["manifest"] = recovery.manifest
    return section


def config_map_data(spec: ConsortiumSpec) -> dict[str, str]:
    """The config ConfigMap's recovery keys (public material only)."""
    recovery = spec.recovery
    if recovery is None:
        return {}
    data = {RECOVERY_PREVIOUS_KEY: recovery.previous_service_certificate}
    if recovery.s3.ca_bundle is not None:
        data[RECOVERY_CA_KEY] = recovery.s3.ca_bundle
    return data


def add_credentials(
    spec: ConsortiumSpec, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> None:
    """The lost consortium's bucket credentials: only its two keys, read-only, optional."""
    if spec.recovery is None:
        return
    container["volumeMounts"].append(
        {"name": "recovery-credentials", "mountPath": MOUNT_RECOVERY_CREDENTIALS, "readOnly": True}
    )
    volumes.append(
        {
            "name": "recovery-credentials",
            "secret": {
                "secretName": spec.recovery.s3.credentials_secret,
                "optional": True,
                "defaultMode": 0o440,
                "items": [{"key": key, "path": key} for key in BACKUP_CREDENTIAL_KEYS],
            },
        }
    )
