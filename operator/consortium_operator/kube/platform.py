"""What the TEE platform puts in the node configuration and the node pod.

Why its own module: the node configuration's ``platform`` section and the pod's RuntimeClass,
devices, annotations and endorsement volumes depend only on the platform, and adding one
(TDX) must change this file only. ``insecure-virtual``: the emulated root in the platform
Secret. ``sev-snp``: the confidential runtime (``runtimeClassName``), the guest device
(``/dev/sev-guest`` or configfs-tsm, mounted from the guest VM), the runtime's annotations,
AMD endorsements users fetched from KDS (``endorsementsRef``), and — tests only — the
INSECURE emulator's material in the platform Secret.
"""

from __future__ import annotations

from typing import Any

from consortium_node.attestation import platforms
from consortium_operator.api.names import MOUNT_ENDORSEMENTS, MOUNT_PLATFORM, Names
from consortium_operator.api.sev_snp import DEVICE_PATHS
from consortium_operator.api.spec import ConsortiumSpec

HOST_PATH_TYPES = {"sev-guest": "CharDevice", "configfs-tsm": "Directory"}


def has_platform_secret(spec: ConsortiumSpec) -> bool:
    """Whether node pods mount the operator's platform Secret (an emulated platform's
    material; a hardware platform's endorsements come from its vendor)."""
    snp = spec.attestation.sev_snp
    return (
        snp.emulated
        if snp is not None
        else bool(platforms.by_name(spec.attestation.platform).endorsements)
    )


def insecure(spec: ConsortiumSpec) -> bool:
    """Whether the nodes' evidence is emulated (insecure-virtual, or SEV-SNP's emulator):
    whoever reads the platform Secret can forge any node."""
    snp = spec.attestation.sev_snp
    return (
        snp.emulated if snp is not None else platforms.by_name(spec.attestation.platform).insecure
    )


def platform_section(spec: ConsortiumSpec) -> dict[str, Any]:
    """The node configuration's ``platform``: its name, where each endorsement file is
    mounted (optional files may be absent there), and the platform's own section."""
    att = spec.attestation
    platform = platforms.by_name(att.platform)
    section: dict[str, Any] = {"name": att.platform}
    snp = att.sev_snp
    for e in platform.endorsements:
        if snp is None:
            section[e.config_key] = f"{MOUNT_PLATFORM}/{e.file}"
        elif e.emulator:
            if snp.emulated:
                section[e.config_key] = f"{MOUNT_PLATFORM}/{e.file}"
        elif snp.endorsements_secret is not None:
            section[e.config_key] = f"{MOUNT_ENDORSEMENTS}/{e.file}"
    if snp is not None:
        section["sev_snp"] = snp.node_section()
    return section


PLATFORM_MOUNT = {"name": "platform", "mountPath": MOUNT_PLATFORM, "readOnly": True}


def platform_volume(names: Names) -> dict[str, Any]:
    """The platform Secret (``has_platform_secret``), readable by the node's group."""
    secret = {"secretName": names.platform_secret, "defaultMode": 0o440}
    return {"name": "platform", "secret": secret}


def add_to_pod(
    spec: ConsortiumSpec,
    pod: dict[str, Any],
    container: dict[str, Any],
    template_meta: dict[str, Any],
) -> None:
    """A hardware platform's volumes, mounts, RuntimeClass and annotations on the node pod."""
    mounts, volumes = container["volumeMounts"], pod["volumes"]
    snp = spec.attestation.sev_snp
    if snp is None:
        return
    if snp.endorsements_secret is not None:
        mounts.append({"name": "endorsements", "mountPath": MOUNT_ENDORSEMENTS, "readOnly": True})
        volumes.append(
            {
                "name": "endorsements",
                "secret": {"secretName": snp.endorsements_secret, "defaultMode": 0o440},
            }
        )
    if not snp.emulated:
        _, path = DEVICE_PATHS[snp.device]
        mounts.append({"name": "tee-device", "mountPath": path})
        volumes.append(
            {"name": "tee-device", "hostPath": {"path": path, "type": HOST_PATH_TYPES[snp.device]}}
        )
    if snp.runtime_class_name is not None:
        pod["runtimeClassName"] = snp.runtime_class_name
    template_meta["annotations"].update(snp.pod_annotations)
