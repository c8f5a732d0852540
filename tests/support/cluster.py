"""A consortium of real node processes on 127.0.0.1: one genesis node and joiners."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.harness import Identity, LocalNode, make_identity, make_platform
from tests.support.wait import wait_for


@dataclass
class Cluster:
    workdir: Path
    nodes: list[LocalNode] = field(default_factory=list)
    user: Identity | None = None
    member: Identity | None = None

    @classmethod
    def start(
        cls,
        workdir: Path,
        size: int,
        overrides: dict[str, Any] | None = None,
        join_overrides: dict[str, Any] | None = None,
    ) -> Cluster:
        key, cert = make_platform(workdir / "platform")
        member = make_identity(workdir / "ids", "member0", "governor")
        user = make_identity(workdir / "ids", "user0", "user")
        cluster = cls(workdir, user=user, member=member)
        genesis = LocalNode(
            workdir, "node-0", [member, user], key, cert, overrides=dict(overrides or {})
        )
        cluster.nodes.append(genesis)
        try:
            genesis.start()
            for i in range(1, size):
                cluster.add(i, {**(overrides or {}), **(join_overrides or {})})
            cluster.wait_converged()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add(
        self, number: int, overrides: dict[str, Any] | None = None, wait: bool = True
    ) -> LocalNode:
        genesis = self.nodes[0]
        node = LocalNode(
            self.workdir,
            f"node-{number}",
            [],
            genesis.platform_key,
            genesis.platform_cert,
            overrides=dict(overrides or {}),
            join_from=self.leader() if self.nodes else genesis,
        )
        self.nodes.append(node)  # appended first, so teardown stops it even if start fails
        node.start(wait=wait)
        return node

    def alive(self) -> Iterator[LocalNode]:
        return (n for n in self.nodes if n.alive)

    def leader(self, timeout: float = 10) -> LocalNode:
        def find() -> LocalNode | None:
            for node in self.alive():
                try:
                    if node.state()["role"] == "primary":
                        return node
                except (OSError, AssertionError):
                    continue
            return None

        found: LocalNode = wait_for("a leader", find, timeout, interval=0.05)
        return found

    def wait_converged(self, timeout: float = 30) -> None:
        """Every live node ready, with the same commit index and list version."""

        def converged() -> bool:
            states = [n.state() for n in self.alive()]
            return (
                all(s["status"] == "Trusted" for s in states)
                and len({s["commit_index"] for s in states}) == 1
                and len({s["trusted_list_version"] for s in states}) == 1
                and all(n.get("/readyz")[0] == 200 for n in self.alive())
            )

        wait_for("all nodes to converge", converged, timeout, interval=0.05)

    def write(
        self, writes: dict[str, Any], count: int = 1, node: LocalNode | None = None
    ) -> tuple[int, Any]:
        target = node or self.leader()
        return target.post_json(
            "/app/transactions", {"transactions": [{"writes": writes}] * count}, self.user
        )

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                try:
                    node.stop(timeout=10)
                except Exception:
                    node.kill()

    def logs(self) -> str:
        return "\n".join(f"===== {n.name}\n{n.log()[-3000:]}" for n in self.nodes)


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)[:2000]
