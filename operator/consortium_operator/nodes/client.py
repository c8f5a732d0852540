"""The operator's HTTPS client for node pods (DESIGN §7), by pod IP.

Pods are dialled by IP (the operator may run outside cluster DNS) while TLS checks the name
the node's certificate was issued for (its stable DNS name) against the service
certificate. Before bootstrap there is no service certificate yet: the genesis pod is then
read without server authentication, and trust comes only from its quote, which binds the
key that terminates TLS (``verify.check_pod``). The operator's own client certificate (a
member with role ``operator``) authenticates the few calls it may make: retire, re-attest, ask
for a backup. Governance documents (``relay.py``) carry their own signatures; the TLS client is
irrelevant.

``BackupReport`` is the primary's ``GET /node/backup`` answer (the backup contract), read with
``NodeClient.backup``: what the Consortium's BackupHealthy condition, ``status.backup`` and
ConsortiumBackup requests are decided from.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consortium_node.common.timeutil import parse_rfc3339
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


BACKUP_PATH = "/node/backup"


class MalformedReplyError(ValueError):
    """A node's answer does not have the documented shape; the message names the field."""


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if isinstance(value, bool) and kind is not bool:
        raise MalformedReplyError(f"{where}.{key}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise MalformedReplyError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise MalformedReplyError(f"{where}.{key}: expected an object or null")
    return value


def _time(text: str) -> datetime | None:
    try:
        return parse_rfc3339(text)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class BackupSuccess:
    """``last_success``: the newest manifest the primary wrote."""

    time: str
    txid: str
    manifest: str
    manifest_sha256: str
    objects: int
    bytes: int


@dataclass(frozen=True)
class BackupError:
    """``last_error``: why the last round failed (``reason`` is the node's, unchecked here)."""

    reason: str
    message: str
    time: str


@dataclass(frozen=True)
class BackupReport:
    """A node's ``GET /node/backup``; ``configured`` False: it runs without a backup section."""

    configured: bool
    mode: str = ""
    shipper: bool = False
    shipped_through: int = 0
    last_success: BackupSuccess | None = None
    last_error: BackupError | None = None
    lag_entries: int = 0
    lag_seconds: float = 0.0
    max_lag_seconds: float | None = None
    requested_through: int | None = None

    def current_error(self) -> BackupError | None:
        """``last_error``, unless a success came after it (then it is history)."""
        error, success = self.last_error, self.last_success
        if error is None or success is None:
            return error
        failed, succeeded = _time(error.time), _time(success.time)
        if failed is not None and succeeded is not None and succeeded > failed:
            return None
        return error

    @classmethod
    def from_json(cls, data: Any) -> BackupReport:
        """Parse an answer; ``MalformedReplyError`` names the first field that is wrong."""
        where = BACKUP_PATH
        if not isinstance(data, Mapping):
            raise MalformedReplyError(f"{where}: expected a JSON object")
        if not _field(data, "configured", bool, where):
            return cls(configured=False)
        success = _optional(data, "last_success", where)
        error = _optional(data, "last_error", where)
        requested = data.get("requested_through")
        max_lag = data.get("max_lag_seconds")
        return cls(
            configured=True,
            mode=str(data.get("mode") or ""),
            shipper=bool(data.get("shipper")),
            shipped_through=_field(data, "shipped_through", int, where),
            last_success=None
            if success is None
            else BackupSuccess(
                time=_field(success, "time", str, f"{where}.last_success"),
                txid=_field(success, "txid", str, f"{where}.last_success"),
                manifest=_field(success, "manifest", str, f"{where}.last_success"),
                manifest_sha256=str(success.get("manifest_sha256") or ""),
                objects=_field(success, "objects", int, f"{where}.last_success"),
                bytes=_field(success, "bytes", int, f"{where}.last_success"),
            ),
            last_error=None
            if error is None
            else BackupError(
                reason=_field(error, "reason", str, f"{where}.last_error"),
                message=str(error.get("message") or ""),
                time=str(error.get("time") or ""),
            ),
            lag_entries=_field(data, "lag_entries", int, where),
            lag_seconds=float(_field(data, "lag_seconds", (int, float), where)),
            max_lag_seconds=None
            if max_lag is None
            else float(_field(data, "max_lag_seconds", (int, float), where)),
            requested_through=None
            if requested is None
            else _field(data, "requested_through", int, where),
        )


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

    def backup(self, ip: str, server_name: str) -> BackupReport:
        """The node's backup state (``GET /node/backup``); ``NodeUnreachableError`` when it
        does not answer, answers with an error status or with something malformed."""
        answer = self.get_json(ip, server_name, BACKUP_PATH)
        try:
            return BackupReport.from_json(answer)
        except MalformedReplyError as exc:
            raise NodeUnreachableError(f"{server_name} ({ip}): malformed answer: {exc}") from None
