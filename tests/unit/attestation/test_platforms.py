"""The platform registry (``attestation.platforms``): the one way the node, ``consortiumctl``
and the operator obtain a platform, its attester and its verifiers."""

from __future__ import annotations

import pytest
from attestation_support import HOST_DATA, MEASUREMENT, NONCE, public_key_der_of
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import (
    AttesterSettings,
    Policy,
    Reason,
    UnknownPlatformError,
    platforms,
)


def test_the_default_platform_is_registered_under_its_name_and_its_format() -> None:
    default = platforms.by_name(platforms.DEFAULT)
    assert platforms.names()[0] == platforms.DEFAULT
    assert platforms.by_format(default.evidence_format) is default
    assert platforms.by_format("no-such-format/v1") is None


def test_names_and_formats_are_unique() -> None:
    known = [platforms.by_name(n) for n in platforms.names()]
    assert len({p.name for p in known}) == len(known)
    assert len({p.evidence_format for p in known}) == len(known)


def test_an_unknown_platform_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownPlatformError) as refused:
        platforms.by_name("sgx-someday")
    assert "'sgx-someday'" in str(refused.value)
    for name in platforms.names():
        assert name in str(refused.value)


@pytest.mark.parametrize("name", platforms.names())
def test_every_endorsement_is_declared_once_and_private_files_have_no_cli_flag(name: str) -> None:
    platform = platforms.by_name(name)
    files = [e.file for e in platform.endorsements]
    keys = [e.config_key for e in platform.endorsements]
    assert len(set(files)) == len(files) and len(set(keys)) == len(keys)
    for endorsement in platform.endorsements:
        assert endorsement.description
        if endorsement.private:
            assert endorsement.cli_flag is None  # private material is never typed on a CLI


@pytest.mark.parametrize("name", platforms.names())
def test_verifiers_never_see_private_material(name: str) -> None:
    platform = platforms.by_name(name)
    material = {e.file: b"x" for e in platform.endorsements}
    public = platform.public(material)
    assert set(public) == {e.file for e in platform.endorsements if not e.private}


@pytest.mark.parametrize(
    "name", [n for n in platforms.names() if platforms.by_name(n).provision is not None]
)
def test_an_emulated_platform_attests_and_its_registry_verifier_accepts(name: str) -> None:
    """Provisioned material → the platform's attester quotes a key and a nonce → the verifier
    the registry builds from the public files alone accepts it, and refuses another nonce."""
    platform = platforms.by_name(name)
    assert platform.provision is not None
    material = platform.provision()
    assert set(material) == {e.file for e in platform.endorsements}
    attester = platform.attester(
        AttesterSettings(
            chip_id="demo-0",
            tcb_version=1,
            measurement=MEASUREMENT,
            host_data=HOST_DATA,
            endorsements=material,
        )
    )
    assert attester.platform_name == platform.name
    key = public_key_der_of(ec.generate_private_key(ec.SECP256R1()))
    quote = attester.quote(key, NONCE).to_json()
    assert quote["format"] == platform.evidence_format
    registry = platforms.verifier_registry({name: material})
    assert registry.formats == (platform.evidence_format,)
    policy = Policy(allowed_measurements=frozenset({MEASUREMENT}), allowed_host_data=None)
    accepted = registry.verify(quote, public_key_der=key, nonce=NONCE, policy=policy)
    assert accepted.ok and accepted.claims is not None
    assert accepted.claims.platform == platform.name
    replayed = registry.verify(quote, public_key_der=key, nonce=bytes(32), policy=policy)
    assert replayed.reason is Reason.NONCE_MISMATCH
    sealed = attester.seal(b"secret", "label")
    assert attester.unseal(sealed, "label") == b"secret"


def test_a_registry_without_the_quotes_platform_refuses_it_as_unknown() -> None:
    registry = platforms.verifier_registry({})
    result = registry.verify(
        {"format": platforms.by_name(platforms.DEFAULT).evidence_format},
        public_key_der=b"",
        nonce=NONCE,
        policy=Policy(allowed_measurements=frozenset(), allowed_host_data=None),
    )
    assert result.reason is Reason.UNKNOWN_PLATFORM
