"""A client writing through a live consortium in the background, and checks that every
write it saw acknowledged is still there: readable, with a receipt that verifies."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


def verify_every(cluster: Cluster, written: dict[str, dict[str, Any]]) -> int:
    """Every acknowledged transaction (txid → its writes), on every live node: readable with
    the writes that were acknowledged, and with a receipt that verifies. One keep-alive
    connection per node, the nodes in parallel; returns how many reads were checked."""
    cert = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    assert cluster.user is not None

    def check(node: LocalNode) -> int:
        connection = http.client.HTTPSConnection(
            node.host, node.port, context=node.context(cluster.user), timeout=30
        )
        try:
            for txid, writes in written.items():
                for path in (f"/app/transaction?txid={txid}", f"/app/receipt?txid={txid}"):
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = json.loads(response.read())
                    assert response.status == 200, (node.name, path, body)
                    if path.startswith("/app/receipt"):
                        assert str(verify_receipt(body, cert).txid) == txid
                    else:
                        assert body["writes"] == {"app": writes}, (node.name, txid, body)
        finally:
            connection.close()
        return 2 * len(written)

    nodes = list(cluster.alive())
    with ThreadPoolExecutor(len(nodes)) as pool:
        return sum(pool.map(check, nodes))


class Writer:
    """Background client writing through any live node; records acknowledged txids only."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.acknowledged, self.errors = cluster, list[str](), list[str]()
        self.written: dict[str, dict[str, Any]] = {}  # acknowledged txid → its writes
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
                txids = [t["txid"] for t in body["transactions"]]
                self.written.update((txid, {f"w{i}": i}) for txid in txids)
                self.acknowledged.extend(txids)
            else:
                self.errors.append(f"{node.name}: {status} {body}")
                time.sleep(0.02)

    def count(self) -> int:
        return len(self.acknowledged)
