"""Join requests may ask for extra certificate names (a pod's IP and DNS names)."""

from __future__ import annotations

import pytest

from consortium_node.server.errors import BadRequestError
from consortium_node.server.http_errors import api_error
from consortium_node.server.validation import MAX_SANS, parse_sans


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["10.89.0.7"],
        ["demo-1.demo-nodes.ns.svc.cluster.local", "demo-1.demo-nodes", "fd00::7"],
        [f"n{i}.example" for i in range(MAX_SANS)],
    ],
)
def test_accepted(names: list[str]) -> None:
    assert parse_sans(names) == tuple(names)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("10.0.0.1", "subject_alt_names"),
        ([f"n{i}.example" for i in range(MAX_SANS + 1)], "subject_alt_names"),
        ([7], "subject_alt_names[0]"),
        (["ok.example", "Upper.Example"], "subject_alt_names[1]"),
        (["under_score.example"], "subject_alt_names[0]"),
        (["a" * 64 + ".example"], "subject_alt_names[0]"),
        (["*.wildcard.example"], "subject_alt_names[0]"),
    ],
)
def test_refused_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_sans(value)
    answer = api_error(caught.value)
    assert answer.status == 400
    assert answer.body()["error"]["field"] == field
