"""The operator's HTTPS client for node pods (DESIGN §7), by pod IP.

Pods are dialled by IP (the operator may run outside cluster DNS) while TLS checks the name
the node's certificate was issued for (its stable DNS name) against the service
certificate. Before bootstrap there is no service certificate yet: the genesis pod is then
read without server authentication, and trust comes only from its quote, which binds the
key that terminates TLS (``verify.check_pod``). The operator's own client certificate (a
member with role ``operator``) authenticates the few calls it may make: retire, re-attest.
Governance documents (``relay.py``) carry their own signatures; the TLS client is irrelevant.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium_operator.api.names import NODE_PORT


class NodeUnreachableError(Exception):
    """The pod did not answer (connection, TLS or timeout); the message says which."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    peer_certificate_der: bytes | None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return {"error": {"reason": self.body[:200].decode("utf-8", "replace")}}

    def error(self) -> str:
        """The node's error as one line: ``field: reason`` (HTTP status if it said nothing)."""
        found = self.json()
        err = found.get("error") if isinstance(found, dict) else None
        if not isinstance(err, dict):
            return f"HTTP {self.status}"
        reason = str(err.get("reason") or f"HTTP {self.status}")
        return f"{err['field']}: {reason}" if err.get("field") else reason


class NodeClient:
    """One client per Consortium pass: the service certificate and identity it trusts/uses."""

    def __init__(
        self,
        service_certificate_pem: str | None,
        client_identity: tuple[bytes, bytes] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.timeout = timeout
        self.authenticated = service_certificate_pem is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if service_certificate_pem is not None:
            context.load_verify_locations(cadata=service_certificate_pem)
            context.check_hostname = True
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_identity is not None:
            key_pem, cert_pem = client_identity
            with tempfile.TemporaryDirectory(prefix="consortium-operator-") as tmp:
                key_file, cert_file = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
                key_file.touch(mode=0o600)
                key_file.write_bytes(key_pem)
                cert_file.write_bytes(cert_pem)
                context.load_cert_chain(cert_file, key_file)
        self._context = context

    def request(
        self,
        ip: str,
        server_name: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        """One HTTPS request to ``ip``; TLS verifies ``server_name`` when authenticated.

        ``body`` is sent as JSON; ``raw`` bytes as they are (e.g. a signed governance
        document, ``content_type="application/cose"``)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            with socket.create_connection((ip, NODE_PORT), timeout=self.timeout) as sock:
                hostname = server_name if self.authenticated else None
                with self._context.wrap_socket(sock, server_hostname=hostname) as tls:
                    peer = tls.getpeercert(binary_form=True)
                    conn = http.client.HTTPConnection(server_name, NODE_PORT, timeout=self.timeout)
                    conn.sock = tls
                    headers = {"Host": f"{server_name}:{NODE_PORT}", "Accept": "*/*"}
                    if data is not None:
                        headers["Content-Type"] = content_type
                    conn.request(method, path, body=data, headers=headers)
                    response = conn.getresponse()
                    return Reply(response.status, response.read(), peer)
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachableError(f"{server_name} ({ip}): {exc}") from exc

    def get_json(self, ip: str, server_name: str, path: str) -> Any:
        reply = self.request(ip, server_name, "GET", path)
        if reply.status != 200:
            raise NodeUnreachableError(
                f"{server_name} ({ip}) {path}: HTTP {reply.status}: {reply.body[:200]!r}"
            )
        return reply.json()
