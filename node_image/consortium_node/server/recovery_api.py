"""The recovery ceremony on a recovery node: ``GET /recovery`` and ``POST /recovery/shares``.

Why a module of its own: the ceremony is the one place a node takes secret material from
members. Each recovery member decrypts its share on its own machine (``consortiumctl recovery
submit-share``) and posts it inside a signed ``recovery_share`` document (COSE_Sign1 by its
member key: ``governance.documents``; only Active governors of the recovered ledger sign one).
The node checks who signed, then the share against the commitment the recovery record holds
for that member (``recovery.ceremony.ShareCollector``); a refusal is answered 422
``ShareRefused`` with the named reason in ``field`` (``ShareDoesNotMatch``,
``NotARecoveryMember``, ``AlreadySubmitted``, ``ShareFormat``, ``ShareForAnotherRecord``),
``ShareNotForThisNode`` (a share is wrapped to the attested key of the node it is submitted
to: ``recovery.ceremony``), a bad signature or a signer who is no (longer a) governor 403
``SignatureRefused``.

With the threshold's valid share the node rebuilds the recovery key, unwraps every ledger
secret version, seals them (each later version with the rotation entry it belongs to) and
stops for a restart (exit 75, as after a staged snapshot): the restart replays the ledger with
the secrets, so the private state is rebuilt by the same code as any restart, and the phase is
``WaitingForOpen``. Shares are held in memory only, never written anywhere: a recovery node
that restarts before the threshold is reached has forgotten them, and members submit again
(``GET /recovery`` shows who is still awaited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.governance.documents import verify_document
from consortium_node.ledger import HeldSecret
from consortium_node.recovery.ceremony import ShareCollector, open_submission
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY, RecoveryError
from consortium_node.server.errors import ConflictError, NotFoundError, ShareRefusedError
from consortium_node.server.governance import Governance
from consortium_node.server.service_state import (
    SERVICE_KEY,
    T_SERVICE,
    WAITING_FOR_SHARES,
    status_of,
)
from consortium_node.server.validation import check_document, parse_query

log = logging.getLogger("consortium_node")

# A refusal that is about the state of the ceremony, not the share: 409 rather than 422.
_CONFLICTS = frozenset({"AlreadySubmitted", "Complete"})
RESTART_DELAY = 0.5  # seconds between the completing answer and the stop


class Ceremony:
    """The shares submitted to this node (module docstring); ``restart`` stops the node for
    the restart that replays its ledger with the recovered secrets."""

    def __init__(self, governance: Governance, restart: Callable[[str], None]) -> None:
        self.governance, self.node = governance, governance.node
        self._restart = restart
        self._collector: ShareCollector | None = None

    def _record(self) -> dict[str, Any]:
        record = self.node.public_value(T_RECOVERY, RECORD_KEY)
        if not isinstance(record, dict):
            raise NotFoundError("recovery", "the recovered ledger holds no recovery record")
        return record

    def collector(self) -> ShareCollector:
        record = self._record()
        if self._collector is None or self._collector.record != record:
            self._collector = ShareCollector(record, self.node.config.consortium)
        return self._collector

    def view(self) -> dict[str, Any]:
        """``GET /recovery``: the phase, the recovery, who submitted and who is awaited, and
        the service identities this one replaced (``identity/endorsement.py``)."""
        node = self.node
        row = node.public_value(T_SERVICE, SERVICE_KEY)
        phase = node.service_phase()
        view: dict[str, Any] = {
            "phase": phase,
            "service_status": status_of(row),
            "service_certificate_sha256": node.service.certificate_sha256,
            "recovery": row.get("recovery") if isinstance(row, dict) else None,
            "history": node.service_history(),
        }
        if phase == WAITING_FOR_SHARES:
            view["shares"] = self.collector().progress().to_json()
        return view

    async def submit(self, envelope: bytes) -> dict[str, Any]:
        """``POST /recovery/shares``: take one member's signed share."""
        node = self.node
        phase = node.service_phase()
        if phase != WAITING_FOR_SHARES:
            raise ConflictError("phase", f"this node is {phase}: it takes no recovery shares")
        doc = verify_document(
            envelope, "recovery_share", node.config.consortium, self.governance.signers()
        )
        collector = self.collector()
        payload = doc.payload
        try:
            if payload["node_id"] != node.node_id:
                raise RecoveryError(
                    "ShareNotForThisNode",
                    f"the share is wrapped to node {payload['node_id'][:16]}…, this recovery "
                    f"node is {node.node_id[:16]}…",
                )
            assert isinstance(node.node_key, ec.EllipticCurvePrivateKey)  # node keys are P-256
            share = open_submission(
                node.node_key,
                payload["share"],
                consortium=node.config.consortium,
                epoch=payload["epoch"],
                member_id=doc.signer,
                node_id=node.node_id,
            )
            progress = collector.submit(doc.signer, payload["epoch"], share)
        except RecoveryError as exc:
            node.metrics.recovery_share_refusals.labels(exc.reason).inc()
            log.warning("recovery share of member %s… refused: %s", doc.signer[:16], exc)
            if exc.reason in _CONFLICTS:
                raise ConflictError(exc.reason, exc.detail) from exc
            raise ShareRefusedError(exc.reason, exc.detail) from exc
        node.shares_submitted = len(progress.submitted)
        log.info(
            "recovery share of member %s… accepted (%d of %d)",
            doc.signer[:16],
            len(progress.submitted),
            progress.threshold,
        )
        answer = progress.to_json()
        if collector.secrets is not None:
            try:
                versions = self._seal(collector.secrets)
            except RecoveryError as exc:
                raise ShareRefusedError(exc.reason, exc.detail) from exc
            why = (
                f"recovery: {len(progress.submitted)} shares opened ledger secret versions "
                f"{versions}; sealed, restarting to replay the private ledger with them"
            )
            answer["restarting"] = True
            # after this answer is sent: the member learns its share completed the ceremony
            asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart, why)
        return answer

    def _seal(self, secrets: dict[int, bytes]) -> list[int]:
        """Seal every version the log introduced, each later one with its rotation entry."""
        ledger_secrets = self.node.ledger.secrets
        versions = list(range(1, ledger_secrets.current_version + 1))
        missing = [v for v in versions if v not in secrets]
        if missing:  # a record always covers every version (the keeper's rule): say so loudly
            raise RecoveryError(
                "RecordIncomplete", f"the recovery record does not wrap versions {missing}"
            )
        origins = {r.version: r.txid for r in ledger_secrets.rotations}
        later = [HeldSecret(v, secrets[v], origins[v]) for v in versions[1:]]
        self.node.vault.create(secrets[1], later)
        return versions


CEREMONY = web.AppKey("recovery_ceremony", Ceremony)


async def get_recovery(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return web.json_response(request.app[CEREMONY].view())


async def post_share(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    document = check_document(await request.read())
    return web.json_response(await request.app[CEREMONY].submit(document))


ROUTES = [
    ("GET", "/recovery", get_recovery),
    ("POST", "/recovery/shares", post_share),
]
