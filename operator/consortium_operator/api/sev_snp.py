"""``spec.attestation.sevSnp`` → what SEV-SNP node pods need, or ``SpecError`` naming the field.

Why its own module: only a Consortium on ``platform: sev-snp`` has these settings, and they
decide three things at once — the ledger's SEV-SNP policy at genesis (minimum TCB per product,
debug, VMPL, products; ``consortium_node.attestation.sev_snp.policy`` validates it, the same
code the nodes run), the node configuration's ``platform.sev_snp`` section (where reports come
from), and the pod template (RuntimeClass of the confidential runtime, the guest device,
annotations the runtime reads, the endorsements Secret).

Fields (camelCase in the CRD)::

    device            sev-guest (default) | configfs-tsm | insecure-emulator (tests only)
    runtimeClassName  the confidential-containers RuntimeClass (e.g. kata-qemu-snp)
    minimumTcb        {Milan|Genoa|Turin: {bootloader, tee, snp, microcode[, fmc]}}
    allowDebug        false
    vmpl              0
    products          [Milan, Genoa, Turin] (default all)
    endorsementsRef   {name}: a Secret with vceks.pem and/or crls.pem (from AMD KDS)
    podAnnotations    annotations the confidential runtime reads (e.g. its initdata)
    insecureEmulator  {product, reportVersion}: the emulated processor (device
                      insecure-emulator only)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consortium_node.attestation.sev_snp import SnpPolicy
from consortium_node.attestation.sev_snp.tcb import PRODUCTS

DEVICES = ("sev-guest", "configfs-tsm", "insecure-emulator")
# device → (node configuration key, path in the guest)
DEVICE_PATHS = {
    "sev-guest": ("sev_guest_path", "/dev/sev-guest"),
    "configfs-tsm": ("configfs_path", "/sys/kernel/config/tsm/report"),
}
REPORT_VERSIONS = (2, 3, 5)
SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ANNOTATION_KEY_RE = re.compile(
    r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_KEYS = ("device", "runtimeClassName", "minimumTcb", "allowDebug", "vmpl", "products",
         "endorsementsRef", "podAnnotations", "insecureEmulator")  # fmt: skip
MEASUREMENT_HEX = {"insecure-virtual": 64, "sev-snp": 96}


class SevSnpSpecError(ValueError):
    """``field`` (dotted, from ``spec.``) and why; ``api.spec`` turns it into a SpecError."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class SevSnpSpec:
    device: str = "sev-guest"
    runtime_class_name: str | None = None
    policy: Mapping[str, Any] = field(default_factory=lambda: SnpPolicy().to_json())
    endorsements_secret: str | None = None
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    product: str = "Genoa"  # the emulated processor (insecure-emulator)
    report_version: int = 3

    @property
    def emulated(self) -> bool:
        return self.device == "insecure-emulator"

    def node_section(self) -> dict[str, Any]:
        """The node configuration's ``platform.sev_snp``."""
        section: dict[str, Any] = {"device": self.device, "vmpl": self.policy["vmpl"],
                                   "policy": dict(self.policy)}  # fmt: skip
        if self.emulated:
            section["emulator"] = {"report_version": self.report_version}
        else:
            key, path = DEVICE_PATHS[self.device]
            section[key] = path
        return section


WHERE = "spec.attestation.sevSnp"


def _choice(value: Any, where: str, choices: tuple[Any, ...], default: Any) -> Any:
    if value is None:
        return default
    if value not in choices or isinstance(value, bool):
        raise SevSnpSpecError(where, f"{value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _annotations(value: Any) -> dict[str, str]:
    where = f"{WHERE}.podAnnotations"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SevSnpSpecError(where, "expected a map of annotation names to strings")
    for key, text in value.items():
        if not isinstance(key, str) or not ANNOTATION_KEY_RE.match(key):
            raise SevSnpSpecError(f"{where}[{key!r}]", "not a valid annotation name")
        if key.startswith("consortium.tee.dev/"):
            raise SevSnpSpecError(
                f"{where}[{key!r}]", "the consortium.tee.dev/ prefix is the operator's"
            )
        if not isinstance(text, str):
            raise SevSnpSpecError(f"{where}[{key!r}]", "expected a string value")
    return dict(value)


def _policy(value: Mapping[str, Any]) -> dict[str, Any]:
    snake = {
        "minimum_tcb": value.get("minimumTcb") or {},
        "allow_debug": value.get("allowDebug", False),
        "vmpl": value.get("vmpl", 0),
        "products": value.get("products") or list(PRODUCTS),
    }
    try:
        return SnpPolicy.from_json(snake, "sev_snp").to_json()
    except ValueError as exc:  # "sev_snp.minimum_tcb.Milan.fmc: …" → the CRD's names
        where, _, why = str(exc).partition(": ")
        names = {"sev_snp": WHERE, "minimum_tcb": "minimumTcb", "allow_debug": "allowDebug"}
        path = ".".join(names.get(part, part) for part in where.split("."))
        raise SevSnpSpecError(path, why) from None


def parse_sev_snp(value: Any, platform: str) -> SevSnpSpec | None:
    """The SEV-SNP settings of a Consortium on ``platform``; None for another platform."""
    if platform != "sev-snp":
        if value is not None:
            raise SevSnpSpecError(WHERE, f"applies to platform sev-snp only (this is {platform})")
        return None
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise SevSnpSpecError(WHERE, "expected an object")
    for key in value:
        if key not in _KEYS:
            raise SevSnpSpecError(f"{WHERE}.{key}", f"unknown field (known: {', '.join(_KEYS)})")
    device = _choice(value.get("device"), f"{WHERE}.device", DEVICES, "sev-guest")
    runtime = value.get("runtimeClassName")
    if runtime is not None and (not isinstance(runtime, str) or not SUBDOMAIN_RE.match(runtime)):
        raise SevSnpSpecError(
            f"{WHERE}.runtimeClassName", f"{runtime!r} is not a RuntimeClass name"
        )
    ref = value.get("endorsementsRef")
    secret = None
    if ref is not None:
        secret = ref.get("name") if isinstance(ref, Mapping) else None
        if not isinstance(secret, str) or not SUBDOMAIN_RE.match(secret) or set(ref) != {"name"}:
            raise SevSnpSpecError(f"{WHERE}.endorsementsRef", "expected {name: <Secret name>}")
    emu = value.get("insecureEmulator")
    if emu is not None and device != "insecure-emulator":
        raise SevSnpSpecError(
            f"{WHERE}.insecureEmulator", "applies to device insecure-emulator only"
        )
    emu = emu or {}
    if not isinstance(emu, Mapping) or set(emu) - {"product", "reportVersion"}:
        raise SevSnpSpecError(f"{WHERE}.insecureEmulator", "expected {product, reportVersion}")
    return SevSnpSpec(
        device=device,
        runtime_class_name=runtime,
        policy=_policy(value),
        endorsements_secret=secret,
        pod_annotations=_annotations(value.get("podAnnotations")),
        product=_choice(emu.get("product"), f"{WHERE}.insecureEmulator.product", PRODUCTS, "Genoa"),
        report_version=_choice(
            emu.get("reportVersion"), f"{WHERE}.insecureEmulator.reportVersion", REPORT_VERSIONS, 3
        ),
    )
