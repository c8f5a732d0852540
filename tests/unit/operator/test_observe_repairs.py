"""``observe._ledger_repairs``: which pods the operator asks for their ``ledger_repair`` and
what it keeps of the answers (``consortium/observe.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from consortium_operator.consortium import observe
from consortium_operator.consortium.context import Pass
from consortium_operator.nodes.client import NodeClient, NodeUnreachableError

from .test_status import RECOVERING, check, healthy

REPAIRED = {**RECOVERING, "state": "repaired"}


@dataclass
class Pods:
    """What ``_ledger_repairs`` uses of a Pass: the pods' IPs and names."""

    ips: dict[str, str]

    def pod_ips(self) -> dict[str, str]:
        return self.ips

    def fqdn(self, pod: str) -> str:
        return f"{pod}.demo-nodes.ns.svc.cluster.local"


@dataclass
class Nodes:
    """Each pod's ``GET /node/state``: a document, or an exception it raises."""

    states: dict[str, Any]
    asked: list[str] = field(default_factory=list)

    def get_json(self, ip: str, server_name: str, path: str) -> Any:
        assert path == "/node/state"
        pod = server_name.split(".", maxsplit=1)[0]
        self.asked.append(pod)
        answer = self.states[pod]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_verified_pods_are_asked_and_their_faults_kept() -> None:
    obs = healthy(checks={"demo-0": check(0, 1), "demo-1": check(1, 2), "demo-2": check(2, 3),
                          "demo-3": check(3, 4, verified=False)})  # fmt: skip
    pods = Pods({"demo-0": "10.0.0.1", "demo-1": "10.0.0.2", "demo-3": "10.0.0.4"})
    nodes = Nodes(
        {
            "demo-0": {"ledger_repair": None},
            "demo-1": {"ledger_repair": RECOVERING},
            "demo-3": {"ledger_repair": REPAIRED},
        }
    )
    found = observe._ledger_repairs(cast(Pass, pods), obs, cast(NodeClient, nodes))
    assert found == {"demo-1": RECOVERING}
    assert nodes.asked == ["demo-0", "demo-1"]  # demo-2 has no IP, demo-3 is not verified


def test_a_pod_that_does_not_answer_or_answers_nonsense_is_left_out() -> None:
    obs = healthy()
    pods = Pods({"demo-0": "10.0.0.1", "demo-1": "10.0.0.2", "demo-2": "10.0.0.3"})
    nodes = Nodes(
        {
            "demo-0": NodeUnreachableError("demo-0: connection refused"),
            "demo-1": ["not", "a", "state"],
            "demo-2": {"ledger_repair": {"state": 3}},
        }
    )
    assert observe._ledger_repairs(cast(Pass, pods), obs, cast(NodeClient, nodes)) == {}
    assert nodes.asked == ["demo-0", "demo-1", "demo-2"]
