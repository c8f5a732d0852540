"""gov_apply.effects_of: what an accepted proposal writes, and what it refuses to do."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.governance.actions import parse_actions
from consortium_node.governance.constitution import Constitution
from consortium_node.governance.errors import GovernanceError
from consortium_node.recovery.record import recovery_key_pem
from consortium_node.server.genesis import T_ATTESTATION, T_CONSTITUTION, T_MEMBERS
from consortium_node.server.gov_apply import GovState, effects_of
from consortium_node.server.service_state import SERVICE_KEY, T_SERVICE, opened_row, recovering_row
from tests.unit.governance.support import member

G = [f"{i:064x}" for i in range(1, 4)]  # three Active governors
M1, M2, H1 = "aa" * 32, "bb" * 32, "cc" * 32
N_TRUSTED, N_PENDING, N_RETIRED = "d1" * 32, "d2" * 32, "d3" * 32


def state(threshold: str | int = "majority", trusted: int = 2) -> GovState:
    members = {g: {"certificate": "PEM", "role": "governor", "status": "Active"} for g in G}
    members["ee" * 32] = {"certificate": "PEM", "role": "user", "status": "Active"}
    nodes = {N_PENDING: "Pending", N_RETIRED: "Retired", N_TRUSTED: "Trusted"}
    if trusted > 1:
        nodes["d4" * 32] = "Trusted"
    policy = {
        "measurements": [M1],
        "host_data": [H1],
        "validity_seconds": 86400,
        "renew_before_seconds": 3600,
    }
    return GovState(members, policy, Constitution(threshold=threshold), nodes)


def act(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


def effects(*actions: dict[str, Any], **kw: Any) -> Any:
    return effects_of(parse_actions(list(actions)), state(**kw))


def test_measurements_host_data_and_validity_rewrite_the_policy() -> None:
    out = effects(
        act("add_measurement", measurement=M2),
        act("add_host_data", host_data="dd" * 32),
        act("set_attestation_validity", validity_seconds=7200, renew_before_seconds=600),
    )
    policy = out.writes[T_ATTESTATION]["policy"]
    assert policy["measurements"] == sorted([M1, M2])
    assert policy["host_data"] == sorted([H1, "dd" * 32])
    assert (policy["validity_seconds"], policy["renew_before_seconds"]) == (7200, 600)
    assert out.measurements_changed and set(out.writes) == {T_ATTESTATION}


def test_the_sev_snp_policy_is_set_in_the_ledger_policy_and_the_rest_kept() -> None:
    snp = {"minimum_tcb": {"Genoa": {"snp": 24}}, "products": ["Genoa"]}
    out = effects(
        act("add_measurement", measurement="ab" * 48), act("set_sev_snp_policy", policy=snp)
    )
    policy = out.writes[T_ATTESTATION]["policy"]
    assert policy["platform"] == {
        "sev-snp": {"minimum_tcb": {"Genoa": {"snp": 24}}, "allow_debug": False, "vmpl": 0,
                    "products": ["Genoa"]},
    }  # fmt: skip
    assert policy["measurements"] == sorted([M1, "ab" * 48])
    assert policy["host_data"] == [H1]


def test_members_added_accepted_and_removed_deleted() -> None:
    out = effects(act("remove_member", member_id=G[2]))
    assert out.writes == {T_MEMBERS: {G[2]: None}}


def test_node_trust_and_retirement_become_list_changes() -> None:
    out = effects(act("trust_node", node_id=N_PENDING), act("retire_node", node_id=N_TRUSTED))
    assert (out.trust, out.retire) == ([N_PENDING], [N_TRUSTED])
    assert out.writes == {}


def test_constitution_is_written_in_full_form() -> None:
    out = effects(act("set_constitution", constitution={"threshold": 2}))
    assert out.writes[T_CONSTITUTION]["constitution"]["threshold"] == 2
    assert out.writes[T_CONSTITUTION]["constitution"]["auto_approve"] == []


@pytest.mark.parametrize(
    ("actions", "kw", "reason"),
    [
        pytest.param(
            [act("add_measurement", measurement=M1)],
            {},
            "already in measurements",
            id="dup-measurement",
        ),
        pytest.param(
            [act("remove_measurement", measurement=M2)],
            {},
            "not in measurements",
            id="absent-measurement",
        ),
        pytest.param(
            [act("remove_measurement", measurement=M1)], {}, "empty", id="last-measurement"
        ),
        pytest.param([act("remove_host_data", host_data=H1)], {}, "empty", id="last-host-data"),
        pytest.param(
            [act("remove_member", member_id="ff" * 32)], {}, "not a member", id="unknown-member"
        ),
        pytest.param(
            [act("remove_member", member_id=G[0])],
            {"threshold": 3},
            "threshold of 3",
            id="threshold-unreachable",
        ),
        pytest.param(
            [act("set_constitution", constitution={"threshold": 4})],
            {},
            "threshold of 4",
            id="constitution-unreachable",
        ),
        pytest.param(
            [act("trust_node", node_id=N_TRUSTED)],
            {},
            "is Trusted, not Pending",
            id="trust-trusted",
        ),
        pytest.param(
            [act("retire_node", node_id=N_RETIRED)], {}, "is Retired", id="retire-retired"
        ),
        pytest.param([act("trust_node", node_id="ab" * 32)], {}, "unknown", id="unknown-node"),
        pytest.param(
            [act("retire_node", node_id=N_TRUSTED)],
            {"trusted": 1},
            "last Trusted",
            id="last-trusted",
        ),
    ],
)
def test_what_cannot_apply_names_the_action(
    actions: list[dict[str, Any]], kw: dict[str, Any], reason: str
) -> None:
    with pytest.raises(GovernanceError) as caught:
        effects(
            act("set_attestation_validity", validity_seconds=7200, renew_before_seconds=600),
            *actions,
            **kw,
        )
    assert caught.value.field == "actions[1]"
    assert reason in caught.value.reason


def test_removing_every_governor_is_refused() -> None:
    with pytest.raises(GovernanceError) as caught:
        effects(*(act("remove_member", member_id=g) for g in G))
    assert caught.value.field == "actions[2]" and "no Active governor" in caught.value.reason


def test_add_member_of_an_existing_member_is_refused() -> None:
    from consortium_node.identity import keys  # noqa: PLC0415
    from consortium_node.identity.certs import certificate_pem, self_signed_certificate  # noqa: PLC0415

    pem = certificate_pem(self_signed_certificate(keys.generate_key("p256"), "new"))
    first = effects(act("add_member", certificate=pem, role="user"))
    [(member_id, record)] = first.writes[T_MEMBERS].items()
    assert record == {"certificate": pem, "role": "user", "status": "Accepted"}
    s = state()
    members = {**s.members, member_id: record}
    again = GovState(members, s.policy, s.constitution, s.nodes)
    with pytest.raises(GovernanceError, match="already a member"):
        effects_of(parse_actions([act("add_member", certificate=pem, role="user")]), again)


def test_rotation_wraps_to_every_node_trusted_once_the_proposal_applied() -> None:
    out = effects(act("rotate_ledger_secret"))
    assert out.secret_recipients == sorted([N_TRUSTED, "d4" * 32]) and out.writes == {}
    # Trusted in the same proposal: a recipient; retired in it: not.
    out = effects(
        act("trust_node", node_id=N_PENDING),
        act("retire_node", node_id=N_TRUSTED),
        act("rotate_ledger_secret"),
    )
    assert out.secret_recipients == sorted([N_PENDING, "d4" * 32])
    assert (out.trust, out.retire) == ([N_PENDING], [N_TRUSTED])


def test_no_rotation_no_recipients() -> None:
    assert effects(act("add_measurement", measurement=M2)).secret_recipients is None


def test_rotating_twice_in_one_proposal_is_refused_by_effects_too() -> None:
    rotate = parse_actions([act("rotate_ledger_secret")])
    with pytest.raises(GovernanceError) as caught:
        effects_of(rotate + rotate, state())
    assert caught.value.field == "actions[1]" and "already rotates" in caught.value.reason


# ---------------------------------------------------------------------- recovery members
def _recovery_key() -> str:
    return recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())


KEYS = [_recovery_key() for _ in range(3)]


def recovery_state(holders: int, recovery_threshold: str | int) -> GovState:
    base = state()
    members = {m: dict(v) for m, v in base.members.items()}
    for g, key in zip(G[:holders], KEYS, strict=False):
        members[g]["recovery_key"] = key
    constitution = Constitution(recovery_threshold=recovery_threshold)
    return GovState(members, base.policy, constitution, base.nodes)


def test_recovery_keys_are_set_and_cleared_on_the_member_record() -> None:
    out = effects_of(
        parse_actions([act("set_recovery_key", member_id=G[0], recovery_key=KEYS[0])]),
        recovery_state(0, "majority"),
    )
    assert out.writes[T_MEMBERS][G[0]]["recovery_key"] == KEYS[0]
    assert out.writes[T_MEMBERS][G[0]]["status"] == "Active"
    out = effects_of(
        parse_actions([act("set_recovery_key", member_id=G[0], recovery_key=None)]),
        recovery_state(3, "majority"),
    )
    assert "recovery_key" not in out.writes[T_MEMBERS][G[0]]


@pytest.mark.parametrize(
    ("actions", "holders", "threshold"),
    [
        pytest.param(
            [act("set_recovery_key", member_id=G[0], recovery_key=None)], 2, 2, id="drop-a-key"
        ),
        pytest.param([act("remove_member", member_id=G[1])], 2, 2, id="remove-a-holder"),
        pytest.param(
            [act("set_constitution", constitution={"recovery_threshold": 4})], 3, 2,
            id="threshold-above-holders",
        ),
    ],
)  # fmt: skip
def test_a_recovery_threshold_left_out_of_reach_is_refused(
    actions: list[dict[str, Any]], holders: int, threshold: int
) -> None:
    with pytest.raises(GovernanceError) as refused:
        effects_of(parse_actions(actions), recovery_state(holders, threshold))
    assert "could no longer be recovered" in str(refused.value)


def test_a_reachable_recovery_threshold_is_accepted() -> None:
    out = effects_of(
        parse_actions([act("set_constitution", constitution={"recovery_threshold": 3})]),
        recovery_state(3, "majority"),
    )
    assert out.writes[T_CONSTITUTION]["constitution"]["recovery_threshold"] == 3
    with pytest.raises(GovernanceError, match="is not a member"):
        effects_of(
            parse_actions([act("set_recovery_key", member_id="ab" * 32, recovery_key=KEYS[0])]),
            recovery_state(0, "majority"),
        )


def test_only_governors_are_recovery_members() -> None:
    user = "ee" * 32  # the state's Active user
    with pytest.raises(GovernanceError, match="only governors are recovery members"):
        effects_of(
            parse_actions([act("set_recovery_key", member_id=user, recovery_key=KEYS[0])]),
            recovery_state(0, "majority"),
        )
    cert = member("recovering-user").certificate_pem
    with pytest.raises(GovernanceError, match="only governors are recovery members"):
        effects_of(
            parse_actions([act("add_member", certificate=cert, role="user", recovery_key=KEYS[1])]),
            recovery_state(0, "majority"),
        )


# ---------------------------------------------------------------- transition_service_to_open
RECOVERING_ROW = recovering_row(
    "ab" * 32, "cd" * 32, "3.120", "/backups/copy manifests/120", "2026-01-02T03:04:05Z"
)
OPEN = act("transition_service_to_open")
ROTATE = act("rotate_ledger_secret")


def service_state(service: Mapping[str, Any] | None, secrets_recovered: bool = True) -> GovState:
    s = state()
    return GovState(s.members, s.policy, s.constitution, s.nodes, service, secrets_recovered)


@pytest.mark.parametrize(
    ("service", "secrets_recovered", "reason"),
    [
        pytest.param(None, True, "already open", id="never-recovered"),
        pytest.param({"status": "Open"}, True, "already open", id="open-row"),
        pytest.param(opened_row(RECOVERING_ROW), True, "already open", id="opened-row"),
        pytest.param(RECOVERING_ROW, False, "submit their shares", id="secrets-not-back"),
    ],
)
def test_opening_the_service_is_refused_unless_recovered_and_its_secrets_back(
    service: Mapping[str, Any] | None, secrets_recovered: bool, reason: str
) -> None:
    with pytest.raises(GovernanceError) as refused:
        effects_of(parse_actions([OPEN]), service_state(service, secrets_recovered))
    assert refused.value.field == "actions[0]" and reason in refused.value.reason


def test_opening_a_recovered_service_writes_the_row_open_and_rotates_the_secret() -> None:
    before = copy.deepcopy(RECOVERING_ROW)
    out = effects_of(parse_actions([OPEN]), service_state(RECOVERING_ROW))
    assert out.writes == {T_SERVICE: {SERVICE_KEY: {**before, "status": "Open"}}}
    assert out.writes[T_SERVICE][SERVICE_KEY]["recovery"] == before["recovery"]
    assert out.secret_recipients == sorted([N_TRUSTED, "d4" * 32])
    assert before == RECOVERING_ROW  # the state's row is not changed in place


def test_opening_wraps_the_new_secret_to_the_nodes_trusted_once_the_proposal_applied() -> None:
    trust, retire = act("trust_node", node_id=N_PENDING), act("retire_node", node_id=N_TRUSTED)
    out = effects_of(parse_actions([trust, retire, OPEN]), service_state(RECOVERING_ROW))
    assert out.secret_recipients == sorted([N_PENDING, "d4" * 32])
    assert out.writes[T_SERVICE][SERVICE_KEY]["status"] == "Open"


@pytest.mark.parametrize("secrets_recovered", [True, False])
def test_rotating_while_recovering_is_refused(secrets_recovered: bool) -> None:
    with pytest.raises(GovernanceError) as refused:
        effects_of(parse_actions([ROTATE]), service_state(RECOVERING_ROW, secrets_recovered))
    assert refused.value.field == "actions[0]"
    assert "transition_service_to_open" in refused.value.reason


def test_rotating_an_open_service_is_unchanged() -> None:
    for row in (None, {"status": "Open"}, opened_row(RECOVERING_ROW)):
        out = effects_of(parse_actions([ROTATE]), service_state(row))
        assert out.secret_recipients == sorted([N_TRUSTED, "d4" * 32]) and out.writes == {}


@pytest.mark.parametrize("actions", [[ROTATE, OPEN], [OPEN, ROTATE], [OPEN, OPEN]])
def test_opening_and_rotating_in_one_proposal_is_refused(actions: list[dict[str, Any]]) -> None:
    with pytest.raises(GovernanceError) as refused:
        parse_actions(actions)
    assert refused.value.field == "actions[1]" and "ledger_secret" in refused.value.reason


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [(ROTATE, OPEN, "actions[0]"), (OPEN, ROTATE, "actions[1]"), (OPEN, OPEN, "actions[1]")],
)
def test_effects_refuse_a_second_rotation_even_past_parse_actions(
    first: dict[str, Any], second: dict[str, Any], field: str
) -> None:
    actions = parse_actions([first]) + parse_actions([second])
    with pytest.raises(GovernanceError) as refused:
        effects_of(actions, service_state(RECOVERING_ROW))
    assert refused.value.field == field
