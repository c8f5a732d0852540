"""A recovered service's endorsement of the service identity it replaced.

Why: a disaster recovery (``docs/recovery.md``) starts the consortium again under a **new**
service identity, since the old service key was sealed to nodes that are gone. Receipts issued
before the disaster are signed by node certificates the *previous* service certificate issued;
they must stay verifiable. The new identity therefore signs, once, a statement naming the
previous certificate and the last transaction recovered under it, and the recovery entry writes
it into the ledger (``public:consortium.previous_services``). A verifier that trusts only the
current service certificate walks the chain back (current → previous → the one before …) and
checks an old receipt with the certificate in force when its transaction was written.

Envelope: COSE_Sign1 (``cose.sign1``) by the new service key, ``kid`` = SHA-256 of its SPKI,
content type ``application/json``, payload the canonical JSON::

    {"type": "service_endorsement", "consortium": C,
     "service_certificate_sha256": <new cert, hex>,
     "previous_service_certificate_sha256": <previous cert, hex>,
     "last_txid": "<term>.<index>"}        # the last transaction recovered from the previous

A history record (one per recovery, as the ledger and ``GET /recovery`` hold it, and as
``consortiumctl verify-receipt --service-history`` reads it)::

    {"certificate": <previous service certificate PEM>, "last_txid": "t.i",
     "endorsement": base64(envelope)}
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.common.canonical import canonical_json
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_pem,
    certificate_sha256,
    load_certificate,
)
from consortium_node.identity.cose import sign1, verify_sign1
from consortium_node.identity.errors import IdentityError

ENDORSEMENT_TYPE = "service_endorsement"
PAYLOAD_FIELDS = frozenset(
    {
        "type",
        "consortium",
        "service_certificate_sha256",
        "previous_service_certificate_sha256",
        "last_txid",
    }
)
RECORD_FIELDS = frozenset({"certificate", "last_txid", "endorsement"})


class EndorsementError(IdentityError):
    """An endorsement or a history record does not verify; the message says which and why."""


@dataclass(frozen=True)
class Endorsement:
    """What a verified endorsement says."""

    consortium: str
    service_certificate_sha256: str
    previous_service_certificate_sha256: str
    last_txid: str

    @property
    def last_index(self) -> int:
        return int(self.last_txid.split(".")[1])


_TXID = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


def _check_txid(value: object, what: str) -> str:
    if not isinstance(value, str) or _TXID.fullmatch(value) is None:
        raise EndorsementError(f"{what}: {value!r} is not a txid <term>.<index>")
    parts = value.split(".")
    if int(parts[0]) < 1 or int(parts[1]) < 1:
        raise EndorsementError(f"{what}: {value!r} is not a txid (term and index start at 1)")
    return str(value)


def endorse(
    service: ServiceIdentity, consortium: str, previous: x509.Certificate, last_txid: str
) -> bytes:
    """The new ``service``'s endorsement of ``previous`` up to ``last_txid``."""
    payload = {
        "type": ENDORSEMENT_TYPE,
        "consortium": consortium,
        "service_certificate_sha256": service.certificate_sha256,
        "previous_service_certificate_sha256": certificate_sha256(previous),
        "last_txid": _check_txid(last_txid, "last_txid"),
    }
    return sign1(service.key, canonical_json(payload), kid=service.kid)


