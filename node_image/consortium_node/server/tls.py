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


def server_context(
    node_key: keys.PrivateKey, node_certificate: x509.Certificate, client_cas: list[str]
) -> ssl.SSLContext:
    """A TLS ≥1.2 server context with optional client-certificate authentication."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="node-tls-") as tmp:
        # ssl can only load a key from a file; the directory is private (0700) and removed
        # before this function returns.
        key_file = Path(tmp) / "key.pem"
        cert_file = Path(tmp) / "cert.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(keys.private_key_pem(node_key))
        cert_file.write_text(certificate_pem(node_certificate))
        context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    if client_cas:
        context.load_verify_locations(cadata="\n".join(client_cas))
    return context


def client_context(
    service_certificate_pem: str,
    certificate_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A client context that trusts only the service certificate (optionally with an identity)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=service_certificate_pem)
    context.check_hostname = True
    if certificate_file is not None:
        context.load_cert_chain(certificate_file, key_file)
    return context
