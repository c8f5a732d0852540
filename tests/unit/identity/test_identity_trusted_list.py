"""The trusted-node list payload and its COSE envelope (DESIGN section 4)."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.keys.curves import P256
from pycose.keys.ec2 import EC2Key
from pycose.messages.sign1message import Sign1Message

from consortium_node.common.canonical import canonical_json
from consortium_node.identity.certs import ServiceIdentity, self_signed_certificate
from consortium_node.identity.cose import sign1
from consortium_node.identity.errors import ListRejection, TrustedListError
from consortium_node.identity.keys import PrivateKey, generate_key, node_id_of
from consortium_node.identity.trusted_list import (
    NodeEntry,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
    verify_trusted_list,
)

ListFactory = Callable[..., TrustedNodeList]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OTHER_KEY = generate_key("p256")
KEY_POOL = [generate_key("p256") for _ in range(4)] + [generate_key("ed25519") for _ in range(2)]


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_PEM = _rsa_pem()


def _rejects(reason: ListRejection, call: Callable[[], object]) -> TrustedListError:
    with pytest.raises(TrustedListError) as info:
        call()
    assert info.value.reason is reason, str(info.value)
    assert str(info.value) == f"{reason}: {info.value.detail}"
    return info.value


# -- payload ------------------------------------------------------------------------------


def test_golden_payload_without_nodes() -> None:
    lst = TrustedNodeList("demo", 1, "2026-01-02T03:04:05Z", "bb" * 32, ("cc" * 32, "aa" * 32), ())
    assert (
        lst.to_payload()
        == (
            '{"allowed_measurements":["' + "aa" * 32 + '","' + "cc" * 32 + '"],'
            '"consortium":"demo","issued_at":"2026-01-02T03:04:05Z","nodes":[],'
            '"service_certificate_sha256":"' + "bb" * 32 + '","version":1}'
        ).encode()
    )


def test_golden_payload_with_a_node() -> None:
    key = ec.derive_private_key(1, ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry = NodeEntry.for_key(
        key.public_key(),
        name="démo-0",
        address="10.0.0.1",
        measurement="ab" * 32,
        host_data="cd" * 32,
        status=NodeStatus.TRUSTED,
        attested_at=T0,
        attestation_expires_at=T0 + timedelta(days=1),
    )
    lst = TrustedNodeList("demo", 7, "2026-01-02T03:04:05Z", "bb" * 32, (), (entry,))
    node = (
        '{"address":"10.0.0.1","attestation_expires_at":"2026-01-03T03:04:05Z",'
        '"attested_at":"2026-01-02T03:04:05Z","host_data":"' + "cd" * 32 + '",'
        '"measurement":"' + "ab" * 32 + '","name":"démo-0",'
        '"node_id":"' + hashlib.sha256(spki).hexdigest() + '",'
        '"public_key_pem":' + json.dumps(pem.decode()) + ',"status":"Trusted"}'
    )
    assert lst.to_payload() == (
        '{"allowed_measurements":[],"consortium":"demo","issued_at":"2026-01-02T03:04:05Z",'
        '"nodes":[' + node + '],"service_certificate_sha256":"' + "bb" * 32 + '","version":7}'
    ).encode("utf-8")


def test_payload_is_canonical_and_round_trips(make_list: ListFactory) -> None:
    lst = make_list()
    payload = lst.to_payload()
    assert payload == canonical_json(json.loads(payload))
    assert TrustedNodeList.from_payload(payload) == lst
    assert [n.name for n in lst.nodes] == ["demo-0", "demo-1", "demo-2"]
    assert lst.allowed_measurements == tuple(sorted(lst.allowed_measurements))


def test_accessors(make_list: ListFactory, make_entry: Callable[..., NodeEntry]) -> None:
    lst = make_list()
    demo0, demo1, demo2 = lst.nodes
    assert lst.issued_at_datetime == T0
    assert demo0.attested_at_datetime == T0
    assert demo0.attestation_expires_at_datetime == T0 + timedelta(hours=24)
    assert lst.node(demo1.node_id) == demo1 and lst.node("00" * 32) is None
    assert lst.trusted_nodes(T0 + timedelta(hours=1)) == (demo0,)
    assert lst.trusted_nodes(T0 + timedelta(hours=24)) == ()  # expiry is exclusive
    assert lst.is_trusted(demo0.node_id, T0)
    assert not lst.is_trusted(demo1.node_id, T0)  # Pending
    assert not lst.is_trusted(demo2.node_id, T0)  # Retired
    assert not lst.is_trusted("00" * 32, T0)
    promoted = lst.with_node(NodeEntry(**{**demo1.__dict__, "status": NodeStatus.TRUSTED}))
    assert promoted.is_trusted(demo1.node_id, T0) and len(promoted.nodes) == 3
    added = promoted.with_node(make_entry(OTHER_KEY, "demo-3"))
    assert [n.name for n in added.nodes] == ["demo-0", "demo-1", "demo-2", "demo-3"]
    bumped = added.next_version(T0 + timedelta(minutes=1))
    assert (bumped.version, bumped.issued_at) == (2, "2026-01-02T03:05:05Z")


def test_node_status_must_be_known() -> None:
    with pytest.raises(ValueError, match="'Bogus' is not a valid NodeStatus"):
        NodeEntry("a", "b", "c", "d", "e", "f", "Bogus", "g", "h")  # type: ignore[arg-type]


Mutation = Callable[[dict[str, Any]], None]


def _set(*path: str | int, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _delete(*path: str | int) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _apply(fn: Callable[[dict[str, Any]], Any]) -> Mutation:
    return lambda doc: fn(doc) and None


def _crlf_pem(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["public_key_pem"] = doc["nodes"][1]["public_key_pem"].replace("\n", "\r\n")


def _expiry_equals_attested(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["attestation_expires_at"] = doc["nodes"][1]["attested_at"]


FIELD_CASES: list[tuple[str, Mutation, str]] = [
    ("consortium empty", _set("consortium", value=""), "consortium: must not be empty"),
    ("consortium int", _set("consortium", value=5), "consortium: expected a string, got integer"),
    ("consortium missing", _delete("consortium"), "consortium: missing"),
    ("unknown key", _set("extra", value=1), "extra: unknown key (expected only allowed_measure"),
    ("version 0", _set("version", value=0), "version: 0 is not between 1 and 9007199254740991"),
    ("version huge", _set("version", value=2**53), "version: 9007199254740992 is not between"),
    ("version str", _set("version", value="1"), "version: expected an integer, got string"),
    ("version bool", _set("version", value=True), "version: expected an integer, got boolean"),
    ("version null", _set("version", value=None), "version: expected an integer, got null"),
    ("issued_at space", _set("issued_at", value="2026-01-02 03:04:05"), "issued_at: '2026-01-"),
    (
        "issued_at offset",
        _set("issued_at", value="2026-01-02T04:04:05+01:00"),
        "issued_at: '2026-01-02T04:04:05+01:00' is not UTC with whole seconds; "
        "write '2026-01-02T03:04:05Z'",
    ),
    ("issued_at fraction", _set("issued_at", value="2026-01-02T03:04:05.5Z"), "issued_at: '20"),
    ("issued_at int", _set("issued_at", value=0), "issued_at: 0 is not an RFC 3339 timestamp"),
    ("cert digest upper", _set("service_certificate_sha256", value="AB" * 32), "service_cert"),
    ("cert digest short", _set("service_certificate_sha256", value="ab" * 31), "service_cert"),
    ("measurements str", _set("allowed_measurements", value="ab"), "allowed_measurements: exp"),
    (
        "measurement bad",
        _set("allowed_measurements", 1, value="zz" * 32),
        "allowed_measurements[1]",
    ),
    (
        "measurements unsorted",
        _apply(lambda d: d["allowed_measurements"].reverse()),
        "allowed_measurements: must be sorted and without duplicates",
    ),
    (
        "measurements duplicate",
        _apply(lambda d: d["allowed_measurements"].append(d["allowed_measurements"][-1])),
        "allowed_measurements: must be sorted and without duplicates",
    ),
    ("nodes object", _set("nodes", value={}), "nodes: expected an array, got object"),
    ("node string", _set("nodes", 1, value="x"), "nodes[1]: expected an object, got string"),
    ("node missing key", _delete("nodes", 1, "host_data"), "nodes[1].host_data: missing"),
    ("node unknown key", _set("nodes", 1, "extra", value="x"), "nodes[1].extra: unknown key"),
    (
        "status bogus",
        _set("nodes", 1, "status", value="Bogus"),
        "nodes[1].status: 'Bogus' is not one of Pending, Trusted, Retired",
    ),
    ("status lowercase", _set("nodes", 1, "status", value="trusted"), "nodes[1].status: 'trust"),
    ("status null", _set("nodes", 1, "status", value=None), "nodes[1].status: None is not one"),
    ("node_id not hex", _set("nodes", 1, "node_id", value="xyz"), "nodes[1].node_id: 'xyz' is not"),
    (
        "node_id of other key",
        _set("nodes", 1, "node_id", value=node_id_of(OTHER_KEY)),
        f"nodes[1].node_id: {node_id_of(OTHER_KEY)} is not the SHA-256 of public_key_pem",
    ),
    (
        "pem garbage",
        _set("nodes", 1, "public_key_pem", value="garbage"),
        "nodes[1].public_key_pem: public key: not a PEM public key",
    ),
    (
        "pem rsa",
        _set("nodes", 1, "public_key_pem", value=RSA_PEM),
        "nodes[1].public_key_pem: key type RSAPublicKey: only P-256 and Ed25519 are accepted",
    ),
    ("pem crlf", _crlf_pem, "nodes[1].public_key_pem: not in canonical SubjectPublicKeyInfo PEM"),
    ("measurement short", _set("nodes", 1, "measurement", value="ab"), "nodes[1].measurement: 'ab"),
    ("host_data int", _set("nodes", 1, "host_data", value=1), "nodes[1].host_data: 1 is not 64"),
    ("name empty", _set("nodes", 1, "name", value=""), "nodes[1].name: must not be empty"),
    ("address null", _set("nodes", 1, "address", value=None), "nodes[1].address: expected a str"),
    ("attested_at", _set("nodes", 1, "attested_at", value="yesterday"), "nodes[1].attested_at: "),
    (
        "expiry not after attestation",
        _expiry_equals_attested,
        "nodes[1].attestation_expires_at: is not after attested_at",
    ),
    (
        "duplicate node",
        _apply(lambda d: d["nodes"].insert(2, copy.deepcopy(d["nodes"][1]))),
        "nodes[2].node_id: duplicate of nodes[1]",
    ),
    (
        "nodes unsorted",
        _apply(lambda d: d["nodes"].reverse()),
        "nodes: must be sorted by name, then node_id",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "detail"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_from_payload_rejects_field(make_list: ListFactory, mutate: Mutation, detail: str) -> None:
    doc = json.loads(make_list().to_payload())
    mutate(doc)
    error = _rejects(
        ListRejection.MALFORMED, lambda: TrustedNodeList.from_payload(canonical_json(doc))
    )
    assert error.detail.startswith(detail), error.detail


def _byte_case(name: str, payload: bytes) -> bytes:
    doc = json.loads(payload)
    version = b'"version":1}'
    assert payload.endswith(version)
    cases: dict[str, Callable[[], bytes]] = {
        "not json": lambda: b"not json",
        "not utf-8": lambda: b"\xff" + payload,
        "array": lambda: b"[]",
        "indented": lambda: json.dumps(doc, sort_keys=True, indent=1).encode(),
        "unsorted keys": lambda: json.dumps(dict(reversed(doc.items()))).encode(),
        "ascii escapes": lambda: json.dumps(
            {**doc, "consortium": "d\u00e9mo"}, sort_keys=True, separators=(",", ":")
        ).encode(),
        "float version": lambda: payload.replace(version, b'"version":1.0}'),
        "nan version": lambda: payload.replace(version, b'"version":NaN}'),
        "duplicate key": lambda: payload.replace(version, b'"version":1,"version":1}'),
    }
    return cases[name]()


BYTE_CASES = [
    ("not json", "payload: not UTF-8 JSON"),
    ("not utf-8", "payload: not UTF-8 JSON"),
    ("array", "payload: expected an object, got array"),
    ("indented", "payload: not canonical JSON"),
    ("unsorted keys", "payload: not canonical JSON"),
    ("ascii escapes", "payload: not canonical JSON"),
    ("float version", "version: expected an integer, got number"),
    ("nan version", "version: expected an integer, got number"),
    ("duplicate key", "version: duplicate key in a JSON object"),
]


@pytest.mark.parametrize(("name", "detail"), BYTE_CASES, ids=[c[0] for c in BYTE_CASES])
def test_from_payload_rejects_bytes(make_list: ListFactory, name: str, detail: str) -> None:
    data = _byte_case(name, make_list().to_payload())
    error = _rejects(ListRejection.MALFORMED, lambda: TrustedNodeList.from_payload(data))
    assert error.detail.startswith(detail), error.detail


# -- property -------------------------------------------------------------------------------

_hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_moment = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@st.composite
def _entries(draw: st.DrawFn, key: PrivateKey) -> NodeEntry:
    attested = draw(_moment)
    return NodeEntry.for_key(
        key.public_key(),
        name=draw(st.text(min_size=1, max_size=12)),
        address=draw(
            st.one_of(
                st.ip_addresses().map(str), st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True)
            )
        ),
        measurement=draw(_hex64),
        host_data=draw(_hex64),
        status=draw(st.sampled_from(NodeStatus)),
        attested_at=attested,
        attestation_expires_at=attested + timedelta(seconds=draw(st.integers(1, 10**8))),
    )


@st.composite
def _lists(draw: st.DrawFn) -> TrustedNodeList:
    keys = draw(st.lists(st.sampled_from(KEY_POOL), unique_by=id, max_size=len(KEY_POOL)))
    return TrustedNodeList(
        consortium=draw(st.text(min_size=1, max_size=20)),
        version=draw(st.integers(1, 2**53 - 1)),
        issued_at="2026-01-02T03:04:05Z",
        service_certificate_sha256=draw(_hex64),
        allowed_measurements=tuple(draw(st.sets(_hex64, max_size=4))),
        nodes=tuple(draw(_entries(k)) for k in keys),
    )


@settings(max_examples=60, deadline=None)
@given(lst=_lists(), order=st.randoms())
def test_property_payload_round_trips(lst: TrustedNodeList, order: Any) -> None:
    payload = lst.to_payload()
    assert payload == canonical_json(json.loads(payload))
    assert TrustedNodeList.from_payload(payload) == lst
    shuffled = list(lst.nodes)
    order.shuffle(shuffled)
    assert TrustedNodeList(**{**lst.__dict__, "nodes": tuple(shuffled)}).to_payload() == payload


# -- envelope -------------------------------------------------------------------------------


def _rebuild(envelope: bytes, **changes: Any) -> bytes:
    body = list(cbor2.loads(envelope).value)
    for index, name in enumerate(("protected", "unprotected", "payload", "signature")):
        body[index] = changes.get(name, body[index])
    return bytes(cbor2.dumps(cbor2.CBORTag(18, body)))


def test_verify_with_only_the_service_certificate(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    lst = make_list()
    envelope = sign_trusted_list(lst, service)
    assert verify_trusted_list(envelope, service.certificate) == lst
    assert verify_trusted_list(envelope, service.certificate_pem, consortium="demo") == lst
    assert verify_trusted_list(envelope, service.certificate_pem.encode(), min_version=1) == lst


def test_pycose_verifies_the_trusted_list(make_list: ListFactory, service: ServiceIdentity) -> None:
    envelope = sign_trusted_list(make_list(), service)
    public = service.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    numbers = public.public_numbers()
    message = Sign1Message.decode(envelope)
    message.key = EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    assert message.verify_signature()
    assert message.payload is not None
    assert TrustedNodeList.from_payload(message.payload) == make_list()


def test_tampered_payload_is_bad_signature(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    envelope = sign_trusted_list(make_list(), service)
    forged = make_list(status_1=NodeStatus.TRUSTED).to_payload()  # valid, canonical, unsigned
    error = _rejects(
        ListRejection.BAD_SIGNATURE,
        lambda: verify_trusted_list(_rebuild(envelope, payload=forged), service.certificate),
    )
    assert "does not verify" in error.detail


def test_tampered_protected_header_is_bad_signature(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    envelope = sign_trusted_list(make_list(), service)
    header = {1: -7, 3: "text/plain", 4: service.kid}
    changed = _rebuild(envelope, protected=cbor2.dumps(header, canonical=True))
    _rejects(ListRejection.BAD_SIGNATURE, lambda: verify_trusted_list(changed, service.certificate))


def test_list_of_another_service_is_wrong_signer(
    make_list: ListFactory, service: ServiceIdentity, other_service: ServiceIdentity
) -> None:
    envelope = sign_trusted_list(make_list(svc=other_service), other_service)
    error = _rejects(
        ListRejection.WRONG_SIGNER, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert (
        error.detail
        == f"kid: {other_service.kid.hex()} is not the service key id {service.kid.hex()}"
    )


def test_right_kid_other_ed25519_key_is_wrong_signer(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    envelope = sign1(generate_key("ed25519"), make_list().to_payload(), kid=service.kid)
    error = _rejects(
        ListRejection.WRONG_SIGNER, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert "alg EdDSA (-8) does not match the ES256 verification key" in error.detail


def test_right_kid_other_p256_key_is_bad_signature(
    make_list: ListFactory, service: ServiceIdentity, other_service: ServiceIdentity
) -> None:
    """Indistinguishable from tampering: the signature simply does not verify."""
    envelope = sign1(other_service.key, make_list().to_payload(), kid=service.kid)
    _rejects(
        ListRejection.BAD_SIGNATURE, lambda: verify_trusted_list(envelope, service.certificate)
    )


def test_unsupported_service_certificate_is_wrong_signer(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    cert = self_signed_certificate(ec.generate_private_key(ec.SECP384R1()), "x")
    envelope = sign_trusted_list(make_list(), service)
    error = _rejects(ListRejection.WRONG_SIGNER, lambda: verify_trusted_list(envelope, cert))
    assert error.detail.startswith("service certificate: EC key on curve secp384r1")


def test_payload_naming_another_certificate_is_wrong_service(
    make_list: ListFactory, service: ServiceIdentity, other_service: ServiceIdentity
) -> None:
    envelope = sign1(service.key, make_list(svc=other_service).to_payload(), kid=service.kid)
    error = _rejects(
        ListRejection.WRONG_SERVICE, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert error.detail.startswith("service_certificate_sha256: ")
    refused = _rejects(
        ListRejection.WRONG_SERVICE,
        lambda: sign_trusted_list(make_list(svc=other_service), service),
    )
    assert "signing service identity" in refused.detail


def test_other_consortium_is_wrong_service(
    make_list: ListFactory, service: ServiceIdentity
) -> None:
    envelope = sign_trusted_list(make_list(consortium="other"), service)
    error = _rejects(
        ListRejection.WRONG_SERVICE,
        lambda: verify_trusted_list(envelope, service.certificate, consortium="demo"),
    )
    assert error.detail == "consortium: 'other' is not 'demo'"


def test_min_version_is_rollback(make_list: ListFactory, service: ServiceIdentity) -> None:
    envelope = sign_trusted_list(make_list(version=4), service)
    assert verify_trusted_list(envelope, service.certificate, min_version=4).version == 4
    error = _rejects(
        ListRejection.ROLLBACK,
        lambda: verify_trusted_list(envelope, service.certificate, min_version=5),
    )
    assert error.detail == "version: 4 is lower than the last accepted version 5"


@pytest.mark.parametrize(
    ("envelope", "detail"),
    [
        (b"", "envelope: not valid CBOR"),
        (b"\x01\x02", "envelope: 1 trailing bytes at offset 1"),
        (cbor2.dumps([1, 2]), "envelope: expected [protected, unprotected"),
    ],
)
def test_garbage_envelope_is_malformed(
    service: ServiceIdentity, envelope: bytes, detail: str
) -> None:
    error = _rejects(
        ListRejection.MALFORMED, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert error.detail.startswith(detail), error.detail


def test_wrong_content_type_is_malformed(make_list: ListFactory, service: ServiceIdentity) -> None:
    envelope = sign1(service.key, make_list().to_payload(), kid=service.kid, content_type="text/x")
    error = _rejects(
        ListRejection.MALFORMED, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert error.detail == "envelope content type: 'text/x' is not 'application/json'"


def test_signed_payload_must_be_valid(make_list: ListFactory, service: ServiceIdentity) -> None:
    envelope = sign1(service.key, b'{"version":1}', kid=service.kid)
    error = _rejects(
        ListRejection.MALFORMED, lambda: verify_trusted_list(envelope, service.certificate)
    )
    assert error.detail == "allowed_measurements: missing"


def test_sign_refuses_an_invalid_list(make_list: ListFactory, service: ServiceIdentity) -> None:
    lst = make_list()
    bad = TrustedNodeList(**{**lst.__dict__, "allowed_measurements": ("nope",)})
    error = _rejects(ListRejection.MALFORMED, lambda: sign_trusted_list(bad, service))
    assert error.detail.startswith("allowed_measurements[0]: 'nope'")


def test_error_pickles(service: ServiceIdentity) -> None:
    error = TrustedListError(ListRejection.ROLLBACK, "version: 1 < 2")
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.detail, str(again)) == (error.reason, error.detail, str(error))
