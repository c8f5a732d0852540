"""What a consortium accepts from SEV-SNP hardware beyond the generic policy: minimum TCB per
product and component, the debug bit, the VMPL, the processor products.

Why its own record: these settings only mean something for SEV-SNP, so the generic
``Policy`` carries them opaquely (``Policy.platform["sev-snp"]``) and only this platform reads
them. They live in the ledger's attestation policy (set at genesis from the node
configuration, which the operator renders from ``spec.attestation.sevSnp``), so every node
judges a joiner by the same values.

JSON (snake_case, every key optional)::

    {"minimum_tcb": {"Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}, ...},
     "allow_debug": false, "vmpl": 0, "products": ["Milan", "Genoa", "Turin"]}

``minimum_tcb`` is per product because SPL numbers are (Milan's microcode 219 is not
Genoa's 84); a product without an entry has no minimum. ``fmc`` applies to Turin only.
``vmpl`` is the privilege level reports must come from (0: the guest kernel itself, not a
lower-privileged layer). ``products`` empty or absent means all known products.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consortium_node.attestation.sev_snp.tcb import COMPONENTS, PRODUCTS, TURIN

PLATFORM_NAME = "sev-snp"
_KEYS = ("minimum_tcb", "allow_debug", "vmpl", "products")


def _int(value: object, where: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"{where}: must be an integer 0..{high}, got {value!r}")
    return value


def _minimum(value: object, where: str) -> dict[str, dict[str, int]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be an object of product → components")
    out: dict[str, dict[str, int]] = {}
    for product, parts in value.items():
        if product not in PRODUCTS:
            raise ValueError(f"{where}.{product}: unknown product (known: {', '.join(PRODUCTS)})")
        if not isinstance(parts, Mapping):
            raise ValueError(f"{where}.{product}: must be an object of component → SPL")
        for name, spl in parts.items():
            if name not in COMPONENTS or (name == "fmc" and product != TURIN):
                raise ValueError(f"{where}.{product}.{name}: not a TCB component of {product}")
            _int(spl, f"{where}.{product}.{name}", 255)
        out[str(product)] = {str(k): int(v) for k, v in parts.items()}
    return out


@dataclass(frozen=True)
class SnpPolicy:
    minimum_tcb: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    allow_debug: bool = False
    vmpl: int = 0
    products: frozenset[str] = frozenset(PRODUCTS)

    @classmethod
    def from_json(cls, value: object, where: str = "sev_snp") -> SnpPolicy:
        """Parse and check; ``ValueError`` naming the dotted field otherwise."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: must be an object")
        for key in value:
            if key not in _KEYS:
                raise ValueError(f"{where}.{key}: unknown setting (known: {', '.join(_KEYS)})")
        debug = value.get("allow_debug", False)
        if not isinstance(debug, bool):
            raise ValueError(f"{where}.allow_debug: must be true or false")
        products = value.get("products") or list(PRODUCTS)
        if not isinstance(products, list) or any(p not in PRODUCTS for p in products):
            raise ValueError(f"{where}.products: must list products of {', '.join(PRODUCTS)}")
        return cls(
            minimum_tcb=_minimum(value.get("minimum_tcb", {}), f"{where}.minimum_tcb"),
            allow_debug=debug,
            vmpl=_int(value.get("vmpl", 0), f"{where}.vmpl", 3),
            products=frozenset(products),
        )

    def to_json(self) -> dict[str, Any]:
        """Canonical form (sorted products, every key present)."""
        return {
            "minimum_tcb": {
                p: dict(sorted(c.items())) for p, c in sorted(self.minimum_tcb.items())
            },
            "allow_debug": self.allow_debug,
            "vmpl": self.vmpl,
            "products": sorted(self.products),
        }
