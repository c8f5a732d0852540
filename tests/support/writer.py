"""A client writing through a live consortium in the background, and checks that every
write it saw acknowledged is still there: readable, with a receipt that verifies."""

from __future__ import annotations

import threading
import time
from typing import Any

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode
from tests.support.wait import wait_for


def receipt_from(node: LocalNode, cluster: Cluster, txid: str, timeout: float = 15) -> Any:
    def ready() -> Any:
        status, body = node.get(f"/app/receipt?txid={txid}", cluster.user)
        return body if status == 200 else None

    return wait_for(f"receipt of {txid} from {node.name}", ready, timeout, interval=0.05)


def verify_all(cluster: Cluster, txids: list[str], sample: int = 40) -> None:
    """Every acknowledged txid (a sample of them) has a receipt verifying on every live node."""
    cert = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    step = max(1, len(txids) // sample)
    for txid in txids[::step] + txids[-3:]:
        for node in cluster.alive():
            verify_receipt(receipt_from(node, cluster, txid), cert)


class Writer:
    """Background client writing through any live node; records acknowledged txids only."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.acknowledged, self.errors = cluster, list[str](), list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            nodes = list(self.cluster.alive())
            if not nodes:
                time.sleep(0.05)
                continue
            node = nodes[i % len(nodes)]
            i += 1
            try:
                status, body = node.post_json(
                    "/app/transactions",
                    {"transactions": [{"writes": {f"w{i}": i}}] * 3},
                    self.cluster.user,
                )
            except OSError as exc:
                self.errors.append(f"{node.name}: {exc}")
                continue
            if status == 200:
                self.acknowledged.extend(t["txid"] for t in body["transactions"])
            else:
                self.errors.append(f"{node.name}: {status} {body}")
                time.sleep(0.02)

    def count(self) -> int:
        return len(self.acknowledged)
