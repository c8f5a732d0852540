"""A joining node (or one whose volume was emptied) fetches the newest committed snapshot.

Why before the ledger opens: a node that starts from a snapshot plus the entries after it
joins in time proportional to the state, not to the history (DESIGN: snapshots). The bytes
come from any node that serves them and are trusted only once ``verify_snapshot`` accepts
them with the service certificate the node already trusts and a ledger secret it received
in its join answer; they are then written to the node's own snapshot directory, committed
with their receipt, and ``Ledger.open`` starts from them. No snapshot anywhere (a young
ledger) or none that verifies: the node replicates the ledger from index 1, as before.
"""

from __future__ import annotations

import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from consortium_node.common import bounded_json
from consortium_node.identity.certs import certificate_pem
from consortium_node.identity.trusted_list import NodeStatus, verify_trusted_list
from consortium_node.ledger import LedgerError, LedgerSecrets
from consortium_node.ledger.snapshot import verify_snapshot
from consortium_node.ledger.snapshot_store import SnapshotStore

log = logging.getLogger("consortium_node.join")

MAX_LIST_BYTES = 1 << 20
MAX_SNAPSHOT_BYTES = 1 << 36  # 64 GiB: far beyond any state this node could hold anyway


def _get(url: str, context: ssl.SSLContext, limit: int, timeout: float) -> bytes:
    request = urllib.request.Request(url)  # noqa: S310 - https to a node of the trusted list
    with urllib.request.urlopen(request, context=context, timeout=timeout) as resp:  # noqa: S310
        data = resp.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{url}: answer larger than {limit} bytes")
    return bytes(data)


def fetch_newest(
    addresses: Sequence[str],
    context: ssl.SSLContext,
    certificate: x509.Certificate,
    secrets: LedgerSecrets,
    store: SnapshotStore,
    *,
    timeout: float = 60.0,
) -> int | None:
    """Fetch, verify and store the newest committed snapshot that one of ``addresses``
    serves; its index, or None (nothing served, or nothing that verifies)."""
    for address in addresses:
        try:
            listed = bounded_json.loads(
                _get(f"https://{address}/node/snapshots", context, MAX_LIST_BYTES, timeout),
                "snapshot list",
            )
            entries = listed.get("snapshots") if isinstance(listed, dict) else None
            if not isinstance(entries, list) or not entries:
                log.info("no committed snapshot at %s", address)
                continue
            newest = max(e["index"] for e in entries if isinstance(e.get("index"), int))
            started = time.monotonic()
            base = f"https://{address}/node/snapshot"
            data = _get(f"{base}?index={newest}", context, MAX_SNAPSHOT_BYTES, timeout)
            receipt = bounded_json.loads(
                _get(f"{base}/receipt?index={newest}", context, MAX_LIST_BYTES, timeout),
                "snapshot receipt",
            )
            if not isinstance(receipt, dict):
                raise ValueError("the snapshot receipt is not a JSON object")
            state, evidence = verify_snapshot(data, receipt, certificate, secrets.held_aead)
            digest, _ = store.write(state.index, data)
            if not store.commit(state.index, digest, receipt):
                raise LedgerError(f"snapshot {state.index} did not store")
            log.info(
                "snapshot at %s fetched from %s and verified (%d bytes, evidence %s, %.2f s)",
                state.txid,
                address,
                len(data),
                evidence.txid,
                time.monotonic() - started,
            )
            return state.index
        except (OSError, ValueError, KeyError, TypeError, LedgerError) as exc:
            log.warning("snapshot from %s not used: %s", address, exc)
    return None


def on_empty_volume(
    ledger_dir: Path,
    trusted_list: bytes,
    *,
    consortium: str,
    own_address: str,
    certificate: x509.Certificate,
    secrets: LedgerSecrets,
    first: str = "",
) -> int | None:
    """If ``ledger_dir`` holds no chunk and no committed snapshot (a new or emptied volume),
    fetch the newest snapshot from ``first`` (the primary that answered a join), else from
    the other Trusted nodes of ``trusted_list`` (verified with ``certificate``)."""
    store = SnapshotStore(ledger_dir / "snapshots")
    if any(ledger_dir.glob("ledger_*.chunk")) or store.newest_committed() is not None:
        return None
    listed = verify_trusted_list(trusted_list, certificate, consortium=consortium)
    trusted = [n.address for n in listed.nodes if n.status is NodeStatus.TRUSTED]
    sources = [a for a in [first, *trusted] if a and a != own_address]
    context = ssl.create_default_context(cadata=certificate_pem(certificate))
    return fetch_newest(list(dict.fromkeys(sources)), context, certificate, secrets, store)
