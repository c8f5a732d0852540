"""Pass step 1: the Secrets a Consortium needs before any pod runs, created once and never
replaced — the TEE platform's endorsement material (from the platform module,
``nodes.platforms``) and the operator's own member identity (its key signs the Proposals the
operator relays).
"""

from __future__ import annotations

import base64

from consortium_node.attestation import Platform, platforms
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_pem, self_signed_certificate
from consortium_operator.consortium.context import Pass
from consortium_operator.kube import builders
from consortium_operator.kube import platform as platform_pod


def ensure_secrets(p: Pass) -> None:
    """Create the platform root and the operator's identity once; never replace them."""
    platform = platforms.by_name(p.spec.attestation.platform)
    if platform_pod.has_platform_secret(p.spec):
        p.endorsements = _endorsements(p, platform)
    live = p.kube.get("Secret", p.namespace, p.names.operator_secret)
    if live is None:
        key = keys.generate_key("p256")
        cert = self_signed_certificate(key, f"consortium-operator {p.spec.name}")
        manifest = builders.operator_secret(
            p.spec,
            p.namespace,
            p.uid,
            keys.private_key_pem(key),
            certificate_pem(cert).encode(),
        )
        live = p.kube.apply(manifest)
    data = live["data"]
    p.operator_identity = (base64.b64decode(data["tls.key"]), base64.b64decode(data["tls.crt"]))


def _endorsements(p: Pass, platform: Platform) -> dict[str, bytes]:
    """The platform's public endorsement files, from its Secret; an emulated platform's
    material is created here the first time (a hardware platform's comes from its vendor)."""
    live = p.live("Secret", p.names.platform_secret)
    material = None
    if live is None and platform.provision is not None:
        material = platform.provision()
    snp = p.spec.attestation.sev_snp
    if live is None and platform.emulate is not None and snp is not None:
        material = platform.emulate({"device": snp.device, "product": snp.product})
    if material is not None:
        live = p.kube.apply(builders.platform_secret(p.spec, p.namespace, p.uid, material))
        p.event(
            "Normal",
            "PlatformRootCreated",
            f"created the {platform.name} platform endorsements ({', '.join(sorted(material))})",
        )
    files = {k: base64.b64decode(v) for k, v in ((live or {}).get("data") or {}).items()}
    return platform.public(files)
