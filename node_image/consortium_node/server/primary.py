"""What only the primary (the Raft leader) does: attested join, trust changes, re-attestation.

Every trust change becomes a new trusted-node list version, signed by the service key and
written as a public ledger entry together with the node records it changes; the entry commits
through Raft like any other, and it *is* the membership change (one at a time: a new version is
only issued once the previous one is committed, so no configuration can lose quorum).

Join (DESIGN section 5 step 5): the joiner fetches a single-use nonce, answers with a quote over
its public key and that nonce; the primary verifies it against the ledger's policy. Trusted
joiners receive their node certificate, the signed list, and every ledger secret version and
the service key wrapped to their attested public key. Refusals name the verifier's reason.

Rotation (step 6): at ``renew_before`` the primary challenges each node with a fresh nonce; a
valid quote extends the attestation and re-issues the node certificate. A node that fails is
reported (``renewal_failures``) and Retired once its attestation expires.

Refresh: a Trusted node whose address or names changed (a pod restarted with a new IP, a node
moved) announces them (``refresh.py``). It is authenticated as itself by mTLS and re-attests
with a fresh quote over the same key and a nonce of this primary; it is then renewed exactly
as in a rotation, with the new address in the next list (the Raft configuration) and a
certificate naming the new names, which it receives in the answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import Claims, Reason, VerificationResult
from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_pem, issue_node_certificate
from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_node.identity.wrap import wrap
from consortium_node.ledger import EntryKind
from consortium_node.server.errors import (
    BadRequestError,
    ConflictError,
    JoinRefusedError,
    NotFoundError,
    RefreshRefusedError,
    RetryLaterError,
    ServiceNotOpenError,
)
from consortium_node.server.genesis import T_ATTESTATION, T_LISTS, T_NODES
from consortium_node.server.join_secrets import join_context
from consortium_node.server.ledger_secrets import encode_later
from consortium_node.server.nonces import NonceCheck, NonceRegistry
from consortium_node.server.service_state import OPEN, not_open_reason
from consortium_node.server.superseded import silence_for, superseded
from consortium_node.server.validation import JoinRequest, RefreshRequest

if TYPE_CHECKING:
    from consortium_node.replication.raft import RaftNode
    from consortium_node.server.node import Node
    from consortium_node.server.peers import PeerTransport

log = logging.getLogger("consortium_node.primary")


class Primary:
    """Leader duties of one node; every method checks the node still leads."""

    def __init__(self, node: Node, raft: RaftNode, transport: PeerTransport) -> None:
        self.node, self.raft, self.transport = node, raft, transport
        self.nonces = NonceRegistry(ttl=60.0)
        self.renewal_failures: dict[str, str] = {}
        self._issue_lock = asyncio.Lock()

    def require_leader(self) -> None:
        """NotLeaderError (naming the primary, if known) unless this node leads."""
        if self.raft.role != "leader":
            raise self.raft.not_leader()

    # ------------------------------------------------------------------ list issuance
    async def issue(
        self,
        changes: dict[str, NodeEntry],
        records: dict[str, dict[str, Any]],
        *,
        until_committed: bool = True,
        extra_writes: dict[str, dict[str, Any]] | None = None,
        policy: dict[str, Any] | None = None,
        positioned: Callable[[int], dict[str, dict[str, Any]]] | None = None,
    ) -> TrustedNodeList:
        """Write the next list version with ``changes`` applied, plus node ``records``.

        ``extra_writes`` go into the same ledger transaction (a governance outcome and its
        effects), and ``policy`` is the attestation policy that transaction writes, so the
        list's allowed measurements are the new ones. ``positioned(index)`` adds writes that
        depend on the index the transaction gets (a ledger secret rotation).
        """
        async with self._issue_lock:
            if not self.raft.configuration_committed():
                raise RetryLaterError("the previous trusted-node list is not committed yet")
            current = self.node.membership.current()
            assert current is not None
            nodes = {n.node_id: n for n in current.nodes}
            nodes.update(changes)
            policy = policy or self.node.policy_value()
            lst = TrustedNodeList(
                consortium=current.consortium,
                version=current.version + 1,
                issued_at=rfc3339(utcnow()),
                service_certificate_sha256=current.service_certificate_sha256,
                allowed_measurements=tuple(sorted(policy["measurements"])),
                nodes=tuple(nodes.values()),
            )
            envelope = self.node.sign_list(lst)
            writes = {
                **(extra_writes or {}),
                T_NODES: records,
                T_LISTS: {
                    str(lst.version): {
                        "cose": base64.b64encode(envelope).decode("ascii"),
                        "sha256": hashlib.sha256(envelope).hexdigest(),
                        "issued_at": lst.issued_at,
                    }
                },
            }
            late = positioned
            await self.raft.submit(
                [writes] if late is None else lambda index: [{**writes, **late(index)}],
                EntryKind.PUBLIC,
                until_committed=until_committed,
            )
            log.info("issued trusted-node list version %d", lst.version)
            return lst

    def _entry(
        self,
        base: NodeEntry | None,
        request: JoinRequest | None,
        *,
        status: NodeStatus,
        attested: datetime,
        measurement: str,
        host_data: str,
    ) -> NodeEntry:
        validity = timedelta(seconds=self.node.policy_value()["validity_seconds"])
        if base is not None:
            return replace(
                base,
                status=status,
                measurement=measurement,
                host_data=host_data,
                attested_at=rfc3339(attested),
                attestation_expires_at=rfc3339(attested + validity),
            )
        assert request is not None
        return NodeEntry(
            node_id=keys.node_id_of(keys.load_public_key(request.public_key_pem.encode())),
            name=request.name,
            address=request.address,
            public_key_pem=request.public_key_pem,
            measurement=measurement,
            host_data=host_data,
            status=status,
            attested_at=rfc3339(attested),
            attestation_expires_at=rfc3339(attested + validity),
        )

    def _renewed(self, entry: NodeEntry, claims: Claims) -> NodeEntry:
        """``entry`` re-attested now with ``claims`` (a rotation challenge or a refresh)."""
        return self._entry(
            entry,
            None,
            status=NodeStatus.TRUSTED,
            attested=utcnow(),
            measurement=claims.measurement,
            host_data=claims.host_data,
        )

    def _record(
        self,
        entry: NodeEntry,
        quote: dict[str, Any],
        certificate: str | None,
        sans: Sequence[str] = (),
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": entry.name,
            "address": entry.address,
            "status": entry.status.value,
            "measurement": entry.measurement,
            "host_data": entry.host_data,
            "attested_at": entry.attested_at,
            "attestation_expires_at": entry.attestation_expires_at,
            "quote": quote,
        }
        if certificate is not None:
            record["certificate"] = certificate
        if sans:
            record["subject_alt_names"] = list(sans)
        return record

    def _sans(self, node_id: str) -> list[str]:
        """The names a node asked for at join (kept in its record for renewals)."""
        found = (self.node.node_record(node_id) or {}).get("subject_alt_names", [])
        return [str(n) for n in found] if isinstance(found, list) else []

    def _certificate(self, entry: NodeEntry, sans: Sequence[str] = ()) -> str:
        host = entry.address.rsplit(":", 1)[0].strip("[]")
        cert = issue_node_certificate(
            self.node.service,
            keys.load_public_key(entry.public_key_pem.encode()),
            subject_alt_names=list(dict.fromkeys([host, *sans, "localhost"])),
            not_after=entry.attestation_expires_at_datetime,
        )
        return certificate_pem(cert)

    # ------------------------------------------------------------------ join
    def join_nonce(self) -> dict[str, Any]:
        """Any Trusted node issues nonces: it can answer re-joins of already-Trusted nodes."""
        return {"nonce": self.nonces.issue().hex(), "expires_in_seconds": 60}

    def _refuse(self, reason: str, detail: str) -> JoinRefusedError:
        self.node.metrics.join_requests.labels("refused", reason).inc()
        log.warning("join refused: %s: %s", reason, detail)
        return JoinRefusedError(reason, detail)

    async def join(self, request: JoinRequest) -> dict[str, Any]:
        """Handle ``POST /node/join``: the answer, whose ``status`` says whether the node is
        Trusted (with its certificate and the secrets) or Pending (waiting for members).

        Trust changes need the primary; a node that is already Trusted (its answer was lost,
        or the primary lost quorum before it could answer) is answered by any Trusted node,
        since every one of them holds the secrets — otherwise a new voter could wait forever
        for a primary that is waiting for it.
        """
        phase = self.node.service_phase()
        if phase != OPEN:  # a recovering service hands out no secrets; the joiner retries
            raise ServiceNotOpenError("service", not_open_reason(phase), phase=phase)
        node_id = keys.node_id_of(keys.load_public_key(request.public_key_pem.encode()))
        check = self.nonces.consume(request.nonce)
        if check is not NonceCheck.OK:
            raise self._refuse(
                Reason.NONCE_MISMATCH.value,
                f"nonce {check.value.lower()}: fetch a fresh one from "
                "/node/join/nonce (nonces are single use)",
            )
        result: VerificationResult = self.node.verify_quote(
            request.quote, request.public_key_der, request.nonce
        )
        if not result.ok or result.claims is None:
            reason = result.reason.value if result.reason else "Unknown"
            raise self._refuse(reason, result.detail)
        current = self.node.membership.current()
        existing = current.node(node_id) if current else None
        if existing is not None and existing.status is NodeStatus.RETIRED:
            raise self._refuse(
                "Retired",
                "a Retired node cannot rejoin; restart it with a "
                "fresh identity (empty data directory)",
            )
        auto = bool(self.node.constitution()["auto_trust_nodes"])
        if existing is not None and existing.status is NodeStatus.TRUSTED:
            entry = existing  # a re-join after a crash: hand the secrets out again
        elif existing is not None and existing.status is NodeStatus.PENDING:
            entry = existing  # still waiting for members; nothing changes
        else:
            self.require_leader()
            status = NodeStatus.TRUSTED if auto else NodeStatus.PENDING
            entry = self._entry(
                None,
                request,
                status=status,
                attested=utcnow(),
                measurement=result.claims.measurement,
                host_data=result.claims.host_data,
            )
            sans = request.subject_alt_names
            certificate = self._certificate(entry, sans) if status is NodeStatus.TRUSTED else None
            # A new voter: answer once durable here; it commits when the joiner catches up.
            await self.issue(
                {node_id: entry},
                {node_id: self._record(entry, request.quote, certificate, sans)},
                until_committed=status is not NodeStatus.TRUSTED,
            )
        self.node.metrics.join_requests.labels(entry.status.value.lower(), "").inc()
        if entry.status is not NodeStatus.TRUSTED:
            return {
                "status": entry.status.value,
                "node_id": node_id,
                "reason": "waiting for members to trust this node",
            }
        return self._join_answer(entry, node_id)

    def _join_answer(self, entry: NodeEntry, node_id: str) -> dict[str, Any]:
        record = self.node.node_record(node_id)
        certificate = record.get("certificate") if record else None
        if not certificate:
            raise RetryLaterError("the node certificate is not recorded yet")
        held = self.node.ledger.secrets.held()
        secrets = canonical_json(
            {
                "ledger_secret": held[0].secret.hex(),
                "ledger_secrets": encode_later(held),
                "service_key": keys.private_key_pem(self.node.service.key).decode("ascii"),
                "service_certificate": self.node.service.certificate_pem,
            }
        )
        public = keys.load_public_key(entry.public_key_pem.encode())
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise BadRequestError("public_key", "node keys must be P-256")
        wrapped = wrap(public, secrets, context=join_context(self.node.config.consortium, node_id))
        envelope = self.node.membership.store.current_envelope
        logged = self.node.membership.logged()
        if logged is not None:
            envelope = logged.envelope
        assert envelope is not None
        return {
            "status": "Trusted",
            "node_id": node_id,
            "node_certificate": certificate,
            "service_certificate": self.node.service.certificate_pem,
            "wrapped_secrets": base64.b64encode(wrapped).decode("ascii"),
            "trusted_list": base64.b64encode(envelope).decode("ascii"),
        }

    def trusted_change(self, entry: NodeEntry) -> tuple[NodeEntry, dict[str, Any]]:
        """A Pending node made Trusted: its list entry and node record (with certificate)."""
        trusted = replace(entry, status=NodeStatus.TRUSTED)
        record = {
            **(self.node.node_record(entry.node_id) or {}),
            "status": "Trusted",
            "certificate": self._certificate(trusted, self._sans(entry.node_id)),
        }
        return trusted, record

    def retired_change(self, entry: NodeEntry, reason: str) -> tuple[NodeEntry, dict[str, Any]]:
        retired = replace(entry, status=NodeStatus.RETIRED)
        record = {
            **(self.node.node_record(entry.node_id) or {}),
            "status": "Retired",
            "retired_reason": reason,
        }
        return retired, record

    async def retire(self, node_id: str) -> dict[str, Any]:
        """Retire a Trusted or Pending node (scale-down); answers once the list is committed."""
        self.require_leader()
        current = self.node.membership.current()
        entry = current.node(node_id) if current else None
        if entry is None:
            raise NotFoundError("node_id", f"node {node_id[:16]}… is not listed")
        if entry.status is NodeStatus.RETIRED:
            return {"node_id": node_id, "status": "Retired"}
        voters = [n for n in current.nodes if n.status is NodeStatus.TRUSTED] if current else []
        if entry.status is NodeStatus.TRUSTED and len(voters) <= 1:
            raise ConflictError("node_id", "cannot retire the last Trusted node")
        retired, record = self.retired_change(entry, "Removed")
        await self.issue({node_id: retired}, {node_id: record})
        self.node.metrics.reattestations.labels("retired").inc()
        log.info("retired %s (%s) on request", entry.name, node_id[:16])
        return {"node_id": node_id, "status": "Retired"}

    async def retire_superseded(self) -> NodeEntry | None:
        """Retire a Trusted identity that a newer node at its name and address replaced
        (``superseded``: it lost its key and joined again); the entry retired, if any."""
        current = self.node.membership.current()
        if current is None or not self.raft.configuration_committed():
            return None
        silent = silence_for(self.raft.timing.election_timeout)
        found = superseded(current.nodes, self.raft.silent_for, self.node.node_id, silent=silent)
        if found is None:
            return None
        old, new = found
        retired, record = self.retired_change(old, "Superseded")
        await self.issue({old.node_id: retired}, {old.node_id: record})
        self.node.metrics.reattestations.labels("retired").inc()
        log.warning(
            "retired %s (%s): silent, and %s now answers at %s as a new node (%s) that "
            "joined again",
            old.name,
            old.node_id[:16],
            new.name,
            new.address,
            new.node_id[:16],
        )
        return retired

    async def reattest_now(self) -> dict[str, Any]:
        """One re-attestation round on request; what was renewed, retired, and what failed."""
        self.require_leader()
        changes = await self.rotate_once()
        return {
            "renewed": sorted(k for k, v in changes.items() if v.status is NodeStatus.TRUSTED),
            "retired": sorted(k for k, v in changes.items() if v.status is NodeStatus.RETIRED),
            "failures": dict(sorted(self.renewal_failures.items())),
        }

    # ------------------------------------------------------------------ refresh
    async def refresh(self, node_id: str, request: RefreshRequest) -> dict[str, Any]:
        """A Trusted node (authenticated as ``node_id``) announces a new address or names.

        Refused unless it is Trusted, the nonce is one of ours and unused, and its fresh quote
        over its listed key passes the ledger's policy; and if another node holds the address.
        Answers once the new list is committed, with the re-issued node certificate.
        """
        self.require_leader()
        current = self.node.membership.current()
        entry = current.node(node_id) if current else None
        if entry is None or entry.status is not NodeStatus.TRUSTED:
            raise RefreshRefusedError("node_id", "only a Trusted node may refresh")
        taken = [
            n.name
            for n in (current.nodes if current else ())
            if n.address == request.address
            and n.node_id != node_id
            and n.status is not NodeStatus.RETIRED
        ]
        if taken:
            raise ConflictError("address", f"{request.address} is {taken[0]}'s")
        if self.nonces.consume(request.nonce) is not NonceCheck.OK:
            raise RefreshRefusedError("nonce", "not a fresh nonce of this primary: fetch one")
        public_der = keys.public_key_der(keys.load_public_key(entry.public_key_pem.encode()))
        result = self.node.verify_quote(request.quote, public_der, request.nonce)
        if not result.ok or result.claims is None:
            reason = result.reason.value if result.reason else "Unknown"
            raise RefreshRefusedError(reason, result.detail)
        renewed = replace(self._renewed(entry, result.claims), address=request.address)
        sans = request.subject_alt_names
        certificate = self._certificate(renewed, sans)
        lst = await self.issue(
            {node_id: renewed},
            {node_id: self._record(renewed, request.quote, certificate, sans)},
        )
        self.renewal_failures.pop(node_id, None)
        self.node.metrics.reattestations.labels("renewed").inc()
        log.info("%s (%s) now at %s, names %s", entry.name, node_id[:16], renewed.address, sans)
        return {
            "node_id": node_id,
            "address": renewed.address,
            "node_certificate": certificate,
            "trusted_list_version": lst.version,
        }

    # ------------------------------------------------------------------ rotation
    async def run_rotation(self) -> None:
        """Check attestation expiry, and superseded identities, forever; acts only while this
        node leads. A round that fails is logged and the next one runs: this loop must
        outlive anything (it starts before a joining node has replicated the policy)."""
        while True:
            await asyncio.sleep(self._rotation_interval())
            if self.raft.role != "leader":
                continue
            try:
                await self.rotate_once()
                await self.retire_superseded()
            except RetryLaterError:
                continue
            except Exception:
                log.exception("re-attestation round failed")

    def _rotation_interval(self) -> float:
        """A quarter of ``renew_before``, between 0.2 and 5 s (0.2 s until the attestation
        policy is in this node's ledger: a node that joined replicates it after it starts)."""
        policy = self.node.public_value(T_ATTESTATION, "policy")
        renew = policy.get("renew_before_seconds") if isinstance(policy, dict) else None
        return max(0.2, min(5.0, renew / 4)) if isinstance(renew, int | float) else 0.2

    async def rotate_once(self) -> dict[str, NodeEntry]:
        """Challenge Trusted nodes inside ``renew_before``; the list changes it issued."""
        current = self.node.membership.current()
        if current is None:
            return {}
        now = utcnow()
        policy = self.node.policy_value()
        renew_before = timedelta(seconds=policy["renew_before_seconds"])
        changes: dict[str, NodeEntry] = {}
        records: dict[str, dict[str, Any]] = {}
        for entry in current.nodes:
            if entry.status is not NodeStatus.TRUSTED:
                continue
            if entry.attestation_expires_at_datetime - now > renew_before:
                continue
            challenge = await self._challenge(entry)
            if challenge.claims is not None:
                self.renewal_failures.pop(entry.node_id, None)
                renewed = self._renewed(entry, challenge.claims)
                changes[entry.node_id] = renewed
                sans = self._sans(entry.node_id)
                records[entry.node_id] = self._record(
                    renewed, challenge.quote, self._certificate(renewed, sans), sans
                )
                continue
            reason = challenge.failure or "Unknown"
            self.renewal_failures[entry.node_id] = reason
            log.warning("re-attestation of %s failed: %s", entry.name, reason)
            if entry.attestation_expires_at_datetime <= now:
                retired = replace(entry, status=NodeStatus.RETIRED)
                changes[entry.node_id] = retired
                records[entry.node_id] = {
                    **(self.node.node_record(entry.node_id) or {}),
                    "status": "Retired",
                    "retired_reason": reason,
                }
                log.warning("retiring %s: attestation expired (%s)", entry.name, reason)
        if changes:
            await self.issue(changes, records)
            for node_id, entry in changes.items():
                outcome = "retired" if entry.status is NodeStatus.RETIRED else "renewed"
                self.node.metrics.reattestations.labels(outcome).inc()
                log.info("%s %s", outcome, node_id[:16])
        return changes

    async def _challenge(self, entry: NodeEntry) -> Challenge:
        """Ask ``entry`` for a quote over a fresh nonce and verify it against the policy."""
        nonce = os.urandom(32)
        public_der = keys.public_key_der(keys.load_public_key(entry.public_key_pem.encode()))
        if entry.node_id == self.node.node_id:
            quote = self.node.quote(nonce)["quote"]
        else:
            try:
                answer = await self.transport.get_json(
                    entry.address, f"/node/quote?nonce={nonce.hex()}"
                )
                quote = answer["quote"]
            except (OSError, KeyError, TypeError) as exc:
                return Challenge(
                    None, {}, f"NoAnswer: the node did not answer the challenge ({exc})"
                )
        result = self.node.verify_quote(quote, public_der, nonce)
        if result.ok and result.claims is not None:
            return Challenge(result.claims, quote, None)
        reason = result.reason.value if result.reason else "Unknown"
        return Challenge(None, quote, f"{reason}: {result.detail}")


@dataclass(frozen=True)
class Challenge:
    """The outcome of one re-attestation challenge: claims, or why not."""

    claims: Claims | None
    quote: dict[str, Any]
    failure: str | None
