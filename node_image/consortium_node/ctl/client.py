"""A small synchronous HTTPS client for the node API (stdlib only).

The client trusts only the service certificate (node TLS certificates are issued by it) and
authenticates with a member/user certificate when one is given. Failures become ``CtlError``
with a message a person can act on; HTTP errors carry the node's JSON error.

Exit codes say who to blame: 1 when a node answered but the answer (or its certificate) did
not verify or the request was refused — including a certificate that is the service's but
names another host, which is reported with the names it does carry, never as "unreachable";
3 only when no answer came at all (no connection, a broken connection, a timeout).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from consortium_node.identity.certs import certificate_pem, load_certificate, subject_alt_names
from consortium_node.identity.errors import IdentityError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# OpenSSL's verify codes for a certificate that chains but names another host / IP address.
X509_HOSTNAME_MISMATCH = 62
X509_IP_ADDRESS_MISMATCH = 64


class CtlError(Exception):
    """A failure to report on stderr, with the process exit code to use."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise CtlError(f"the node answered {self.status} with non-JSON: {exc}") from exc


class NodeClient:
    """Calls one node's API over TLS."""

    def __init__(
        self,
        base_url: str,
        service_cert_pem: str,
        cert: Path | None = None,
        key: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise CtlError(f"--node {base_url!r}: expected https://HOST:PORT", EXIT_USAGE)
        self.base = base_url.rstrip("/")
        self.service_cert_pem = service_cert_pem
        self.timeout = timeout
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cadata=service_cert_pem)
            if cert is not None:
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise CtlError(f"cannot load TLS material: {exc}", EXIT_USAGE) from exc
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        raw: bytes | None = None,
    ) -> Response:
        """``body`` is sent as JSON; ``raw`` bytes as a COSE document (governance)."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else raw
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - https checked
        if data is not None:
            kind = "application/json" if body is not None else "application/cose"
            req.add_header("Content-Type", kind)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read(), dict(exc.headers))
        except urllib.error.URLError as exc:
            raise self._connection_error(exc.reason) from exc
        except ssl.SSLError as exc:
            raise self._connection_error(exc) from exc
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise CtlError(f"{self.base}: the connection failed: {exc}", EXIT_UNREACHABLE) from exc

    def _connection_error(self, reason: object) -> CtlError:
        """Why a request did not get an answer: a certificate that does not verify (exit 1,
        the node answered but cannot be trusted under this name) or no node there (exit 3)."""
        if isinstance(reason, ssl.SSLCertVerificationError):
            if reason.verify_code in (X509_HOSTNAME_MISMATCH, X509_IP_ADDRESS_MISMATCH):
                return CtlError(name_mismatch(self.base, self._presented_names()))
            return CtlError(
                f"{self.base}: the node's certificate does not verify with the given service "
                f"certificate ({reason.verify_message}): is --service-cert this consortium's?"
            )
        if isinstance(reason, ssl.SSLError) and "CERTIFICATE" in str(reason.reason or ""):
            return CtlError(
                f"{self.base}: the node refused the TLS handshake ({reason.reason}): it does not "
                "accept your certificate"
            )
        if isinstance(reason, ssl.SSLError):
            return CtlError(f"{self.base}: TLS handshake failed ({reason})", EXIT_UNREACHABLE)
        return CtlError(f"{self.base}: cannot connect: {reason}", EXIT_UNREACHABLE)

    def _presented_names(self) -> list[str] | None:
        """The names in the certificate the node presents, read over a second connection that
        verifies the chain but not the name (None if that fails too)."""
        parsed = urllib.parse.urlparse(self.base)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cadata=self.service_cert_pem)
        try:
            with (
                socket.create_connection((parsed.hostname, parsed.port or 443), 10) as sock,
                context.wrap_socket(sock) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except (OSError, ValueError):
            return None
        return subject_alt_names(x509.load_der_x509_certificate(der)) if der else None

    def json(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        resp = self.request(method, path, query, body)
        if resp.status not in ok:
            raise CtlError(f"{method} {path}: {describe_error(resp)}")
        return resp.json()


def name_mismatch(base: str, names: list[str] | None) -> str:
    """The message for a node whose certificate is the service's but not for this name."""
    host = urllib.parse.urlparse(base).hostname
    found = ", ".join(names) if names else "names that could not be read"
    return (
        f"{base}: the node's certificate is issued by the service but is not valid for "
        f"{host!r}: it names {found}. Use one of those names, or, if the node has just moved "
        "to this address, retry once it has announced it (the primary re-issues its certificate)"
    )


def error_code(resp: Response) -> str | None:
    """The node's machine-readable error code (``NotCommittedYet``, ``NotFound``, …), if any."""
    try:
        code = json.loads(resp.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def describe_error(resp: Response) -> str:
    """``HTTP 400 BadRequest: transactions[0].writes: ...`` from the node's JSON error."""
    try:
        error = json.loads(resp.body)["error"]
        where = f"{error['field']}: " if error.get("field") else ""
        return f"HTTP {resp.status} {error.get('code', '')}: {where}{error.get('reason', '')}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status}: {resp.body[:200]!r}"


def read_input(path: str, what: str) -> bytes:
    """A file's bytes, or standard input for ``-``; a usage error naming the option if not."""
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CtlError(f"{what}: cannot read {path}: {exc}", EXIT_USAGE) from exc


def service_cert_pem(path: str) -> str:
    """The service certificate of ``--service-cert`` (a file, or - for standard input), as
    canonical PEM; a usage error naming the option if it is not a certificate."""
    pem = read_input(path, "--service-cert")
    try:
        return certificate_pem(load_certificate(pem, "--service-cert"))
    except IdentityError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc


def load_json_input(path: str, what: str) -> Any:
    try:
        return json.loads(read_input(path, what))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CtlError(f"{what}: {path} is not JSON: {exc}", EXIT_USAGE) from exc
