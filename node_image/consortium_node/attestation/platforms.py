"""The TEE-platform registry: every platform this code knows, under its name and its evidence
format. The node, ``consortiumctl`` and the operator all obtain platforms and verifiers here,
so adding a platform (TDX) is one more platform package plus one line in ``_KNOWN``; no caller
changes.

A platform is one subpackage of ``attestation`` (``insecure_virtual`` today) exporting
``PLATFORM``, a ``Platform`` record of:

* ``name``: the label users see — ``spec.attestation.platform``, the node's ``platform.name``
  setting, the ``platform`` label of metrics, claims and status;
* ``evidence_format``: the ``format`` of its quotes, which the verifier registry dispatches on;
* ``endorsements``: the material the operator provides to node pods (a Secret mounted as
  files), each with its node-configuration key, its ``consortiumctl`` flag and whether it is
  private (private material is never put in a ConfigMap, a status or a log, and is never
  given to verifiers);
* ``verifier``: builds its ``QuoteVerifier`` from the public endorsement material;
* ``attester``: builds the node-side ``Attester`` (quotes and sealing) from ``AttesterSettings``;
* ``provision``: creates fresh endorsement material — only an emulated platform can; a
  hardware platform's endorsements come from its vendor (None);
* ``emulate``: a hardware platform's INSECURE test emulator material, for the platform
  options that ask for the emulator (None otherwise, and for platforms without one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from consortium_node.attestation.faults import Fault
from consortium_node.attestation.verifier import QuoteVerifier, VerifierRegistry


class UnknownPlatformError(ValueError):
    """A platform name that no registered platform has; the message lists the known ones."""


@dataclass(frozen=True)
class Endorsement:
    """One file of a platform's endorsement material."""

    file: str  # key in the endorsement Secret and file name in the pods' mount, e.g. "root.pem"
    config_key: str  # the node configuration's ``platform.<config_key>`` path setting
    cli_flag: str | None  # ``consortiumctl quote verify`` flag giving it (public material only)
    private: bool  # True: only ever in a Secret and the node's memory
    description: str
    optional: bool = False  # the platform works without it (e.g. a host gives it instead)
    emulator: bool = False  # material of the platform's INSECURE test emulator, never hardware's


@dataclass(frozen=True)
class AttesterSettings:
    """What a node knows when it creates its attester."""

    chip_id: str
    tcb_version: int
    measurement: str  # hex, of the code this node runs
    host_data: str  # hex, what the launcher bound to this node (consortium and mode)
    endorsements: Mapping[str, bytes]  # Endorsement.file → content (optional ones may miss)
    faults: frozenset[Fault] = frozenset()
    options: Mapping[str, Any] = field(default_factory=dict)  # the platform's own settings


class Evidence(Protocol):
    """A quote as the attester made it."""

    def to_json(self) -> dict[str, Any]: ...


class Attester(Protocol):
    """The node side of a platform: evidence binding a key and a nonce, and sealing."""

    platform_name: str

    @property
    def measurement(self) -> str: ...

    @property
    def host_data(self) -> str: ...

    @property
    def can_seal(self) -> bool: ...

    def quote(self, public_key_der: bytes, nonce: bytes) -> Evidence: ...

    def seal(self, plaintext: bytes, label: str) -> bytes: ...

    def unseal(self, blob: bytes, label: str) -> bytes: ...

    def set_faults(self, faults: Iterable[Fault]) -> None: ...


@dataclass(frozen=True)
class Platform:
    name: str
    evidence_format: str
    insecure: bool
    endorsements: tuple[Endorsement, ...]
    verifier: Callable[[Mapping[str, bytes]], QuoteVerifier]
    attester: Callable[[AttesterSettings], Attester]
    provision: Callable[[], dict[str, bytes]] | None = field(default=None)
    emulate: Callable[[Mapping[str, Any]], dict[str, bytes] | None] | None = field(default=None)

    def public(self, material: Mapping[str, bytes]) -> dict[str, bytes]:
        """The endorsement files a verifier may see (private ones left out)."""
        private = {e.file for e in self.endorsements if e.private}
        return {k: v for k, v in material.items() if k not in private}


def _known() -> tuple[Platform, ...]:
    from consortium_node.attestation import insecure_virtual, sev_snp  # noqa: PLC0415

    return (insecure_virtual.PLATFORM, sev_snp.PLATFORM)


_KNOWN = _known()
DEFAULT = _KNOWN[0].name


def names() -> tuple[str, ...]:
    """Every registered platform's name, the default first."""
    return tuple(p.name for p in _KNOWN)


def by_name(name: str) -> Platform:
    """The platform called ``name``; ``UnknownPlatformError`` naming the known ones."""
    for platform in _KNOWN:
        if platform.name == name:
            return platform
    raise UnknownPlatformError(f"{name!r} is not one of the known platforms {names()}")


def by_format(evidence_format: str) -> Platform | None:
    """The platform whose quotes have this ``format``, if any."""
    return next((p for p in _KNOWN if p.evidence_format == evidence_format), None)


def verifier_registry(material: Mapping[str, Mapping[str, bytes]]) -> VerifierRegistry:
    """A registry with a verifier for each platform named in ``material`` (platform name →
    its endorsement files), built from the public files only."""
    registry = VerifierRegistry()
    for name, files in material.items():
        platform = by_name(name)
        registry.register(platform.verifier(platform.public(files)))
    return registry
