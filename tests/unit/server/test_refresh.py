"""refresh.py and ``POST /node/refresh``'s validation: when a node announces its address and
names, and what the primary accepts as an announcement."""

from __future__ import annotations

from typing import Any

import pytest

from consortium_node.server.errors import BadRequestError
from consortium_node.server.http_errors import api_error
from consortium_node.server.refresh import Announcement, announcement, normal
from consortium_node.server.validation import parse_refresh

ADDRESS = "demo-1.demo-nodes.ns.svc.cluster.local:8443"
NAMES = ["demo-1.demo-nodes.ns.svc.cluster.local", "10.88.0.7", "localhost"]


def test_nothing_to_announce_when_list_and_certificate_agree() -> None:
    certified = ["localhost", "10.88.0.7", "demo-1.demo-nodes.ns.svc.cluster.local", "extra"]
    assert announcement(ADDRESS, NAMES, ADDRESS, certified) is None


def test_a_new_pod_ip_is_announced_with_every_name() -> None:
    wanted = [NAMES[0], "10.88.0.23", "localhost"]
    found = announcement(ADDRESS, wanted, ADDRESS, NAMES)
    assert found == Announcement(ADDRESS, (NAMES[0], "10.88.0.23", "localhost"))


def test_a_new_address_is_announced_even_if_the_certificate_names_it() -> None:
    found = announcement("127.0.0.2:9000", ["127.0.0.2"], "127.0.0.1:9000", ["127.0.0.2"])
    assert found is not None and found.address == "127.0.0.2:9000"


@pytest.mark.parametrize(
    ("written", "compared"),
    [
        ("Demo-1.Example.", "demo-1.example"),
        ("::0:1", "::1"),
        ("[::1]", "::1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_names_compare_as_certificates_do(written: str, compared: str) -> None:
    assert normal(written) == compared
    assert announcement("h:1", [written], "h:1", [compared]) is None


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "address": "127.0.0.2:9000",
        "subject_alt_names": ["127.0.0.2", "localhost"],
        "quote": {"format": "insecure-virtual"},
        "nonce": "ab" * 32,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not ...}


def test_a_refresh_request_parses() -> None:
    parsed = parse_refresh(body())
    assert parsed.address == "127.0.0.2:9000"
    assert parsed.subject_alt_names == ("127.0.0.2", "localhost")
    assert parsed.nonce == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"address": "no-port"}, "address"),
        ({"address": 7}, "address"),
        ({"subject_alt_names": ["Not A Name!"]}, "subject_alt_names[0]"),
        ({"subject_alt_names": ["a"] * 17}, "subject_alt_names"),
        ({"quote": "text"}, "quote"),
        ({"nonce": "zz"}, "nonce"),
        ({"nonce": ...}, "nonce"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_refresh_request_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_refresh(body(**changes))
    assert api_error(caught.value).status == 400 and caught.value.field == field
