"""``consortiumctl``'s HTTPS client against a real TLS server on loopback: which failures are
"the node is not there" (exit 3) and which are "the node answered but does not verify under
this name" (exit 1, naming the names the certificate does carry); and which answers the
receipt poll treats as "not yet" rather than "no"."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from consortium_node.common.timeutil import utcnow
from consortium_node.ctl.client import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    CtlError,
    NodeClient,
    Response,
    name_mismatch,
)
from consortium_node.ctl.main import POLL_FIRST, POLL_MAX, retry_after
from consortium_node.identity import keys
from consortium_node.identity.certs import ServiceIdentity, certificate_pem, issue_node_certificate
from tests.support.harness import free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def serve(tmp: Path, service: ServiceIdentity, names: list[str]) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 presenting a service-issued certificate for ``names``."""
    key = keys.generate_key("p256")
    cert = issue_node_certificate(
        service, key.public_key(), subject_alt_names=names, not_after=utcnow() + timedelta(hours=1)
    )
    (tmp / "key.pem").write_bytes(keys.private_key_pem(key))
    (tmp / "cert.pem").write_text(certificate_pem(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("demo")


@pytest.fixture
def moved_node(tmp_path: Path, service: ServiceIdentity) -> Iterator[int]:
    """A node whose certificate still names its old address, now reached at 127.0.0.1."""
    yield from serve(tmp_path, service, ["10.88.0.17", "demo-1.demo.ns.svc", "localhost"])


@pytest.fixture
def named_node(tmp_path: Path, service: ServiceIdentity) -> Iterator[int]:
    yield from serve(tmp_path, service, ["127.0.0.1", "localhost"])


def test_a_certificate_for_other_names_is_a_verification_failure_naming_them(
    moved_node: int, service: ServiceIdentity
) -> None:
    client = NodeClient(f"https://127.0.0.1:{moved_node}", service.certificate_pem)
    with pytest.raises(CtlError) as caught:
        client.request("GET", "/node/state")
    assert caught.value.exit_code == EXIT_FAILED
    message = str(caught.value)
    assert "not valid for '127.0.0.1'" in message
    assert "10.88.0.17" in message and "demo-1.demo.ns.svc" in message
    assert "unreachable" not in message and "cannot connect" not in message


def test_the_same_node_under_a_name_it_carries_answers(
    moved_node: int, service: ServiceIdentity
) -> None:
    client = NodeClient(f"https://localhost:{moved_node}", service.certificate_pem)
    assert client.request("GET", "/node/state").json() == {"ok": True}


def test_another_consortiums_certificate_is_a_verification_failure(named_node: int) -> None:
    other = ServiceIdentity.create("other")
    client = NodeClient(f"https://127.0.0.1:{named_node}", other.certificate_pem)
    with pytest.raises(CtlError) as caught:
        client.request("GET", "/node/state")
    assert caught.value.exit_code == EXIT_FAILED
    assert "does not verify with the given service certificate" in str(caught.value)


def test_no_node_there_is_unreachable(service: ServiceIdentity) -> None:
    client = NodeClient(f"https://127.0.0.1:{free_port()}", service.certificate_pem)
    with pytest.raises(CtlError) as caught:
        client.request("GET", "/node/state")
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "cannot connect" in str(caught.value)


def test_the_mismatch_message_without_readable_names() -> None:
    message = name_mismatch("https://10.0.0.5:8443", None)
    assert "'10.0.0.5'" in message and "could not be read" in message


def _response(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode(), {})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(202, {"retry_after_ms": 20}, POLL_FIRST, id="pending-hint-floored"),
        pytest.param(202, {"retry_after_ms": 300}, 0.3, id="pending-hint"),
        pytest.param(202, {"retry_after_ms": 60_000}, POLL_MAX, id="pending-hint-capped"),
        pytest.param(404, {"error": {"code": "NotCommittedYet"}}, 0.4, id="backup-behind-retries"),
        pytest.param(404, {"error": {"code": "NotFound"}}, None, id="unknown-is-final"),
        pytest.param(403, {"error": {"code": "Forbidden"}}, None, id="refused-is-final"),
        pytest.param(503, {"error": {"code": "Unavailable"}}, None, id="unavailable-is-final"),
    ],
)
def test_what_the_receipt_poll_retries(status: int, body: Any, expected: float | None) -> None:
    assert retry_after(_response(status, body), 0.4) == expected


def test_a_backup_far_behind_is_polled_at_most_every_poll_max() -> None:
    assert retry_after(_response(404, {"error": {"code": "NotCommittedYet"}}), 30.0) == POLL_MAX
