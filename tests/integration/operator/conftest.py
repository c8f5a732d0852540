"""Operator tests on a real local Kubernetes (etcd, apiserver, controller-manager, scheduler,
kubelet on containerd + runc), with real node pods and a real operator process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import Cluster, Operator


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def namespace(
    cluster: Cluster, operator: Operator, request: pytest.FixtureRequest
) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "consortium-test=true")
    yield name
    if operator.process is None:  # a test left it stopped: finalizers need it
        operator.start()
    cluster.kubectl("delete", "consortia", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator_log(operator: Operator) -> Path:
    return operator.log_path
