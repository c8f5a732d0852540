"""Single-use, expiring, bounded attestation nonces (no sleeps: an injected clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consortium_node.server.nonces import NONCE_LENGTH, NonceCheck, NonceRegistry
from tests.support.clock import FakeClock

TTL = 60.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> NonceRegistry:
    return NonceRegistry(ttl=TTL, capacity=4, clock=clock)


def test_issue_gives_distinct_32_byte_nonces(registry: NonceRegistry) -> None:
    nonces = {registry.issue() for _ in range(4)}
    assert len(nonces) == 4
    assert all(isinstance(n, bytes) and len(n) == NONCE_LENGTH == 32 for n in nonces)


def test_ok_once_then_reused(registry: NonceRegistry, clock: FakeClock) -> None:
    nonce = registry.issue()
    clock.advance(TTL - 0.001)
    assert registry.consume(nonce) is NonceCheck.OK
    assert registry.consume(nonce) is NonceCheck.REUSED
    clock.advance(TTL)  # a replay after expiry is still reported as a replay
    assert registry.consume(nonce) is NonceCheck.REUSED


def test_never_issued_is_unknown(registry: NonceRegistry) -> None:
    registry.issue()
    assert registry.consume(b"\x00" * 32) is NonceCheck.UNKNOWN
    assert registry.consume(b"") is NonceCheck.UNKNOWN


def test_expired_at_ttl(registry: NonceRegistry, clock: FakeClock) -> None:
    nonce = registry.issue()
    clock.advance(TTL)
    assert registry.consume(nonce) is NonceCheck.EXPIRED
    assert registry.consume(nonce) is NonceCheck.EXPIRED  # an expired try does not consume


def test_expired_is_reported_even_after_other_calls_pruned(
    registry: NonceRegistry, clock: FakeClock
) -> None:
    nonce = registry.issue()
    clock.advance(TTL + 1)
    registry.issue()
    assert registry.consume(b"\x01" * 32) is NonceCheck.UNKNOWN
    assert registry.consume(nonce) is NonceCheck.EXPIRED


def test_long_expired_is_pruned_and_unknown(registry: NonceRegistry, clock: FakeClock) -> None:
    nonce = registry.issue()
    clock.advance(2 * TTL)
    assert registry.consume(nonce) is NonceCheck.UNKNOWN
    assert len(registry) == 0


def test_the_string_values() -> None:
    assert [c.value for c in NonceCheck] == ["Ok", "Unknown", "Reused", "Expired"]
    assert str(NonceCheck.REUSED) == "Reused"
    assert f"{NonceCheck.EXPIRED}" == "Expired"


def test_ttl_as_timedelta(clock: FakeClock) -> None:
    registry = NonceRegistry(ttl=timedelta(seconds=5), clock=clock)
    assert registry.ttl == 5.0
    nonce = registry.issue()
    clock.advance(5)
    assert registry.consume(nonce) is NonceCheck.EXPIRED


@pytest.mark.parametrize("ttl", [0, -1.0, timedelta(0)])
def test_ttl_must_be_positive(ttl: float | timedelta) -> None:
    with pytest.raises(ValueError, match="ttl"):
        NonceRegistry(ttl=ttl)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        NonceRegistry(ttl=TTL, capacity=0)


def test_at_capacity_the_oldest_is_evicted_in_issue_order(
    registry: NonceRegistry, clock: FakeClock
) -> None:
    issued = []
    for _ in range(4):
        issued.append(registry.issue())
        clock.advance(1)
    assert len(registry) == 4
    fifth = registry.issue()
    assert len(registry) == 4
    assert registry.consume(issued[0]) is NonceCheck.UNKNOWN
    sixth = registry.issue()
    assert registry.consume(issued[1]) is NonceCheck.UNKNOWN
    for nonce in (*issued[2:], fifth, sixth):
        assert registry.consume(nonce) is NonceCheck.OK


def test_consumed_nonces_count_towards_capacity_and_are_evicted(
    registry: NonceRegistry,
) -> None:
    first = registry.issue()
    assert registry.consume(first) is NonceCheck.OK
    for _ in range(4):
        registry.issue()
    assert len(registry) == 4
    assert registry.consume(first) is NonceCheck.UNKNOWN  # evicted: no longer tracked


def test_capacity_bound_holds_under_many_issues(clock: FakeClock) -> None:
    registry = NonceRegistry(ttl=TTL, capacity=16, clock=clock)
    nonces = [registry.issue() for _ in range(1000)]
    assert len(registry) == 16
    assert all(registry.consume(n) is NonceCheck.UNKNOWN for n in nonces[:-16])
    assert all(registry.consume(n) is NonceCheck.OK for n in nonces[-16:])


def test_pruning_frees_slots_so_live_nonces_are_not_evicted(
    registry: NonceRegistry, clock: FakeClock
) -> None:
    for _ in range(3):
        registry.issue()
    clock.advance(2 * TTL)  # the three are now past their retention window
    live = registry.issue()
    assert len(registry) == 1
    more = [registry.issue() for _ in range(3)]
    assert len(registry) == 4
    assert registry.consume(live) is NonceCheck.OK
    assert all(registry.consume(n) is NonceCheck.OK for n in more)


def test_pruning_is_lazy_and_in_expiry_order(registry: NonceRegistry, clock: FakeClock) -> None:
    old = registry.issue()
    clock.advance(TTL)
    newer = registry.issue()
    clock.advance(TTL)  # old: expired for one ttl -> pruned; newer: just expired -> kept
    assert len(registry) == 2  # nothing happens until the next call
    assert registry.consume(newer) is NonceCheck.EXPIRED
    assert len(registry) == 1
    assert registry.consume(old) is NonceCheck.UNKNOWN
    clock.advance(TTL)
    registry.issue()
    assert len(registry) == 1
    assert registry.consume(newer) is NonceCheck.UNKNOWN
