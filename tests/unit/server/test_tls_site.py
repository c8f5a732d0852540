"""How refused TLS handshakes are named and rate-limited in the log (``server/tls_site.py``);
the socket-level behaviour is tested on a real node (tests/integration/test_tls_refusals.py)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest

from consortium_node.server.tls_site import (
    RefusalLog,
    peer_address,
    refusal_reason,
    report_refusal,
)
from tests.support.clock import FakeClock


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


def ssl_error(reason: str | None) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] something" if reason else "something")
    if reason is not None:
        exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (verify_error(18, "self-signed certificate"), "unknown ca (certificate verify failed: "),
        (verify_error(20, "unable to get local issuer certificate"), "unknown ca"),
        (verify_error(10, "certificate has expired"), "certificate expired"),
        (verify_error(9, "certificate is not yet valid"), "bad certificate"),
        (ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no certificate"),
        (ssl_error("HTTP_REQUEST"), "plain HTTP sent to the TLS port"),
        (ssl_error("NO_SHARED_CIPHER"), "no shared cipher"),
        (ssl_error(None), "something"),
    ],
)
def test_refusal_reasons(exc: ssl.SSLError, reason: str) -> None:
    assert refusal_reason(exc).startswith(reason)


@pytest.mark.parametrize(
    ("peername", "host", "shown"),
    [
        (("127.0.0.1", 5000), "127.0.0.1", "127.0.0.1:5000"),
        (("::1", 5000, 0, 0), "::1", "[::1]:5000"),
        (None, "unknown", "unknown address"),
    ],
)
def test_peer_address(peername: Any, host: str, shown: str) -> None:
    assert peer_address(peername) == (host, shown)


def test_one_line_per_address_per_interval_counting_the_rest() -> None:
    clock = FakeClock()
    refusals = RefusalLog(interval=60, clock=clock)
    assert refusals.admit("10.0.0.1") == 0
    assert [refusals.admit("10.0.0.1") for _ in range(5)] == [None] * 5
    assert refusals.admit("10.0.0.2") == 0  # another address is not held back
    clock.now += 59.9
    assert refusals.admit("10.0.0.1") is None
    clock.now += 0.1
    assert refusals.admit("10.0.0.1") == 6
    assert refusals.admit("10.0.0.1") is None


def test_many_addresses_cannot_grow_the_table() -> None:
    clock = FakeClock()
    refusals = RefusalLog(interval=60, max_peers=3, clock=clock)
    for i in range(100):
        assert refusals.admit(f"10.0.0.{i}") == 0
    assert len(refusals._peers) == 3
    assert refusals.admit("10.0.0.99") is None  # the most recent are remembered
    assert refusals.admit("10.0.0.0") == 0  # the oldest were forgotten


def test_report_logs_a_warning_naming_the_peer(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(interval=60, clock=FakeClock())
    exc = verify_error(18, "self-signed certificate")
    with caplog.at_level(logging.WARNING, logger="consortium_node.tls"):
        for port in (5000, 5001):
            report_refusal(refusals, ("192.0.2.7", port), exc)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "TLS handshake refused: peer 192.0.2.7:5000, "
        "unknown ca (certificate verify failed: self-signed certificate)"
    )
