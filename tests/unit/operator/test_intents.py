"""intents.py: the differences between Member CRs / the Consortium spec and the ledger, as
proposals the operator signs; their CR names and manifests; the ledger facts they start from."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import Signer, verify_document
from consortium_node.governance.errors import SignatureRefusedError
from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_node.recovery.record import recovery_key_pem
from consortium_operator.api.names import LABEL_CONSORTIUM
from consortium_operator.api.spec import ConsortiumSpec, parse_consortium
from consortium_operator.kube.builders import owner_reference
from consortium_operator.proposals import intents as gov
from tests.unit.governance.support import member as signing_member

from .support import EXTRA_HOST_DATA, M1, M2, T0, full_spec, member, spec_with
from .test_crds import errors

RECOVERY_KEY = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
OTHER_KEY = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())

M3, M4, OLD = "03" * 32, "04" * 32, "0d" * 32
STALE_HOST_DATA = "ee" * 32
UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def spec(**changes: Any) -> ConsortiumSpec:
    """full_spec() (measurements M2, M1; threshold 2; autoTrustNodes false; 12h/4h) changed."""
    data = full_spec()
    for path, value in changes.items():
        data = spec_with(path.replace("__", "."), value, data)
    return parse_consortium("demo", data)


def ledger_of(
    s: ConsortiumSpec,
    *,
    policy: Mapping[str, Any] | None = None,
    constitution: Mapping[str, Any] | None = None,
    members: Mapping[str, tuple[str, str]] | None = None,
) -> gov.LedgerGovernance:
    """A ledger that already decided everything ``s`` asks, with ``policy``/``constitution``
    fields overridden (None values delete the field)."""
    base_policy: dict[str, Any] = {
        "measurements": sorted(s.attestation.measurements),
        "host_data": list(s.allowed_host_data()),
        "validity_seconds": int(s.attestation.validity.total_seconds()),
        "renew_before_seconds": int(s.attestation.renew_before.total_seconds()),
        "max_quote_age_seconds": 300,
    }
    base_constitution: dict[str, Any] = {
        "threshold": s.threshold,
        "auto_approve": ["trust_node"],
        "proposal_expiry_seconds": 3600,
        "auto_trust_nodes": s.auto_trust_nodes,
    }
    for target, changes in ((base_policy, policy), (base_constitution, constitution)):
        for key, value in (changes or {}).items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return gov.LedgerGovernance(dict(members or {}), base_policy, base_constitution)


def entry(name: str, node: int, status: NodeStatus, measurement: str = M1) -> NodeEntry:
    return NodeEntry(
        node_id=f"{node:064x}",
        name=name,
        address=f"{name}.demo-nodes.ns.svc.cluster.local:8443",
        public_key_pem="-----BEGIN PUBLIC KEY-----\nfake\n-----END PUBLIC KEY-----\n",
        measurement=measurement,
        host_data=EXTRA_HOST_DATA,
        status=status,
        attested_at=rfc3339(T0),
        attestation_expires_at=rfc3339(T0 + timedelta(hours=12)),
    )


def nodes(*entries: NodeEntry) -> TrustedNodeList:
    return TrustedNodeList(
        consortium="demo",
        version=3,
        issued_at=rfc3339(T0),
        service_certificate_sha256="5e" * 32,
        allowed_measurements=(M1, M2),
        nodes=entries,
    )


def act(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


def shape(intents: list[gov.Intent]) -> list[tuple[str, str, list[Mapping[str, Any]]]]:
    return [(i.category, i.subject, list(i.actions)) for i in intents]


# --- members ----------------------------------------------------------------------------------


def test_a_member_the_ledger_lacks_is_proposed_with_its_certificate_and_role() -> None:
    alice, bob = member("alice"), member("bob", role="user")
    known = {
        status: member(f"known-{status.lower()}")
        for status in ("Active", "Accepted", "Removed", "Whatever")
    }
    ledger = ledger_of(
        spec(), members={m.member_id: ("governor", status) for status, m in known.items()}
    )
    found = gov.member_intents([bob, *known.values(), alice], ledger)
    assert shape(found) == [
        (
            "add-member",
            "alice",
            [act("add_member", certificate=alice.certificate_pem, role="governor")],
        ),
        ("add-member", "bob", [act("add_member", certificate=bob.certificate_pem, role="user")]),
    ]
    assert "alice" in found[0].why


@pytest.mark.parametrize(
    "ledger_members",
    [
        pytest.param({}, id="unknown"),
        pytest.param({"x": ("governor", "Active")}, id="others-known"),
    ],
)
def test_no_members_no_intents(ledger_members: dict[str, tuple[str, str]]) -> None:
    assert gov.member_intents([], ledger_of(spec(), members=ledger_members)) == []


def test_removal_names_the_member_id() -> None:
    carol = member("carol")
    intent = gov.removal(carol)
    assert (intent.category, intent.subject) == ("remove-member", "carol")
    assert list(intent.actions) == [act("remove_member", member_id=carol.member_id)]
    assert intent.category not in gov.LEVEL_CATEGORIES  # stands until the members decide


def test_removal_of_a_deleted_object_is_named_by_its_uid() -> None:
    """A Member deleted, re-created and deleted again is a new removal, not the old one."""
    carol = member("carol")
    first = gov.removal(carol, "0f1e2d3c-aaaa").cr_name("demo")
    second = gov.removal(carol, "9a8b7c6d-bbbb").cr_name("demo")
    assert first != second and "carol-0f1e2d3c" in first


# --- the Consortium spec against the ledger's policy and constitution -------------------------

POLICY_CASES = [
    pytest.param({}, {}, {}, None, [], id="nothing-different"),
    pytest.param(
        {"attestation__measurements": [M2, M4, M1, M3]},
        {},
        {},
        None,
        [
            (
                "measurements",
                "",
                [act("add_measurement", measurement=M3), act("add_measurement", measurement=M4)],
            )
        ],
        id="missing-measurements-one-intent-sorted",
    ),
    pytest.param(
        {},
        {"measurements": sorted([M1, M2, OLD, M4])},
        {},
        nodes(entry("demo-0", 1, NodeStatus.TRUSTED)),
        [
            (
                "retire-measurements",
                "",
                [
                    act("remove_measurement", measurement=M4),
                    act("remove_measurement", measurement=OLD),
                ],
            )
        ],
        id="unused-measurements-retired",
    ),
    pytest.param(
        {},
        {"measurements": sorted([M1, M2, OLD])},
        {},
        nodes(entry("demo-0", 1, NodeStatus.TRUSTED), entry("demo-1", 2, NodeStatus.PENDING, OLD)),
        [],
        id="measurement-still-run-by-a-pending-node",
    ),
    pytest.param(
        {},
        {"measurements": sorted([M1, M2, OLD])},
        {},
        nodes(entry("demo-0", 1, NodeStatus.TRUSTED, OLD)),
        [],
        id="measurement-still-run-by-a-trusted-node",
    ),
    pytest.param(
        {},
        {"measurements": sorted([M1, M2, OLD])},
        {},
        nodes(entry("demo-0", 1, NodeStatus.RETIRED, OLD), entry("demo-1", 2, NodeStatus.TRUSTED)),
        [("retire-measurements", "", [act("remove_measurement", measurement=OLD)])],
        id="measurement-run-only-by-a-retired-node",
    ),
    pytest.param(
        {},
        {"measurements": sorted([M1, M2, OLD])},
        {},
        None,
        [],
        id="no-verified-list-nothing-retired",
    ),
    pytest.param(
        {"attestation__measurements": [M1, M3]},
        {},
        {},
        nodes(entry("demo-0", 1, NodeStatus.TRUSTED)),
        [
            ("measurements", "", [act("add_measurement", measurement=M3)]),
            ("retire-measurements", "", [act("remove_measurement", measurement=M2)]),
        ],
        id="upgrade-adds-and-retires-separately",
    ),
    pytest.param(
        {"attestation__hostData": [EXTRA_HOST_DATA, M4]},
        {},
        {},
        None,
        [("host-data", "", [act("add_host_data", host_data=M4)])],
        id="host-data-added",
    ),
    pytest.param(
        {"attestation__hostData": ...},
        {},
        {},
        None,
        [("host-data", "", [act("remove_host_data", host_data=EXTRA_HOST_DATA)])],
        id="host-data-removed",
    ),
    pytest.param(
        {"attestation__hostData": [M4]},
        {"host_data": sorted([*spec().allowed_host_data(), STALE_HOST_DATA])},
        {},
        None,
        [
            (
                "host-data",
                "",
                [
                    act("add_host_data", host_data=M4),
                    act("remove_host_data", host_data=EXTRA_HOST_DATA),
                    act("remove_host_data", host_data=STALE_HOST_DATA),
                ],
            )
        ],
        id="host-data-added-and-removed-in-one",
    ),
    pytest.param(
        {"attestation__validity": "24h"},
        {},
        {},
        None,
        [
            (
                "attestation-validity",
                "",
                [
                    act(
                        "set_attestation_validity",
                        validity_seconds=86400,
                        renew_before_seconds=14400,
                    )
                ],
            )
        ],
        id="validity-changed",
    ),
    pytest.param(
        {"attestation__renewBefore": "90m"},
        {},
        {},
        None,
        [
            (
                "attestation-validity",
                "",
                [
                    act(
                        "set_attestation_validity",
                        validity_seconds=43200,
                        renew_before_seconds=5400,
                    )
                ],
            )
        ],
        id="renew-before-changed",
    ),
    pytest.param(
        {},
        {"validity_seconds": None, "renew_before_seconds": None},
        {},
        None,
        [],
        id="ledger-without-validity-says-nothing",
    ),
    pytest.param({}, {}, {"threshold": "2"}, None, [], id="genesis-digit-threshold-is-the-same"),
    pytest.param(
        {"governance__threshold": "majority"},
        {},
        {"threshold": "majority"},
        None,
        [],
        id="majority-both-sides",
    ),
    pytest.param(
        {},
        {},
        {"threshold": "majority"},
        None,
        [
            (
                "constitution",
                "",
                [
                    act(
                        "set_constitution",
                        constitution={
                            "threshold": 2,
                            "auto_approve": ["trust_node"],
                            "proposal_expiry_seconds": 3600,
                            "auto_trust_nodes": False,
                            "recovery_threshold": "majority",
                        },
                    )
                ],
            )
        ],
        id="threshold-changed-keeps-other-fields",
    ),
    pytest.param(
        {"governance__autoTrustNodes": True},
        {},
        {},
        None,
        [
            (
                "constitution",
                "",
                [
                    act(
                        "set_constitution",
                        constitution={
                            "threshold": 2,
                            "auto_approve": ["trust_node"],
                            "proposal_expiry_seconds": 3600,
                            "auto_trust_nodes": True,
                            "recovery_threshold": "majority",
                        },
                    )
                ],
            )
        ],
        id="auto-trust-changed",
    ),
    pytest.param(
        {},
        {},
        {"threshold": "most"},
        None,
        [
            (
                "constitution",
                "",
                [
                    act(
                        "set_constitution",
                        constitution={
                            "threshold": 2,
                            "auto_approve": ["trust_node"],
                            "proposal_expiry_seconds": 3600,
                            "auto_trust_nodes": False,
                            "recovery_threshold": "majority",
                        },
                    )
                ],
            )
        ],
        id="unparsable-ledger-threshold-is-a-difference",
    ),
]


@pytest.mark.parametrize(("changes", "policy", "constitution", "tl", "expected"), POLICY_CASES)
def test_policy_intents(
    changes: dict[str, Any],
    policy: dict[str, Any],
    constitution: dict[str, Any],
    tl: TrustedNodeList | None,
    expected: list[tuple[str, str, list[dict[str, Any]]]],
) -> None:
    ledger = ledger_of(spec(), policy=policy, constitution=constitution)
    found = gov.policy_intents(spec(**changes), ledger, tl)
    assert shape(found) == expected
    for intent in found:
        assert intent.why
        assert intent.category in gov.LEVEL_CATEGORIES


def test_validity_seconds_are_integers_even_from_a_fractional_spec() -> None:
    ledger = ledger_of(spec())
    changed = spec(attestation__validity="90.5m", attestation__renewBefore="30m")
    (intent,) = gov.policy_intents(changed, ledger, None)
    args = intent.actions[0]["args"]
    assert args == {"validity_seconds": 5430, "renew_before_seconds": 1800}
    assert all(type(v) is int for v in args.values())


def test_the_ledger_float_policy_matches_an_equal_spec() -> None:
    """A policy written with float seconds (older nodes) still equals the spec."""
    ledger = ledger_of(
        spec(), policy={"validity_seconds": 43200.0, "renew_before_seconds": 14400.0}
    )
    assert gov.policy_intents(spec(), ledger, None) == []


# --- trust --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "verified", "expected"),
    [
        pytest.param(None, {f"{1:064x}"}, [], id="no-list"),
        pytest.param(
            [entry("demo-1", 1, NodeStatus.PENDING), entry("demo-2", 2, NodeStatus.PENDING)],
            {f"{2:064x}"},
            [("trust-node", "demo-2", [act("trust_node", node_id=f"{2:064x}")])],
            id="pending-and-verified-only",
        ),
        pytest.param(
            [entry("demo-1", 1, NodeStatus.TRUSTED), entry("demo-2", 2, NodeStatus.RETIRED)],
            {f"{1:064x}", f"{2:064x}"},
            [],
            id="trusted-or-retired-not-again",
        ),
        pytest.param(
            [entry("demo-1", 1, NodeStatus.PENDING)], set(), [], id="pending-not-verified"
        ),
    ],
)
def test_trust_intents(
    entries: list[NodeEntry] | None,
    verified: set[str],
    expected: list[tuple[str, str, list[dict[str, Any]]]],
) -> None:
    tl = None if entries is None else nodes(*entries)
    assert shape(gov.trust_intents(tl, verified)) == expected


# --- names ---------------------------------------------------------------------------------------


def intent(
    subject: str = "alice", *, measurement: str = M3, category: str = "add-member"
) -> gov.Intent:
    return gov.Intent(category, subject, (act("add_measurement", measurement=measurement),), "why")


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("alice", id="short"),
        pytest.param("", id="no-subject"),
        pytest.param("alice.example.com", id="dotted"),
        pytest.param("a" * 253, id="longest-name"),
        pytest.param("a" * 225 + "." + "b" * 27, id="truncated-at-a-dot"),
        pytest.param("a" * 224 + "-." + "b" * 26, id="truncated-after-hyphen-dot"),
        pytest.param("a" * 224 + ".-" + "b" * 26, id="truncated-after-dot-hyphen"),
    ],
)
def test_cr_name_is_a_valid_object_name(subject: str) -> None:
    name = intent(subject).cr_name("demo")
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name), name
    assert name.startswith("demo-add-member")
    assert name.endswith("-" + intent(subject).digest)


def test_cr_name_is_stable_and_follows_the_actions() -> None:
    first = intent().cr_name("demo")
    assert (
        first
        == intent().cr_name("demo")
        == gov.Intent(
            "add-member", "alice", (act("add_measurement", measurement=M3),), "other why"
        ).cr_name("demo")
    )
    assert first != intent(measurement=M4).cr_name("demo")
    assert first != intent(subject="bob").cr_name("demo")
    assert first != intent().cr_name("other")
    assert first != intent(category="measurements").cr_name("demo")
    assert len(intent().digest) == 10


def _sha(pem: str) -> str:
    return hashlib.sha256(pem.encode("ascii")).hexdigest()


@pytest.mark.parametrize(
    ("in_spec", "in_ledger", "expected"),
    [
        (None, None, None),
        (RECOVERY_KEY, _sha(RECOVERY_KEY), None),
        (RECOVERY_KEY, None, RECOVERY_KEY),
        (RECOVERY_KEY, _sha(OTHER_KEY), RECOVERY_KEY),
        (None, _sha(RECOVERY_KEY), "null"),
    ],
    ids=["neither", "same", "new", "changed", "removed"],
)
def test_a_members_recovery_key_follows_its_spec_by_proposal(
    in_spec: str | None, in_ledger: str | None, expected: str | None
) -> None:
    carol = replace(member("carol"), recovery_key_pem=in_spec)
    ledger = replace(
        ledger_of(spec()),
        members={carol.member_id: ("governor", "Active")},
        recovery_keys={carol.member_id: in_ledger} if in_ledger else {},
    )
    found = gov.member_intents([carol], ledger)
    if expected is None:
        assert found == []
        return
    [intent] = found
    assert intent.category == "recovery-key" and intent.subject == "carol"
    key = None if expected == "null" else expected
    assert intent.actions == (
        {"name": "set_recovery_key", "args": {"member_id": carol.member_id, "recovery_key": key}},
    )


def test_a_new_member_brings_its_recovery_key_into_add_member() -> None:
    dave = replace(member("dave"), recovery_key_pem=RECOVERY_KEY)
    [intent] = gov.member_intents([dave], ledger_of(spec()))
    assert intent.actions[0]["args"]["recovery_key"] == RECOVERY_KEY
    network = {
        "attestation_policy": {},
        "constitution": {},
        "members": [{"member_id": dave.member_id, "role": "governor", "status": "Active",
                     "recovery_key_sha256": _sha(RECOVERY_KEY)}],
    }  # fmt: skip
    ledger = gov.LedgerGovernance.from_network(network)
    assert ledger is not None and gov.member_intents([dave], ledger) == []


def test_cr_names_of_every_kind_of_intent_differ() -> None:
    s = spec(attestation__measurements=[M1, M3], governance__autoTrustNodes=True)
    ledger = ledger_of(
        spec(),
        policy={"host_data": [STALE_HOST_DATA], "validity_seconds": 60},
        constitution={"threshold": 1},
    )
    tl = nodes(entry("demo-0", 1, NodeStatus.TRUSTED), entry("demo-1", 2, NodeStatus.PENDING))
    carol = replace(member("carol"), recovery_key_pem=RECOVERY_KEY)
    ledger = replace(ledger, members={**ledger.members, carol.member_id: ("governor", "Active")})
    wanted = [
        *gov.member_intents([member("alice"), carol], ledger),
        *gov.policy_intents(s, ledger, tl),
        *gov.trust_intents(tl, {f"{2:064x}"}),
        gov.removal(member("bob")),
    ]
    # sev-snp-policy needs a Consortium on sev-snp (test_sev_snp_operator.py names it).
    assert {i.category for i in wanted} == {*gov.LEVEL_CATEGORIES, "remove-member"} - {
        "sev-snp-policy"
    }
    names = [i.cr_name("demo") for i in wanted]
    assert len(set(names)) == len(names)
    assert all(DNS_SUBDOMAIN.match(n) and len(n) <= 253 for n in names)


# --- documents and the manifest ------------------------------------------------------------------

OPERATOR = signing_member("operator-identity", "ed25519")


def operator_signer(role: str = "operator", status: str = "Active") -> dict[str, Signer]:
    return {OPERATOR.member_id: Signer(OPERATOR.member_id, OPERATOR.certificate_pem, role, status)}


def manifest_for(i: gov.Intent) -> dict[str, Any]:
    now = T0 + timedelta(microseconds=123456)
    document = gov.proposal_document(OPERATOR.key, OPERATOR.certificate_pem, "demo", i, now)
    return gov.proposal_manifest("demo", "ns", UID, i, document)


def test_proposal_manifest_shape() -> None:
    i = gov.member_intents([member("alice")], ledger_of(spec()))[0]
    manifest = manifest_for(i)
    assert manifest["apiVersion"] == "consortium.tee.dev/v1alpha1"
    assert manifest["kind"] == "Proposal"
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == (i.cr_name("demo"), "ns")
    assert meta["labels"] == {
        LABEL_CONSORTIUM: "demo",
        gov.LABEL_PROPOSED_BY: "operator",
        gov.LABEL_INTENT: "add-member",
    }
    assert meta["annotations"] == {gov.ANNOTATION_WHY: i.why}
    assert meta["ownerReferences"] == [owner_reference("demo", UID)]
    assert set(manifest["spec"]) == {"consortium", "proposal"}
    assert manifest["spec"]["consortium"] == "demo"
    assert errors("Proposal", manifest) == []


def test_the_manifest_carries_a_proposal_the_nodes_accept_from_the_operator() -> None:
    i = intent()
    raw = base64.b64decode(manifest_for(i)["spec"]["proposal"], validate=True)
    doc = verify_document(raw, "proposal", "demo", operator_signer())
    assert doc.signer == OPERATOR.member_id
    assert doc.payload == {
        "type": "proposal",
        "consortium": "demo",
        "created_at": rfc3339(T0),  # whole seconds: microseconds dropped
        "actions": [act("add_measurement", measurement=M3)],
    }


@pytest.mark.parametrize(
    ("role", "status", "message"),
    [
        pytest.param("operator", "Accepted", "not Active", id="operator-not-active"),
        pytest.param("user", "Active", "this member is a user", id="user-role"),
    ],
)
def test_the_nodes_refuse_it_from_a_member_that_may_not_propose(
    role: str, status: str, message: str
) -> None:
    raw = base64.b64decode(manifest_for(intent())["spec"]["proposal"])
    with pytest.raises(SignatureRefusedError, match=message):
        verify_document(raw, "proposal", "demo", operator_signer(role, status))


def test_withdrawal_document_verifies_as_the_operators() -> None:
    raw = gov.withdrawal_document(OPERATOR.key, OPERATOR.certificate_pem, "demo", "ab" * 32)
    doc = verify_document(raw, "withdrawal", "demo", operator_signer())
    assert doc.payload == {"type": "withdrawal", "consortium": "demo", "proposal_id": "ab" * 32}


# --- the ledger's facts ---------------------------------------------------------------------------

NETWORK: dict[str, Any] = {
    "consortium": "demo",
    "members": [
        {"member_id": M1, "role": "governor", "status": "Active"},
        {"member_id": M2, "role": "operator", "status": "Active"},
        {"role": "governor", "status": "Active"},  # no id: skipped
        "garbage",
    ],
    "attestation_policy": {"measurements": [M2, M1], "host_data": []},
    "constitution": {"threshold": "majority", "auto_trust_nodes": True},
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({}, True, id="complete"),
        pytest.param({"attestation_policy": None}, False, id="missing-policy"),
        pytest.param({"constitution": None}, False, id="missing-constitution"),
        pytest.param({"attestation_policy": ["x"]}, False, id="policy-not-an-object"),
    ],
)
def test_ledger_governance_from_network(change: dict[str, Any], expected: bool) -> None:
    network = {k: v for k, v in {**NETWORK, **change}.items() if v is not None}
    found = gov.LedgerGovernance.from_network(network)
    if not expected:
        assert found is None
        return
    assert found is not None
    assert dict(found.members) == {M1: ("governor", "Active"), M2: ("operator", "Active")}
    assert found.measurements() == frozenset({M1, M2})
    assert found.constitution["threshold"] == "majority"


def test_ledger_without_members_has_none() -> None:
    network = {k: v for k, v in NETWORK.items() if k != "members"}
    found = gov.LedgerGovernance.from_network(network)
    assert found is not None and dict(found.members) == {}
    assert replace(found, policy={}).measurements() == frozenset()
