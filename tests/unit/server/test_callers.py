"""callers.py: who is calling (a TLS client certificate → an Active member) and what they may do."""

from __future__ import annotations

import pytest

from consortium_node.identity import keys
from consortium_node.server.callers import (
    APP_ROLES,
    NETWORK_ROLES,
    Member,
    forwarded_member,
    member_calling,
    require_role,
)
from consortium_node.server.errors import ForbiddenError, UnauthenticatedError
from consortium_node.server.http_errors import api_error

DER = b"a member's certificate"
MEMBER_ID = keys.member_id_of(DER)


def members(role: str = "user", status: str = "Active") -> dict[str, Member]:
    return {MEMBER_ID: Member(MEMBER_ID, role, status, "PEM")}


def test_an_active_member_is_the_caller() -> None:
    assert member_calling(members(), DER).member_id == MEMBER_ID


@pytest.mark.parametrize("der", [None, b""])
def test_no_certificate_is_401(der: bytes | None) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        member_calling(members(), der)
    assert api_error(info.value).status == 401 and info.value.field == "client_certificate"


@pytest.mark.parametrize(("known", "status"), [(True, "Accepted"), (False, "Active")])
def test_not_an_active_member_is_403(known: bool, status: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        member_calling(members(status=status) if known else {}, DER)
    assert api_error(info.value).status == 403 and info.value.field == "client_certificate"


def test_roles() -> None:
    operator = members("operator")[MEMBER_ID]
    assert require_role(operator, NETWORK_ROLES, "x") is operator
    with pytest.raises(ForbiddenError, match="only members and users"):
        require_role(operator, APP_ROLES, "members and users")


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        ({}, "not an Active member or user"),
        (members(status="Accepted"), "not an Active member or user"),
        (members("operator"), "only members and users read and write application data"),
    ],
)
def test_a_forwarded_write_is_checked_again(found: dict[str, Member], reason: str) -> None:
    with pytest.raises(ForbiddenError, match=reason) as info:
        forwarded_member(found, MEMBER_ID)
    assert info.value.field == "member_id"
    assert forwarded_member(members("governor"), MEMBER_ID).role == "governor"
