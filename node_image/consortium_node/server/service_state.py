"""Whether the service is open, or recovering from a disaster, as the public ledger says.

Why a table of its own: a recovered service (``server/recover.py``) must refuse application
writes and joins until its members have brought the ledger secrets back and voted to open it
(``transition_service_to_open``); every node, the operator and an auditor must read that from
the ledger, not from one node's memory. A ledger without the row is an open service (every
service that never recovered).

``public:consortium.service["current"]``, written by the recovery entry and by the
``transition_service_to_open`` proposal::

    {"status": "Recovering" | "Open",
     "service_certificate_sha256": <hex: the identity this row was written under>,
     "recovery": {"previous_service_certificate_sha256": hex,
                  "last_recovered_txid": "t.i",     # the last entry of the old history
                  "source": "<bucket/dir location> <manifest key>",
                  "started_at": RFC 3339}}

``public:consortium.previous_services[<previous cert sha256>]``: the history record of each
identity this service replaced (``identity/endorsement.py``: the previous certificate, the last
txid written under it, the new identity's endorsement); a second recovery keeps the first's.

Phases a node reports (``phase``): ``Open``; ``WaitingForRecoveryShares`` (the ledger says
Recovering and this node does not hold the ledger secrets yet); ``WaitingForOpen`` (the secrets
are back on this node; the members' vote opens it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

T_SERVICE = "public:consortium.service"
SERVICE_KEY = "current"
T_PREVIOUS_SERVICES = "public:consortium.previous_services"

OPEN = "Open"
RECOVERING = "Recovering"
WAITING_FOR_SHARES = "WaitingForRecoveryShares"
WAITING_FOR_OPEN = "WaitingForOpen"
PHASES = (OPEN, WAITING_FOR_SHARES, WAITING_FOR_OPEN)


def status_of(row: object) -> str:
    """``Open`` or ``Recovering``: no row is an open service (it never recovered); a row that
    does not say Open is taken as Recovering (fail closed: a damaged row refuses writes)."""
    if row is None:
        return OPEN
    if isinstance(row, Mapping) and row.get("status") == OPEN:
        return OPEN
    return RECOVERING


def phase_of(row: object, secrets_held: bool) -> str:
    """The phase a node reports (module docstring)."""
    if status_of(row) == OPEN:
        return OPEN
    return WAITING_FOR_OPEN if secrets_held else WAITING_FOR_SHARES


def recovering_row(
    service_certificate_sha256: str,
    previous_sha256: str,
    last_txid: str,
    source: str,
    started_at: str,
) -> dict[str, Any]:
    return {
        "status": RECOVERING,
        "service_certificate_sha256": service_certificate_sha256,
        "recovery": {
            "previous_service_certificate_sha256": previous_sha256,
            "last_recovered_txid": last_txid,
            "source": source,
            "started_at": started_at,
        },
    }


def opened_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row once the members voted to open the service (the recovery details kept)."""
    return {**row, "status": OPEN}


def not_open_reason(phase: str) -> str:
    """What a refused write or join is told while the service is not open."""
    if phase == WAITING_FOR_SHARES:
        return (
            "the service is recovering (WaitingForRecoveryShares): the recovery members submit "
            "their shares (consortiumctl recovery submit-share), then vote "
            "transition_service_to_open"
        )
    return (
        "the service is recovered but not open yet (WaitingForOpen): the governors vote "
        "transition_service_to_open"
    )
