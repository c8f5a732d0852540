"""Consortia on the ``sev-snp`` platform, with the INSECURE emulator standing in for the AMD
Secure Processor: real node processes run the real SEV-SNP verifier on reports in the real
byte format (issue 16). Joins, refusals by name, re-attestation, ``consortiumctl``, and a
TEE that keeps no sealed secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.attestation import measure_installed
from consortium_node.attestation.sev_snp import emulator
from tests.support.cluster import Cluster
from tests.support.harness import ctl
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

MEASUREMENT = emulator.launch_measurement(measure_installed()).hex()
DATA = Path(__file__).parents[1] / "data" / "sev_snp"


def write_material(directory: Path, product: str = "Genoa") -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in emulator.provision(product).items():
        (directory / name).write_bytes(content)
        paths[name] = str(directory / name)
    return paths


def snp_platform(material: dict[str, str], **emulated: Any) -> dict[str, Any]:
    return {
        "name": "sev-snp",
        "insecure_emulator_chain": material[emulator.CHAIN_FILE],
        "insecure_emulator_key": material[emulator.KEY_FILE],
        "sev_snp": {
            "device": "insecure-emulator",
            "emulator": emulated,
            "policy": {"minimum_tcb": {"Genoa": {"snp": 23, "microcode": 84}}},
        },
    }


@pytest.fixture
def snp_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, str]]]:
    material = write_material(tmp_path / "emulator")
    overrides = {
        "platform": snp_platform(material),
        "attestation": {"measurements": [MEASUREMENT], "validity": "6s", "renew_before": "3s"},
    }
    cluster = Cluster.start(tmp_path / "c", 3, overrides=overrides)
    yield cluster, material
    cluster.stop()


def test_three_nodes_on_sev_snp_join_write_and_re_attest(
    snp_cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    cluster, material = snp_cluster
    assert cluster.write({"k": "v"})[0] == 200
    genesis = cluster.nodes[0]
    state = genesis.state()
    assert state["platform"] == "sev-snp"
    assert state["measurement"] == MEASUREMENT
    _, lst = genesis.get("/node/trusted-list?format=json")
    assert sorted(n["name"] for n in lst["nodes"]) == ["node-0", "node-1", "node-2"]
    seen = {n["node_id"]: {n["attested_at"]} for n in lst["nodes"]}

    def re_attested() -> bool:
        for entry in cluster.leader().get("/node/trusted-list?format=json")[1]["nodes"]:
            assert entry["status"] == "Trusted", entry
            seen[entry["node_id"]].add(entry["attested_at"])
        return all(len(v) >= 3 for v in seen.values())

    wait_for("two re-attestations of every node", re_attested, 40, interval=0.3)
    # An auditor checks a node's quote with consortiumctl and the emulator's root only.
    node = cluster.nodes[1]
    common = ["--platform", "sev-snp", "--insecure-emulator-root", material[emulator.CHAIN_FILE],
              "--node", node.url, "--service-cert", str(genesis.service_cert)]  # fmt: skip
    done = ctl("quote", "verify", *common, "--measurement", MEASUREMENT,
               "--snp-min-tcb", "Genoa:snp=23")  # fmt: skip
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["platform"] == "sev-snp"
    assert claims["measurement"] == MEASUREMENT
    assert claims["node_id"] == node.state()["node_id"]
    done = ctl("quote", "verify", *common, "--measurement", MEASUREMENT,
               "--snp-min-tcb", "Genoa:snp=24")  # fmt: skip
    assert done.returncode == 1
    assert "quote refused: TcbTooLow: REPORTED_TCB of this Genoa is low: snp 23 < 24" in done.stderr
    without_root = [
        a for a in common if a not in ("--insecure-emulator-root", material[emulator.CHAIN_FILE])
    ]
    done = ctl("quote", "verify", *without_root, "--measurement", MEASUREMENT)
    assert done.returncode == 1
    assert "quote refused: BadEndorsement" in done.stderr


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-measurement", "MeasurementNotAllowed"),
        ("low-tcb", "TcbTooLow"),
        ("rogue-root", "BadEndorsement"),
        ("old-report-version-5", None),
    ],
)
def test_joiners_are_judged_by_the_sev_snp_verifier(
    snp_cluster: tuple[Cluster, dict[str, str]], tmp_path: Path, case: str, reason: str | None
) -> None:
    cluster, material = snp_cluster
    overrides: dict[str, Any] = {"attestation": {"measurements": [MEASUREMENT]}}
    if case == "wrong-measurement":
        overrides |= {"platform": snp_platform(material), "insecure_test_faults": [case]}
    elif case == "low-tcb":
        overrides["platform"] = snp_platform(material, tcb={"microcode": 83})
    elif case == "rogue-root":
        overrides["platform"] = snp_platform(write_material(tmp_path / "rogue"))
    else:
        overrides["platform"] = snp_platform(material, report_version=5)
    joiner = cluster.add(3, overrides, wait=reason is None)
    if reason is None:
        assert joiner.state()["status"] == "Trusted"
        return
    assert joiner.proc is not None
    assert joiner.proc.wait(30) == 3, joiner.log()[-2000:]
    assert f"join refused: {reason}" in joiner.log()
    metrics = cluster.leader().request("GET", "/metrics")[1].decode()
    assert f'consortium_join_requests_total{{reason="{reason}",result="refused"}} 1.0' in metrics


def test_a_node_that_cannot_seal_joins_afresh_after_a_restart(tmp_path: Path) -> None:
    """configfs-tsm gives reports but no derived keys: such a node keeps no sealed secrets,
    and a restarted one comes back as a new node (its old data kept aside)."""
    material = write_material(tmp_path / "emulator")
    overrides = {
        "platform": snp_platform(material),
        "attestation": {"measurements": [MEASUREMENT]},
    }
    cluster = Cluster.start(tmp_path / "c", 3, overrides=overrides)
    try:
        volatile = {**overrides, "platform": snp_platform(material, derived_keys=False)}
        node = cluster.add(3, volatile)
        first_id = node.state()["node_id"]
        assert not list((node.data_dir / "sealed").glob("*.sealed"))
        assert cluster.write({"before": "restart"})[0] == 200
        node.stop()
        node.start()
        second_id = node.state()["node_id"]
        assert second_id != first_id
        aside = [p.name for p in node.data_dir.iterdir() if p.name.startswith("retired-")]
        assert len(aside) == 1, aside
        assert "identity-lost" in aside[0]
        assert not list((node.data_dir / "sealed").glob("*.sealed"))
        code, body = node.get("/app/kv/before", cluster.user)
        assert code == 200, body
    finally:
        cluster.stop()
