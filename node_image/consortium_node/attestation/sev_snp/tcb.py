"""SEV-SNP products and their TCB_VERSION layout.

Why its own module: the 8 bytes of a TCB_VERSION mean different things on different
processor families, so reading a minimum TCB, a report's reported TCB or a VCEK's SPL
extensions needs the product first. Layouts (AMD SEV-SNP ABI specification 56860
"TCB_VERSION"; google/go-sev-guest ``kds/kds.go`` @ 63391106 ``DecomposeTCBVersion``;
microsoft/CCF ``src/pal/test/snp_attestation_validation.cpp`` @ 16599edd, which parses
Turin ``0x1100000022334455`` as fmc 0x55, bootloader 0x44, tee 0x33, snp 0x22,
microcode 0x11)::

    byte   Milan, Genoa (family 19h)   Turin (family 1Ah)
    0      BOOT_LOADER                 FMC
    1      TEE                         BOOT_LOADER
    2      reserved                    TEE
    3      reserved                    SNP
    4..5   reserved                    reserved
    6      SNP                         reserved
    7      MICROCODE                   MICROCODE

Products are identified by the VCEK's ``productName`` extension ("Milan-B0" → Milan) and,
in reports of version 3 and later, by CPUID family and model (family 0x19 model 0x0X Milan,
0x19 model 0x1X Genoa, family 0x1A Turin; go-sev-guest ``abi.go``; Genoa's Zen 4c siblings
Bergamo and Siena, family 0x19 model 0xAX, are endorsed as Genoa).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MILAN, GENOA, TURIN = "Milan", "Genoa", "Turin"
PRODUCTS = (MILAN, GENOA, TURIN)
COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")

_BYTES_19H = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_BYTES_1AH = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}


def layout(product: str) -> Mapping[str, int]:
    """Component → byte index of a TCB_VERSION on ``product``."""
    return _BYTES_1AH if product == TURIN else _BYTES_19H


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION decoded for one product (``fmc`` only on Turin)."""

    product: str
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, value: int, product: str) -> Tcb:
        raw = value.to_bytes(8, "little")
        parts = {name: raw[index] for name, index in layout(product).items()}
        return cls(product=product, **parts)

    def encode(self) -> int:
        """The u64 TCB_VERSION (reserved bytes zero)."""
        raw = bytearray(8)
        for name, index in layout(self.product).items():
            raw[index] = getattr(self, name) or 0
        return int.from_bytes(raw, "little")

    def components(self) -> dict[str, int]:
        """Component → SPL (``fmc`` only where the product has it)."""
        return {name: getattr(self, name) for name in COMPONENTS if name in layout(self.product)}

    def below(self, minimum: Mapping[str, int]) -> list[str]:
        """``"snp 3 < 8"`` for each component under ``minimum`` (components the product does
        not have are ignored)."""
        mine = self.components()
        return [
            f"{name} {mine[name]} < {floor}"
            for name, floor in minimum.items()
            if name in mine and mine[name] < floor
        ]


def product_of_name(product_name: str) -> str | None:
    """The product of a VCEK ``productName`` ("Milan-B0", "Genoa", "Turin-B1"), if known."""
    stem = product_name.split("-", 1)[0]
    return stem if stem in PRODUCTS else None


def product_of_cpuid(family: int, model: int) -> str | None:
    """The product of a report's CPUID family/model (versions >= 3), if known."""
    if family == 0x19:  # Zen 3 Milan 0x0X; Zen 4 Genoa 0x1X and Bergamo/Siena 0xAX (Genoa VCEKs)
        return {0x0: MILAN, 0x1: GENOA, 0xA: GENOA}.get(model >> 4)
    if family == 0x1A:
        return TURIN
    return None


def cpuid_of(product: str) -> tuple[int, int, int]:
    """A CPUID (family, model, stepping) of ``product`` (for the emulator)."""
    return {MILAN: (0x19, 0x01, 1), GENOA: (0x19, 0x11, 1), TURIN: (0x1A, 0x02, 0)}[product]
