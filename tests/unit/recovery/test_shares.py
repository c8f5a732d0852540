"""Shamir sharing of the recovery key (``recovery.shares``): a published interoperability
vector, every k of n shares for k <= n <= 10, fewer than k shares consistent with every key,
and the errors that name what is wrong."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence

import pytest
from Crypto.Protocol.SecretSharing import _Element  # test only: to build a consistent share

from consortium_node.recovery.shares import (
    HALF,
    KEY_SIZE,
    SHARE_SIZE,
    Share,
    ShareError,
    combine,
    split,
)

# A 2-of-3 share set made with B. Poettering's ssss v0.5 (``ssss-split -t 2 -n 3 -s 128 -D -x``),
# as published in PyCryptodome's self-test (lib/Crypto/SelfTest/Protocol/test_SecretSharing.py,
# Shamir_Tests.test2): an implementation independent of the one we call.
SSSS_SECRET = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SSSS_SHARES = {
    1: bytes.fromhex("0b8cbb92e2a750defa563537d72942a2"),
    2: bytes.fromhex("171a7120c941abb4ecb77472ba459753"),
    3: bytes.fromhex("1c97c8b12fe3fd6d1ee84b4e6161dbfe"),
}


@pytest.mark.parametrize("pair", list(itertools.combinations(SSSS_SHARES, 2)))
def test_shares_made_by_ssss_combine_to_their_secret(pair: tuple[int, int]) -> None:
    # Both halves of our key are shared alike: give each half the ssss share set.
    shares = [Share(i, SSSS_SHARES[i] + SSSS_SHARES[i]) for i in pair]
    assert combine(shares, 2) == SSSS_SECRET + SSSS_SECRET


CASES = [(k, n) for n in range(1, 11) for k in range(1, n + 1)]


@pytest.mark.parametrize(("k", "n"), CASES, ids=[f"{k}-of-{n}" for k, n in CASES])
def test_every_k_of_n_shares_rebuild_the_key(k: int, n: int) -> None:
    key = os.urandom(KEY_SIZE)
    shares = split(key, k, n)
    assert [s.index for s in shares] == list(range(1, n + 1))
    assert all(len(s.to_bytes()) == SHARE_SIZE for s in shares)
    subsets = list(itertools.combinations(shares, k))
    # Every subset up to 12; beyond, the first, the last and 10 drawn at random (the field
    # arithmetic is pure Python: all 252 five-of-ten subsets take seconds).
    if len(subsets) > 12:
        subsets = [subsets[0], subsets[-1], *random.sample(subsets[1:-1], 10)]
    for subset in subsets:
        assert combine(subset, k) == key
        assert combine(list(reversed(subset)), k) == key  # in any order
    with pytest.raises(ShareError) as missing:
        combine(shares[: k - 1], k)
    assert missing.value.reason == "NotEnoughShares"
    assert [Share.from_bytes(s.to_bytes()) for s in shares] == shares


def test_each_split_uses_fresh_coefficients() -> None:
    key = os.urandom(KEY_SIZE)
    assert split(key, 2, 3) != split(key, 2, 3)


def _consistent_share(known: Sequence[Share], k: int, index: int, target: bytes) -> Share:
    """The share at ``index`` that, with the ``k - 1`` shares ``known``, rebuilds ``target``:
    Lagrange interpolation in GF(2^128) through (0, target half) and the known points (in
    ssss mode a share is the polynomial's value plus x^k)."""

    def half(part: slice) -> bytes:
        points = [(_Element(0), _Element(target[part]))] + [
            (_Element(s.index), _Element(s.value[part]) + _Element(s.index) ** k) for s in known
        ]
        x = _Element(index)
        value = _Element(0)
        for j, (x_j, y_j) in enumerate(points):
            term = y_j
            for m, (x_m, _) in enumerate(points):
                if m != j:
                    term = term * (x + x_m) * (x_j + x_m).inverse()  # + is - in GF(2^n)
            value = value + term
        return (value + x**k).encode()

    return Share(index, half(slice(0, HALF)) + half(slice(HALF, KEY_SIZE)))


@pytest.mark.parametrize(("k", "n"), [(2, 3), (3, 5), (4, 10), (10, 10)])
def test_fewer_than_k_shares_are_consistent_with_every_key(k: int, n: int) -> None:
    """k - 1 shares reveal nothing checkable: for any key at all there is a k-th share
    that, with them, rebuilds exactly that key."""
    key = os.urandom(KEY_SIZE)
    shares = split(key, k, n)
    known = shares[: k - 1]
    for target in (os.urandom(KEY_SIZE), bytes(KEY_SIZE), key):
        forged = _consistent_share(known, k, shares[-1].index, target)
        assert combine([*known, forged], k) == target
    # The real k-th share is the one consistent with the real key.
    assert _consistent_share(known, k, shares[-1].index, key) == shares[-1]


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: split(os.urandom(16), 2, 3), "ShareFormat"),
        (lambda: split(os.urandom(KEY_SIZE), 0, 3), "ShareFormat"),
        (lambda: split(os.urandom(KEY_SIZE), 4, 3), "ShareFormat"),
        (lambda: split(os.urandom(KEY_SIZE), 1, 256), "ShareFormat"),
        (lambda: Share(0, bytes(KEY_SIZE)), "ShareFormat"),
        (lambda: Share(1, bytes(KEY_SIZE - 1)), "ShareFormat"),
        (lambda: Share.from_bytes(bytes(SHARE_SIZE + 1)), "ShareFormat"),
        (lambda: combine([Share(1, bytes(KEY_SIZE)), Share(1, bytes(KEY_SIZE))], 2),
         "DuplicateShare"),
        (lambda: combine([Share(1, bytes(KEY_SIZE))], 2), "NotEnoughShares"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_named_reason(call: object, reason: str) -> None:
    with pytest.raises(ShareError) as refused:
        call()  # type: ignore[operator]
    assert refused.value.reason == reason
