"""TLS refusals on a real node: a client certificate from an unknown CA gets a fatal alert the
client can read, and the node's log names the peer and the reason, once per address per
minute however often it is refused (``server/tls_site.py``)."""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from tests.integration.conftest import Consortium
from tests.support.harness import Identity

REFUSED = "TLS handshake refused"


def refused_handshake(
    c: Consortium, identity: Identity, version: ssl.TLSVersion
) -> tuple[ssl.SSLError, int]:
    """Connect with ``identity``'s certificate and ask for something; the SSL error the client
    gets and the local port it connected from."""
    context = c.node.context(identity)
    context.maximum_version = version
    with socket.create_connection((c.node.host, c.node.port), timeout=10) as sock:
        port = int(sock.getsockname()[1])
        with (
            pytest.raises(ssl.SSLError) as caught,
            context.wrap_socket(sock, server_hostname=c.node.host) as tls,
        ):
            # TLS 1.3: the server judges the client's certificate after the client's side of
            # the handshake is done; its alert arrives on the first read.
            tls.sendall(b"GET /node/state HTTP/1.1\r\nHost: node\r\n\r\n")
            tls.recv(1)
    return caught.value, port


def refusal_lines(c: Consortium) -> list[str]:
    """The node's log lines about refused handshakes, once everything before is logged: the
    node answers this request only after the callbacks that refused earlier connections."""
    assert c.node.get("/node/state")[0] == 200
    return [line for line in c.node.log().splitlines() if REFUSED in line]


def test_unknown_ca_gets_an_alert_and_one_log_line_per_address(consortium: Consortium) -> None:
    c = consortium
    error, port = refused_handshake(c, c.stranger, ssl.TLSVersion.TLSv1_3)
    assert error.reason == "TLSV1_ALERT_UNKNOWN_CA", error
    assert "unknown ca" in str(error)
    (line,) = refusal_lines(c)
    assert re.search(rf"WARNING .*peer 127\.0\.0\.1:{port}, unknown ca \(certificate verify", line)
    for _ in range(3):  # a scanner's retries: each gets its alert, none is logged
        error, _ = refused_handshake(c, c.stranger, ssl.TLSVersion.TLSv1_2)
        assert error.reason == "TLSV1_ALERT_UNKNOWN_CA", error
    assert refusal_lines(c) == [line]
    assert "Traceback" not in c.node.log()


def test_a_registered_member_is_not_refused(consortium: Consortium) -> None:
    status, _ = c_state = consortium.node.get("/node/state", consortium.member)
    assert status == 200, c_state
