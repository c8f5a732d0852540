"""A small synchronous HTTPS client for the node API (stdlib only).

The client trusts only the service certificate (node TLS certificates are issued by it) and
authenticates with a member/user certificate when one is given. Failures become ``CtlError``
with a message a person can act on; HTTP errors carry the node's JSON error.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


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
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CtlError(
                    f"{self.base}: the node's certificate does not chain to the given service "
                    f"certificate ({reason.verify_message})",
                    EXIT_UNREACHABLE,
                ) from exc
            if isinstance(reason, ssl.SSLError):
                raise CtlError(
                    f"{self.base}: TLS handshake failed ({reason.reason}); if it names a "
                    "certificate, the node does not accept yours",
                    EXIT_UNREACHABLE,
                ) from exc
            raise CtlError(f"{self.base}: cannot connect: {reason}", EXIT_UNREACHABLE) from exc
        except (TimeoutError, ConnectionError) as exc:
            raise CtlError(f"{self.base}: {exc}", EXIT_UNREACHABLE) from exc

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


def load_json_input(path: str, what: str) -> Any:
    try:
        return json.loads(read_input(path, what))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CtlError(f"{what}: {path} is not JSON: {exc}", EXIT_USAGE) from exc
