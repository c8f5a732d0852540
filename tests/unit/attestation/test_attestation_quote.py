"""Quote: JSON round trip, strict parsing, signed bytes, report data."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from attestation_support import NONCE, NOW, Setup

from consortium_node.attestation import QuoteFormatError
from consortium_node.attestation.insecure_virtual import QUOTE_FORMAT, Quote, report_data_for
from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import rfc3339

FIELDS = [
    "format",
    "measurement",
    "host_data",
    "report_data",
    "nonce",
    "timestamp",
    "tcb_version",
    "chip_id",
    "signature",
    "endorsements",
]


@pytest.fixture(scope="module")
def quote_json(setup: Setup) -> dict[str, Any]:
    return setup.enclave().quote(setup.node_key_der, NONCE).to_json()


def test_quote_format_constant() -> None:
    assert QUOTE_FORMAT == "insecure-virtual/v1"


def test_to_json_has_exactly_the_documented_fields(quote_json: dict[str, Any]) -> None:
    assert sorted(quote_json) == sorted(FIELDS)
    assert isinstance(quote_json["endorsements"], list)
    assert quote_json["format"] == QUOTE_FORMAT
    assert quote_json["timestamp"] == rfc3339(NOW)


def test_round_trip_through_json_text(quote_json: dict[str, Any]) -> None:
    parsed = Quote.from_json(json.loads(json.dumps(quote_json)))
    assert parsed.to_json() == quote_json
    assert Quote.from_json(parsed.to_json()) == parsed
    assert isinstance(parsed.endorsements, tuple)


def test_signed_bytes_cover_everything_but_signature_and_endorsements(
    quote_json: dict[str, Any],
) -> None:
    quote = Quote.from_json(quote_json)
    body = {k: v for k, v in quote_json.items() if k not in ("signature", "endorsements")}
    assert quote.signed_bytes() == canonical_json(body)
    assert b"signature" not in quote.signed_bytes()
    assert b"endorsements" not in quote.signed_bytes()


def test_report_data_is_key_hash_then_nonce_hash() -> None:
    data = report_data_for(b"key-der", b"nonce")
    assert len(data) == 64
    assert data[:32] == hashlib.sha256(b"key-der").digest()
    assert data[32:] == hashlib.sha256(b"nonce").digest()


BAD_VALUES: list[tuple[str, object]] = [
    ("format", "sev-snp/v1"),
    ("format", 1),
    ("measurement", "ab" * 31),
    ("measurement", "AB" * 32),
    ("measurement", "zz" * 32),
    ("measurement", 5),
    ("host_data", "ab" * 33),
    ("host_data", None),
    ("report_data", "ab" * 32),
    ("report_data", "abc"),
    ("nonce", ""),
    ("nonce", "a"),
    ("nonce", "00" * 1025),
    ("timestamp", "yesterday"),
    ("timestamp", "2026-01-02T03:04:05+01:00"),
    ("timestamp", "2026-01-02T03:04:05.5Z"),
    ("timestamp", 1767322000),
    ("tcb_version", -1),
    ("tcb_version", 2**32),
    ("tcb_version", "1"),
    ("tcb_version", True),
    ("tcb_version", 1.0),
    ("chip_id", ""),
    ("chip_id", "x" * 65),
    ("chip_id", "tab\there"),
    ("chip_id", 7),
    ("signature", ""),
    ("signature", "not hex"),
    ("signature", "00" * 257),
    ("endorsements", []),
    ("endorsements", "-----BEGIN CERTIFICATE-----"),
    ("endorsements", ["-----BEGIN CERTIFICATE-----"] * 9),
    ("endorsements", {"0": "pem"}),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_from_json_names_the_bad_field(
    quote_json: dict[str, Any], field: str, value: object
) -> None:
    with pytest.raises(QuoteFormatError) as caught:
        Quote.from_json({**quote_json, field: value})
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {caught.value.reason}"


@pytest.mark.parametrize("item", [1, "no pem here", None])
def test_from_json_names_the_bad_endorsement(quote_json: dict[str, Any], item: object) -> None:
    with pytest.raises(QuoteFormatError) as caught:
        Quote.from_json({**quote_json, "endorsements": [*quote_json["endorsements"], item]})
    assert caught.value.field == "endorsements[1]"


@pytest.mark.parametrize("field", FIELDS)
def test_from_json_rejects_a_missing_field(quote_json: dict[str, Any], field: str) -> None:
    incomplete = {k: v for k, v in quote_json.items() if k != field}
    with pytest.raises(QuoteFormatError) as caught:
        Quote.from_json(incomplete)
    assert (caught.value.field, caught.value.reason) == (field, "missing")


def test_from_json_rejects_an_unknown_field(quote_json: dict[str, Any]) -> None:
    with pytest.raises(QuoteFormatError) as caught:
        Quote.from_json({**quote_json, "vmpl": 0})
    assert (caught.value.field, caught.value.reason) == ("vmpl", "unknown field")


@pytest.mark.parametrize("obj", [None, [], "quote", 3])
def test_from_json_rejects_non_objects(obj: object) -> None:
    with pytest.raises(QuoteFormatError) as caught:
        Quote.from_json(obj)
    assert caught.value.field == "quote"


def test_constructor_validates_too(quote_json: dict[str, Any]) -> None:
    values = {**quote_json, "endorsements": tuple(quote_json["endorsements"])}
    values["measurement"] = "short"
    with pytest.raises(QuoteFormatError, match=r"^measurement: "):
        Quote(**values)


def test_create_signs_the_signed_bytes(setup: Setup) -> None:
    chip = setup.platform.chip("node-0")
    seen: list[bytes] = []

    def sign(data: bytes) -> bytes:
        seen.append(data)
        return chip.sign(data)

    quote = Quote.from_json(setup.hand_quote(chip, sign=sign))
    assert seen == [quote.signed_bytes()]
