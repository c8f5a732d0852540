"""This node's certificate: the one in use, the names it must carry, and adopting renewals.

Why a module of its own: the certificate changes while the node runs (each re-attestation
renews it, a refresh re-issues it with new names), and it arrives from three places: start-up
(genesis issues it, a join answer carries it, a restart reads it back), a committed ledger
record, and a refresh answer, which can arrive before this node's log commits the record
that holds it. One holder decides which certificate is current, so TLS, ledger signatures and
``node_cert.pem`` never disagree, and a newer certificate is never replaced by an older one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from consortium_node.common.files import write_atomic
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    certificate_pem,
    load_certificate,
    verify_node_certificate,
)
from consortium_node.ledger import NodeKeySigner
from consortium_node.server.config import NodeConfig
from consortium_node.server.errors import NodeStartError

log = logging.getLogger("consortium_node.node")


def certificate_names(config: NodeConfig) -> list[str]:
    """The names this node's certificate must carry, from its configuration: the host of
    its address, its ``subject_alt_names``, localhost and a specific listen address."""
    host = config.address.rsplit(":", 1)[0].strip("[]")
    names = [host, *config.subject_alt_names, "localhost"]
    if config.listen_host not in ("0.0.0.0", "::"):  # noqa: S104 - a comparison
        names.append(config.listen_host)
    return list(dict.fromkeys(names))


class NodeCertificate:
    """The node certificate in use (``current``), its ledger ``signer``, and ``node_cert.pem``.

    ``on_change`` is called whenever a renewal is adopted (the server reloads TLS then).
    """

    def __init__(
        self,
        node_key: keys.PrivateKey,
        service_certificate: x509.Certificate,
        path: Path,
        certificate: x509.Certificate,
    ) -> None:
        self._key, self._service_certificate, self._path = node_key, service_certificate, path
        self.node_id = keys.node_id_of(node_key)
        self.on_change: Callable[[], None] | None = None
        self._use(certificate)

    def _use(self, cert: x509.Certificate) -> None:
        self.current = cert
        self.signer = NodeKeySigner(self._key, certificate_pem(cert))
        write_atomic(self._path, certificate_pem(cert).encode(), mode=0o644)

    def adopt(self, pem: str, what: str) -> bool:
        """Use a node certificate the service issued for this node's key, unless the one in use
        is newer (a refresh answer arrives before this node's log commits the record that holds
        it; the older committed record must not take it back). Reloads TLS when it changes."""
        cert = load_certificate(pem, what)
        current = self.current
        if pem == self.signer.certificate_pem or (
            cert.not_valid_after_utc,
            cert.not_valid_before_utc,
        ) < (current.not_valid_after_utc, current.not_valid_before_utc):
            return False
        if verify_node_certificate(cert, self._service_certificate) != self.node_id:
            raise NodeStartError(f"{what}: issued for another node's key")
        self._use(cert)
        log.info("%s: valid until %s", what, cert.not_valid_after_utc)
        if self.on_change:
            self.on_change()
        return True
