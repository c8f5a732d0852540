"""A Consortium on ``platform: sev-snp``: the spec's checks (field by field), the node
configuration the node's own parser accepts, the pod (RuntimeClass, guest device,
annotations, endorsements), and the operator's own verification policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consortium_node.server.config import parse_config
from consortium_node.server.kube import pod_settings
from consortium_operator.api.names import MOUNT_ENDORSEMENTS, MOUNT_PLATFORM, Names
from consortium_operator.api.spec import ConsortiumSpec, SpecError
from consortium_operator.kube import builders
from consortium_operator.nodes.verify import policy_for

from .support import consortium, member

SNP = "ab" * 48
NS, UID = "ledgers", "0b7d9e6c-1111-2222-3333-444455556666"


def snp_spec(**sev_snp: Any) -> ConsortiumSpec:
    return consortium(
        "demo",
        attestation__platform="sev-snp",
        attestation__measurements=[SNP],
        attestation__sevSnp=sev_snp,
    )


def test_a_hardware_spec_parses() -> None:
    spec = snp_spec(
        runtimeClassName="kata-qemu-snp",
        minimumTcb={"Genoa": {"snp": 23, "microcode": 84}},
        products=["Genoa"],
        endorsementsRef={"name": "amd-kds"},
        podAnnotations={"io.katacontainers.config.runtime.cc_init_data": "x"},
    )
    snp = spec.attestation.sev_snp
    assert snp is not None
    assert snp.device == "sev-guest"
    assert snp.emulated is False
    assert snp.runtime_class_name == "kata-qemu-snp"
    assert snp.policy == {"minimum_tcb": {"Genoa": {"microcode": 84, "snp": 23}},
                          "allow_debug": False, "vmpl": 0, "products": ["Genoa"]}  # fmt: skip
    assert snp.endorsements_secret == "amd-kds"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"attestation__measurements": ["ab" * 32]},
            "spec.attestation.measurements[0]",
            "96 lowercase hex digits (a measurement of platform sev-snp)",
        ),
        ({"attestation__sevSnp": {"device": "auto"}}, "spec.attestation.sevSnp.device", "auto"),
        (
            {"attestation__sevSnp": {"minimumTcb": {"Milan": {"fmc": 1}}}},
            "spec.attestation.sevSnp.minimumTcb.Milan.fmc",
            "not a TCB component of Milan",
        ),
        ({"attestation__sevSnp": {"vmpl": 5}}, "spec.attestation.sevSnp.vmpl", "0..3"),
        (
            {"attestation__sevSnp": {"allowDebug": "no"}},
            "spec.attestation.sevSnp.allowDebug",
            "true or false",
        ),
        (
            {"attestation__sevSnp": {"insecureEmulator": {"product": "Genoa"}}},
            "spec.attestation.sevSnp.insecureEmulator",
            "device insecure-emulator only",
        ),
        (
            {"attestation__sevSnp": {"podAnnotations": {"consortium.tee.dev/x": "y"}}},
            "spec.attestation.sevSnp.podAnnotations['consortium.tee.dev/x']",
            "operator's",
        ),
        (
            {"attestation__sevSnp": {"endorsementsRef": {"name": "Bad_Name"}}},
            "spec.attestation.sevSnp.endorsementsRef",
            "Secret name",
        ),
        (
            {"attestation__sevSnp": {"runtime": "kata"}},
            "spec.attestation.sevSnp.runtime",
            "unknown field",
        ),
    ],
)
def test_invalid_sev_snp_fields_are_named(
    overrides: dict[str, Any], field: str, message: str
) -> None:
    base = {"attestation__platform": "sev-snp", "attestation__measurements": [SNP]}
    with pytest.raises(SpecError) as caught:
        consortium("demo", **{**base, **overrides})
    assert caught.value.field == field
    assert message in caught.value.message


def test_sev_snp_settings_on_another_platform_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        consortium("demo", attestation__sevSnp={"vmpl": 0})
    assert caught.value.field == "spec.attestation.sevSnp"
    with pytest.raises(SpecError) as caught:
        consortium("demo", attestation__measurements=[SNP])
    assert (
        "64 lowercase hex digits (a measurement of platform insecure-virtual)"
        in caught.value.message
    )


def _node(spec: ConsortiumSpec, tmp_path: Path) -> Any:
    config = builders.node_config(spec, [member("alice")], "-----BEGIN CERTIFICATE-----\n")
    config["members"] = [m for m in config["members"] if m["role"] != "operator"]
    pod = Names(spec.name).pod(0)
    env = {"POD_NAME": pod, "POD_NAMESPACE": NS, "POD_IP": "10.1.2.3",
           "CONSORTIUM_SERVICE": "demo-nodes", "CLUSTER_DOMAIN": "cluster.local"}  # fmt: skip
    config["kubernetes"]["service_certificate"] = str(tmp_path / "absent.pem")
    return config, parse_config(pod_settings(config, env), tmp_path)


def test_hardware_node_configuration_and_pod(tmp_path: Path) -> None:
    spec = snp_spec(device="configfs-tsm", runtimeClassName="kata-qemu-snp",
                    endorsementsRef={"name": "amd-kds"},
                    podAnnotations={"example.com/initdata": "abc"})  # fmt: skip
    raw, config = _node(spec, tmp_path)
    assert raw["platform"] == {
        "name": "sev-snp",
        "vceks": f"{MOUNT_ENDORSEMENTS}/vceks.pem",
        "crls": f"{MOUNT_ENDORSEMENTS}/crls.pem",
        "sev_snp": {"device": "configfs-tsm", "vmpl": 0,
                    "configfs_path": "/sys/kernel/config/tsm/report",
                    "policy": {"minimum_tcb": {}, "allow_debug": False, "vmpl": 0,
                               "products": ["Genoa", "Milan", "Turin"]}},
    }  # fmt: skip
    assert config.platform.name == "sev-snp"
    assert config.platform.options["device"] == "configfs-tsm"
    assert config.attestation.measurements == (SNP,)
    pod = builders.statefulset(spec, NS, UID, 3, "cluster.local")["spec"]["template"]
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-snp"
    assert pod["metadata"]["annotations"]["example.com/initdata"] == "abc"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "platform" not in volumes  # a hardware platform's endorsements come from AMD
    assert volumes["endorsements"]["secret"]["secretName"] == "amd-kds"
    assert volumes["tee-device"]["hostPath"] == {
        "path": "/sys/kernel/config/tsm/report", "type": "Directory",
    }  # fmt: skip
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["tee-device"]["mountPath"] == "/sys/kernel/config/tsm/report"
    assert mounts["endorsements"] == {
        "name": "endorsements", "mountPath": MOUNT_ENDORSEMENTS, "readOnly": True,
    }  # fmt: skip


def test_emulated_node_configuration_and_pod(tmp_path: Path) -> None:
    spec = snp_spec(device="insecure-emulator", insecureEmulator={"reportVersion": 5},
                    minimumTcb={"Genoa": {"snp": 23}})  # fmt: skip
    raw, config = _node(spec, tmp_path)
    assert raw["platform"]["insecure_emulator_chain"] == (
        f"{MOUNT_PLATFORM}/insecure-emulator-chain.pem"
    )
    assert raw["platform"]["insecure_emulator_key"] == f"{MOUNT_PLATFORM}/insecure-emulator.key"
    assert "vceks" not in raw["platform"]
    assert config.platform.options["report_version"] == 5
    assert config.platform.policy == spec.attestation.sev_snp.policy  # type: ignore[union-attr]
    pod = builders.statefulset(spec, NS, UID, 3, "cluster.local")["spec"]["template"]["spec"]
    assert pod["volumes"][1]["name"] == "platform"
    assert "runtimeClassName" not in pod
    assert "tee-device" not in {v["name"] for v in pod["volumes"]}


def test_the_insecure_virtual_pod_keeps_its_platform_volume_in_place() -> None:
    pod = builders.statefulset(consortium("demo"), NS, UID, 3, "cluster.local")
    spec = pod["spec"]["template"]["spec"]
    assert spec["volumes"][1]["name"] == "platform"
    assert spec["containers"][0]["volumeMounts"][1]["name"] == "platform"
    assert "runtimeClassName" not in spec


def test_the_operator_verifies_with_the_sev_snp_policy() -> None:
    spec = snp_spec(minimumTcb={"Milan": {"snp": 24}}, allowDebug=True)
    policy = policy_for(spec)
    assert policy.allowed_measurements == frozenset({SNP})
    assert policy.platform["sev-snp"]["minimum_tcb"] == {"Milan": {"snp": 24}}
    assert policy.platform["sev-snp"]["allow_debug"] is True
    assert policy_for(consortium("demo")).platform == {}


def test_a_changed_sev_snp_policy_is_proposed_to_the_members() -> None:
    from consortium_operator.proposals import intents as gov  # noqa: PLC0415

    spec = snp_spec(minimumTcb={"Genoa": {"snp": 24}})
    snp = spec.attestation.sev_snp
    assert snp is not None
    base = {
        "measurements": [SNP],
        "host_data": list(spec.allowed_host_data()),
        "validity_seconds": int(spec.attestation.validity.total_seconds()),
        "renew_before_seconds": int(spec.attestation.renew_before.total_seconds()),
    }
    constitution = {"threshold": spec.threshold, "auto_trust_nodes": spec.auto_trust_nodes,
                    "recovery_threshold": spec.recovery_threshold}  # fmt: skip
    same = gov.LedgerGovernance(
        {}, {**base, "platform": {"sev-snp": dict(snp.policy)}}, constitution
    )
    assert gov.policy_intents(spec, same, None) == []
    older = {**dict(snp.policy), "minimum_tcb": {"Genoa": {"snp": 23}}}
    ledger = gov.LedgerGovernance({}, {**base, "platform": {"sev-snp": older}}, constitution)
    (intent,) = gov.policy_intents(spec, ledger, None)
    assert intent.category == "sev-snp-policy"
    assert intent.category in gov.LEVEL_CATEGORIES
    assert intent.cr_name("demo").startswith("demo-sev-snp-policy")
    assert intent.actions == ({"name": "set_sev_snp_policy", "args": {"policy": dict(snp.policy)}},)
    # A ledger from before SEV-SNP policies (insecure-virtual) is not asked anything.
    assert gov.policy_intents(consortium("demo"), gov.LedgerGovernance({}, {}, {}), None) != [
        intent
    ]


def test_only_hardware_evidence_is_called_secure() -> None:
    from consortium_operator.kube import platform  # noqa: PLC0415

    assert platform.insecure(snp_spec()) is False
    assert platform.insecure(snp_spec(device="insecure-emulator")) is True
    assert platform.insecure(consortium("demo")) is True
