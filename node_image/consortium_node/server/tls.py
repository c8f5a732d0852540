"""TLS for the node API.

The server presents its node certificate (issued by the service identity), so a client that
trusts only the service certificate can talk to any Trusted node. Client certificates are
optional at the TLS layer (public endpoints need none) and, when sent, must chain to one of the
registered member/user certificates (each is its own self-signed trust anchor). The API layer
then maps the presented certificate to a member_id and checks it is Active.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from cryptography import x509

from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_pem


def load_identity(
    context: ssl.SSLContext, node_key: keys.PrivateKey, node_certificate: x509.Certificate
) -> None:
    """(Re)load the node certificate into a context; new handshakes use it at once."""
    with tempfile.TemporaryDirectory(prefix="node-tls-") as tmp:
        # ssl can only load a key from a file; the directory is private (0700) and removed
        # before this function returns.
        key_file = Path(tmp) / "key.pem"
        cert_file = Path(tmp) / "cert.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(keys.private_key_pem(node_key))
        cert_file.write_text(certificate_pem(node_certificate))
        context.load_cert_chain(cert_file, key_file)


def server_context(
    node_key: keys.PrivateKey, node_certificate: x509.Certificate, client_cas: list[str]
) -> ssl.SSLContext:
    """A TLS ≥1.2 server context with optional client-certificate authentication."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_identity(context, node_key, node_certificate)
    context.verify_mode = ssl.CERT_OPTIONAL
    if client_cas:
        context.load_verify_locations(cadata="\n".join(client_cas))
    return context


def peer_context(
    service_certificate_pem: str, node_key: keys.PrivateKey, node_certificate: x509.Certificate
) -> ssl.SSLContext:
    """Node-to-node client context: trusts only the service certificate, presents our node's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=service_certificate_pem)
    context.check_hostname = True
    load_identity(context, node_key, node_certificate)
    return context
