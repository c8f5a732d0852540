"""The server that answers while a node starts (``server/starting.py``), on a real socket."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from cryptography import x509

from consortium_node.server.starting import COMMON_NAME, StartingServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unverified() -> ssl.SSLContext:
    """As a kubelet probe connects: TLS without verifying the server."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, dict[str, str], Any]:
    url = f"https://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_probes_are_answered_while_the_node_starts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="consortium_node")  # as ``consortium-node run`` logs
    port = free_port()
    with StartingServer("127.0.0.1", port) as server:
        assert server.listening
        logging.getLogger("consortium_node.ledger").info("replaying the ledger: %d entries", 5)

        status, _, body = get(port, "/healthz", unverified())
        assert status == 200
        assert body["status"] == "starting" and body["seconds"] >= 0
        assert body["last"] == "replaying the ledger: 5 entries"

        for path in ("/readyz", "/node/state", "/app/kv/x"):
            status, headers, body = get(port, path, unverified())
            assert status == 503, path
            assert body["error"]["code"] == "Starting"
            assert "replaying the ledger: 5 entries" in body["error"]["reason"]
            assert headers["Retry-After"] == "2"
    # Closed: the node's API can bind the port at once.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert not server.listening


def test_a_client_that_verifies_the_node_is_not_answered() -> None:
    """Its certificate is throwaway and self-signed: nothing that trusts the service (or any
    CA) accepts it, so nobody mistakes the starting server for the node."""
    port = free_port()
    with StartingServer("127.0.0.1", port):
        with pytest.raises(urllib.error.URLError) as failed:
            get(port, "/healthz", ssl.create_default_context())
        assert isinstance(failed.value.reason, ssl.SSLCertVerificationError)
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            unverified().wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der or b"")
    assert cert.subject.rfc4514_string() == f"CN={COMMON_NAME}"


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_port_in_use_does_not_stop_the_start() -> None:
    """The probe server that cannot listen cleans up before the start goes on (it raised in
    its thread when the caller stopped its loop during that cleanup)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with StartingServer("127.0.0.1", port) as server:
            assert not server.listening  # the node's own bind will name the problem
