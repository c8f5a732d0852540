"""The recovery record (``recovery.record``): any k recovery members' shares, each opened on
the member's own machine, bring back every ledger secret version; everything short of that
is refused with a named reason, and nothing secret is in the record in clear."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.common.canonical import canonical_json
from consortium_node.recovery.record import (
    RecoveryError,
    build_record,
    check_record,
    check_share,
    open_share,
    recover_secrets,
)
from consortium_node.recovery.shares import KEY_SIZE, Share

CONSORTIUM = "demo"
SECRETS = {1: os.urandom(32), 2: os.urandom(32), 3: os.urandom(32)}


@pytest.fixture(scope="module")
def keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {f"{n:064x}": ec.generate_private_key(ec.SECP256R1()) for n in (0xA, 0xB, 0xC)}


def _record(keys: dict[str, ec.EllipticCurvePrivateKey], threshold: int = 2, epoch: int = 1) -> Any:
    public = {m: k.public_key() for m, k in keys.items()}
    return build_record(CONSORTIUM, epoch, SECRETS, public, threshold)


def _opened(record: Any, keys: dict[str, ec.EllipticCurvePrivateKey]) -> dict[str, Share]:
    return {m: open_share(record, CONSORTIUM, m, k) for m, k in keys.items()}


def test_any_threshold_of_the_members_shares_bring_every_secret_back(
    keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    record = check_record(json.loads(canonical_json(_record(keys))))  # as stored in the ledger
    shares = _opened(record, keys)
    for pair in itertools.combinations(shares, 2):
        assert recover_secrets(record, CONSORTIUM, {m: shares[m] for m in pair}) == SECRETS
    assert recover_secrets(record, CONSORTIUM, shares) == SECRETS  # one more than needed
    text = canonical_json(record).decode()
    for secret in SECRETS.values():
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text
    for share in shares.values():
        assert share.value.hex() not in text


def test_one_share_short_leaves_the_secrets_closed(
    keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    record = _record(keys, threshold=3)
    shares = _opened(record, keys)
    two = dict(itertools.islice(shares.items(), 2))
    with pytest.raises(RecoveryError) as refused:
        recover_secrets(record, CONSORTIUM, two)
    assert refused.value.reason == "NotEnoughShares"


def _refusal(call: Any) -> str:
    with pytest.raises(RecoveryError) as refused:
        call()
    return refused.value.reason


def test_wrong_shares_and_keys_are_refused_by_name(
    keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    record = _record(keys)
    a, b, c = sorted(keys)
    shares = _opened(record, keys)
    outsider = f"{0xD:064x}"
    # Another member's share, a forged one, one of a member the record does not name.
    assert _refusal(lambda: check_share(record, CONSORTIUM, a, shares[b])) == "ShareDoesNotMatch"
    forged = Share(shares[a].index, os.urandom(KEY_SIZE))
    assert _refusal(lambda: check_share(record, CONSORTIUM, a, forged)) == "ShareDoesNotMatch"
    assert (
        _refusal(lambda: recover_secrets(record, CONSORTIUM, {a: shares[a], b: forged}))
        == "ShareDoesNotMatch"
    )
    assert (
        _refusal(lambda: open_share(record, CONSORTIUM, outsider, keys[a])) == "NotARecoveryMember"
    )
    # The wrong recovery key, and a member's blob copied into another member's entry.
    assert _refusal(lambda: open_share(record, CONSORTIUM, a, keys[b])) == "ShareDoesNotDecrypt"
    moved = copy.deepcopy(record)
    moved["shares"][a]["encrypted"] = record["shares"][b]["encrypted"]
    assert _refusal(lambda: open_share(moved, CONSORTIUM, a, keys[b])) == "ShareDoesNotDecrypt"
    # Another consortium's name binds the contexts: nothing opens or matches.
    assert _refusal(lambda: open_share(record, "other", a, keys[a])) == "ShareDoesNotDecrypt"
    assert _refusal(lambda: check_share(record, "other", c, shares[c])) == "ShareDoesNotMatch"


def test_a_new_record_makes_the_old_shares_useless(
    keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    old = _opened(_record(keys, epoch=1), keys)
    new = _record(keys, epoch=2)
    a, b, _ = sorted(keys)
    assert (
        _refusal(lambda: recover_secrets(new, CONSORTIUM, {a: old[a], b: old[b]}))
        == "ShareDoesNotMatch"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(wrapped_secrets=base64.b64encode(os.urandom(60)).decode()),
        lambda r: r.update(secret_versions=[1, 2]),  # the AAD names the versions
    ],
)
def test_tampered_wrapped_secrets_do_not_open(
    keys: dict[str, ec.EllipticCurvePrivateKey], change: Any
) -> None:
    record = _record(keys)
    shares = _opened(record, keys)
    change(record)
    assert _refusal(lambda: recover_secrets(record, CONSORTIUM, shares)) == "SecretsDoNotOpen"


@pytest.mark.parametrize(
    ("members", "threshold"), [(0, 1), (3, 0), (3, 4)], ids=["nobody", "zero", "above"]
)
def test_a_record_that_could_never_be_recovered_is_not_built(
    keys: dict[str, ec.EllipticCurvePrivateKey], members: int, threshold: int
) -> None:
    public = {m: k.public_key() for m, k in list(keys.items())[:members]}
    assert (
        _refusal(lambda: build_record(CONSORTIUM, 1, SECRETS, public, threshold)) == "RecordFormat"
    )


@pytest.mark.parametrize(
    "record", [None, [], {"epoch": 1}, {**dict.fromkeys(
        ("epoch", "threshold", "secret_versions", "wrapped_secrets"), 1), "shares": []}],
)  # fmt: skip
def test_a_record_of_another_shape_is_refused(record: object) -> None:
    assert _refusal(lambda: check_record(record)) == "RecordFormat"