def verify_endorsement(envelope: bytes, service_certificate: x509.Certificate) -> Endorsement:
    """Check ``envelope`` was signed by ``service_certificate``'s key and names it."""
    key = service_certificate.public_key()
    try:
        message = verify_sign1(envelope, key)  # type: ignore[arg-type]  # checked by verify_sign1
    except IdentityError as exc:
        raise EndorsementError(f"endorsement: {exc}") from exc
    try:
        payload = json.loads(message.payload)
    except ValueError as exc:
        raise EndorsementError(f"endorsement: the payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or set(payload) != PAYLOAD_FIELDS:
        raise EndorsementError(f"endorsement: the payload must have {sorted(PAYLOAD_FIELDS)}")
    if payload["type"] != ENDORSEMENT_TYPE:
        raise EndorsementError(f"endorsement: type {payload['type']!r}, not {ENDORSEMENT_TYPE!r}")
    if payload["service_certificate_sha256"] != certificate_sha256(service_certificate):
        raise EndorsementError(
            "endorsement: signed for service certificate "
            f"{payload['service_certificate_sha256']}, not this one"
        )
    strings = all(isinstance(payload[k], str) for k in PAYLOAD_FIELDS)
    if not strings:
        raise EndorsementError("endorsement: every payload field must be a string")
    return Endorsement(
        consortium=payload["consortium"],
        service_certificate_sha256=payload["service_certificate_sha256"],
        previous_service_certificate_sha256=payload["previous_service_certificate_sha256"],
        last_txid=_check_txid(payload["last_txid"], "endorsement.last_txid"),
    )


def history_record(previous: x509.Certificate, last_txid: str, envelope: bytes) -> dict[str, Any]:
    """One history record (module docstring)."""
    return {
        "certificate": certificate_pem(previous),
        "last_txid": _check_txid(last_txid, "last_txid"),
        "endorsement": base64.b64encode(envelope).decode("ascii"),
    }


@dataclass(frozen=True)
class Era:
    """A service identity and the last transaction written under it (None: the current one)."""

    certificate: x509.Certificate
    last_index: int | None


def eras(
    service_certificate: x509.Certificate,
    records: Sequence[Mapping[str, Any]],
    consortium: str | None = None,
) -> list[Era]:
    """The chain of service identities from the current one back, each verified by the one
    after it: ``[current, previous, the one before …]``. ``records`` may come in any order;
    each must be endorsed by a certificate already in the chain, and each older identity must
    end before the one that replaced it. EndorsementError if one does not verify, is not an
    object, or is left over (endorsed by no certificate of the chain)."""
    pending = [_parsed(r) for r in records]
    chain = [Era(service_certificate, None)]
    while pending:
        current = chain[-1]
        found = None
        for position, (previous, envelope, last_txid) in enumerate(pending):
            if certificate_sha256(previous) in {certificate_sha256(e.certificate) for e in chain}:
                raise EndorsementError("history record: a certificate appears twice in the chain")
            try:
                said = verify_endorsement(envelope, current.certificate)
            except EndorsementError:
                continue
            if said.previous_service_certificate_sha256 != certificate_sha256(previous):
                raise EndorsementError(
                    "history record: the endorsement names another previous certificate"
                )
            if consortium is not None and said.consortium != consortium:
                raise EndorsementError(
                    f"history record: endorsed for consortium {said.consortium!r}, not "
                    f"{consortium!r}"
                )
            if said.last_txid != last_txid:
                raise EndorsementError("history record: last_txid differs from the endorsement's")
            if current.last_index is not None and said.last_index >= current.last_index:
                raise EndorsementError(
                    f"history record: the identity replaced at {said.last_txid} cannot end "
                    f"after the one that replaced it (which ended at index {current.last_index})"
                )
            found = (position, Era(previous, said.last_index))
            break
        if found is None:
            raise EndorsementError(
                f"{len(pending)} history record(s) are not endorsed by the chain from the "
                "current service certificate"
            )
        pending.pop(found[0])
        chain.append(found[1])
    return chain


def _parsed(record: object) -> tuple[x509.Certificate, bytes, object]:
    """A history record's previous certificate, endorsement envelope and last_txid."""
    if not isinstance(record, Mapping):
        raise EndorsementError("each history record must be an object")
    if set(record) != RECORD_FIELDS:
        raise EndorsementError(f"a history record must have {sorted(RECORD_FIELDS)}")
    try:
        envelope = base64.b64decode(record["endorsement"], validate=True)
        previous = load_certificate(record["certificate"], "history certificate")
    except (binascii.Error, TypeError, IdentityError) as exc:
        raise EndorsementError(f"history record: {exc}") from exc
    return previous, envelope, record["last_txid"]


def certificate_for(chain: Sequence[Era], index: int) -> x509.Certificate:
    """The service certificate in force when the transaction at ``index`` was written: the
    oldest era whose last recovered index covers it (eras nest: each recovery kept the history
    before it), else the current one."""
    best = chain[0].certificate
    for era in chain[1:]:
        if era.last_index is not None and index <= era.last_index:
            best = era.certificate
    return best
