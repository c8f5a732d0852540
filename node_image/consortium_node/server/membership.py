"""Who is in the network right now, as far as this node knows.

Two sources, the newer wins: the trusted-node lists recorded in this node's ledger (including
not-yet-committed ones: Raft uses the latest configuration in its log) and the list store
(what this node last accepted: from its join response, the mounted ConfigMap, or a committed
ledger entry). Every list is verified (signature, version) before it counts.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.errors import TrustedListError
from consortium_node.identity.trusted_list import NodeStatus, TrustedNodeList, verify_trusted_list
from consortium_node.identity.trusted_list_store import Outcome, TrustedListStore
from consortium_node.ledger import Ledger, TxId
from consortium_node.replication.raft import Configuration
from consortium_node.server.genesis import T_LISTS

log = logging.getLogger("consortium_node.membership")


@dataclass(frozen=True)
class LoggedList:
    """A trusted-node list as recorded in the ledger: where, and the envelope."""

    index: int
    envelope: bytes
    trusted_list: TrustedNodeList


class Membership:
    """Trusted-node list views over one ledger and one list store."""

    def __init__(self, ledger: Ledger, store: TrustedListStore) -> None:
        self.ledger, self.store = ledger, store
        self._cache: LoggedList | None = None
        self._cache_position: TxId | None = None
        self._configuration: tuple[object, Configuration] | None = None

    def logged(self) -> LoggedList | None:
        """The newest list in the log (speculative: committed or not)."""
        if self._cache is not None and self._cache_position == self.ledger.public_position:
            return self._cache
        self._cache_position = self.ledger.public_position
        keys = self.ledger.public_keys(T_LISTS)
        if not keys:
            self._cache = None
            return None
        version = max(keys, key=int)
        found = self.ledger.public_get(T_LISTS, version)
        if found is None:
            return None
        value, txid = found
        envelope = base64.b64decode(value["cose"])
        if self._cache and self._cache.index == txid.index and self._cache.envelope == envelope:
            return self._cache  # another public entry changed, not the list: no re-verification
        lst = verify_trusted_list(
            envelope, self.store.service_certificate, consortium=self.store.consortium
        )
        self._cache = LoggedList(txid.index, envelope, lst)
        return self._cache

    def current(self) -> TrustedNodeList | None:
        """The newest verified list this node knows of."""
        logged, stored = self.logged(), self.store.current
        if logged is None:
            return stored
        if stored is None or logged.trusted_list.version > stored.version:
            return logged.trusted_list
        return stored

    def configuration(self) -> Configuration:
        """Raft voters: Trusted nodes of the newest list, and the index that defined them.

        On Raft's hot path (every replication round), so it is derived again only when the
        log's public entries or the accepted list change.
        """
        stored = self.store.current
        key = (self.ledger.public_position, stored.version if stored else None)
        if self._configuration is not None and self._configuration[0] == key:
            return self._configuration[1]
        configuration = self._derive_configuration()
        self._configuration = (key, configuration)
        return configuration

    def _derive_configuration(self) -> Configuration:
        logged = self.logged()
        stored = self.store.current
        if logged is not None and (stored is None or logged.trusted_list.version >= stored.version):
            lst, index = logged.trusted_list, logged.index
        elif stored is not None:
            lst, index = stored, 0
        else:
            return Configuration({}, 0)
        voters = {n.node_id: n.address for n in lst.nodes if n.status is NodeStatus.TRUSTED}
        return Configuration(voters, index)

    def is_trusted(self, node_id: str, at: datetime | None = None) -> bool:
        lst = self.current()
        return lst is not None and lst.is_trusted(node_id, at or utcnow())

    def adopt_committed(self) -> TrustedNodeList | None:
        """Accept the newest committed list into the store; returns it if it was new."""
        keys = list(self.ledger.kv.keys(T_LISTS))
        if not keys:
            return None
        version = max(keys, key=int)
        current = self.store.current
        if current is not None and current.version >= int(version):
            return None
        found = self.ledger.get(T_LISTS, version)
        if found is None:
            return None
        try:
            # offer, not accept: the watcher may have adopted a newer list (the mounted
            # ConfigMap) since the check above; an older committed one is then no error.
            offered = self.store.offer(base64.b64decode(found[0]["cose"]))
        except TrustedListError as exc:  # a list in our own ledger must verify
            log.error("committed trusted-node list version %s refused: %s", version, exc)
            raise
        return offered.held if offered.outcome is Outcome.ADOPTED else None
