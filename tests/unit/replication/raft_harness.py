"""An in-process Raft cluster for the replication tests.

N ``RaftNode``s share one event loop. Each has a real ``Ledger`` and ``PersistentState`` in its
own directory and a real node identity; RPCs go through an in-memory transport that encodes
and decodes every message (the wire format is exercised too) and can partition a node, drop or
delay the messages of one link, and refuse connections to a stopped node.

Waiting is always polling for a condition with a deadline (``eventually``), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_pem,
    issue_node_certificate,
)
from consortium_node.identity.keys import generate_key
from consortium_node.ledger import (
    Ledger,
    LedgerConfig,
    NodeKeySigner,
    ReceiptNotReadyError,
    TxId,
)
from consortium_node.replication.messages import (
    AppendRequest,
    AppendResponse,
    FetchRequest,
    FetchResponse,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from consortium_node.replication.raft import Configuration, RaftNode, RaftTiming, Role
from consortium_node.replication.state import PersistentState

TIMING = RaftTiming(
    election_timeout=0.15, heartbeat_interval=0.03, rpc_timeout=0.2, commit_timeout=2
)
LEDGER_CONFIG = LedgerConfig(signature_interval_tx=10, signature_interval_ms=20)
LEDGER_SECRET = bytes(range(32))  # one ledger secret shared by every node, as in a real service

TABLE = "records"  # the application table the tests write to

T = TypeVar("T")


def writes(*keys: str) -> list[dict[str, dict[str, Any]]]:
    """One private write set per key: ``{TABLE: {key: "value-<key>"}}``."""
    return [{TABLE: {key: f"value-{key}"}} for key in keys]


async def eventually(
    predicate: Callable[[], T | None], timeout: float = 5.0, what: str = "the condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what}")
        await asyncio.sleep(0.005)


def receipt_or_none(ledger: Ledger, txid: TxId) -> dict[str, Any] | None:
    """The receipt of ``txid``, or None while no committed signature covers it yet."""
    try:
        return ledger.receipt(txid)
    except ReceiptNotReadyError:
        return None


@dataclass
class Member:
    """One node of the test cluster: its identity, directories and current RaftNode."""

    name: str
    address: str
    signer: NodeKeySigner
    directory: Path
    node: RaftNode = field(init=False)
    ledger: Ledger = field(init=False)
    running: bool = False
    ledger_open: bool = False

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    @property
    def state_path(self) -> Path:
        return self.directory / "raft-state.json"

    @property
    def ledger_dir(self) -> Path:
        return self.directory / "ledger"


def value(member: Member, key: str) -> Any:
    """The committed-or-not value of ``key`` in ``member``'s ledger, or None."""
    found = member.ledger.get(TABLE, key)
    return None if found is None else found[0]


class Network:
    """The in-memory transport's switchboard: who is reachable, and what happens to messages."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}  # address → member
        self.partitioned: set[str] = set()  # addresses cut off from everyone (OSError)
        self.dropped: set[tuple[str, str]] = set()  # (from, to): requests vanish (timeout)
        self.delays: dict[tuple[str, str], float] = {}  # (from, to): seconds before delivery
        self.jitter = 0.0  # every message waits a random time in [0, jitter) (reordering)
        self.random = random.Random(1234)
        self.sent: Counter[tuple[str, str, str]] = Counter()  # (kind, from, to) attempts
        self.legacy: set[str] = set()  # nodes that predate pre-vote and fetch (404 → None)
        # The node server refuses an RPC meant for another node (HTTP 421, an OSError to the
        # sender); False: deliver it anyway, as a server that predates the check would.
        self.check_recipient = True

    def _check(self, source: str, target: str) -> Member:
        if source in self.partitioned or target in self.partitioned:
            raise OSError(f"{source} → {target}: network partition")
        sender, member = self.members.get(source), self.members.get(target)
        if sender is None or not sender.running:
            raise OSError(f"{source} is stopped")
        if member is None or not member.running:
            raise OSError(f"{target}: connection refused")
        return member

    async def deliver(self, kind: str, source: str, target: str, request: Any, to: str) -> Any:
        self.sent[(kind, source, target)] += 1
        member = self._check(source, target)
        if self.check_recipient and member.node_id != to:
            raise OSError(f"{target}: HTTP 421: this is {member.node_id[:8]}, not {to[:8]}")
        if (source, target) in self.dropped:
            await asyncio.get_running_loop().create_future()  # lost: the rpc_timeout fires
        delay = self.delays.get((source, target), 0.0) + self.random.random() * self.jitter
        if delay:
            await asyncio.sleep(delay)
        node = self._check(source, target).node
        response: AppendResponse | VoteResponse | FetchResponse
        if isinstance(request, FetchRequest):
            if target in self.legacy:
                return None
            response = await node.handle_fetch(decode(encode(request), FetchRequest))
            self._check(source, target)
            return decode(encode(response), FetchResponse)
        if isinstance(request, AppendRequest):
            response = await node.handle_append(decode(encode(request), AppendRequest))
            self._check(source, target)  # the answer is lost if the link broke meanwhile
            return decode(encode(response), AppendResponse)
        if kind == "prevote" and target in self.legacy:
            return None
        handle = node.handle_pre_vote if kind == "prevote" else node.handle_vote
        response = await handle(decode(encode(request), VoteRequest))
        self._check(source, target)
        return decode(encode(response), VoteResponse)

    def count(self, kind: str, source: Member, target: Member) -> int:
        return self.sent[(kind, source.address, target.address)]


@dataclass
class FakeTransport:
    """``raft.Transport`` for one sender, over the shared ``Network``."""

    network: Network
    source: str

    async def append_entries(self, address: str, request: AppendRequest, to: str) -> AppendResponse:
        response: AppendResponse = await self.network.deliver(
            "append", self.source, address, request, to
        )
        return response

    async def request_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse:
        response: VoteResponse = await self.network.deliver(
            "vote", self.source, address, request, to
        )
        return response

    async def pre_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse | None:
        response: VoteResponse | None = await self.network.deliver(
            "prevote", self.source, address, request, to
        )
        return response

    async def fetch_entries(
        self, address: str, request: FetchRequest, to: str
    ) -> FetchResponse | None:
        response: FetchResponse | None = await self.network.deliver(
            "fetch", self.source, address, request, to
        )
        return response


def quiet_unretrieved_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Record, instead of logging, the loop's "exception was never retrieved" reports.

    raft.py leaves failed futures and tasks unretrieved (the leader no-op's future failed by
    ``_fail_waiters``, finished in-flight AppendEntries tasks). When the garbage collector
    reports one, the default handler formats its traceback, and Python 3.11's traceback
    formatting calls ``ast.parse``; if the collection happened inside another ``ast.parse``
    (pytest's assertion rewriting or failure reports) CPython raises "SystemError: AST
    constructor recursion depth mismatch" (cpython gh-106905) and pytest dies with an
    INTERNALERROR. Any other report still goes to the default handler.
    """
    reports: list[dict[str, Any]] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reports.append(context)
        if "never retrieved" not in str(context.get("message", "")):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return reports


class Cluster:
    """Members sharing one network and one membership (``voters``: node_id → address)."""

    def __init__(
        self, directory: Path, service: ServiceIdentity, timing: RaftTiming = TIMING
    ) -> None:
        self.directory = directory
        self.service = service
        self.timing = timing
        self.network = Network()
        self.voters: dict[str, str] = {}
        self.members: list[Member] = []
        self.roles: list[tuple[str, int, Role]] = []  # (member name, term, new role)

    # -- membership and lifecycle ----------------------------------------------------------

    def configuration(self) -> Configuration:
        return Configuration(voters=dict(self.voters), index=0)

    def create(self, name: str, *, voter: bool = True) -> Member:
        """A member with a fresh identity and empty directories; its node is not started."""
        key = generate_key("p256")
        address = f"{name}.raft.test:8443"
        certificate = issue_node_certificate(
            self.service,
            key.public_key(),
            subject_alt_names=[f"{name}.raft.test"],
            not_after=utcnow() + timedelta(days=1),
        )
        signer = NodeKeySigner(key, certificate_pem(certificate))
        member = Member(name, address, signer, self.directory / name)
        member.directory.mkdir(parents=True)
        self._build(member)
        self.members.append(member)
        self.network.members[address] = member
        if voter:
            self.voters[member.node_id] = address
        return member

    def _build(self, member: Member) -> None:
        """(Re)open the member's ledger and state and make a new RaftNode over them."""
        assert not member.running and not member.ledger_open
        member.ledger = Ledger.open(  # as the node opens it: storage faults are set aside
            member.ledger_dir, ledger_secret=LEDGER_SECRET, config=LEDGER_CONFIG, repair=True
        )
        member.ledger_open = True
        node: RaftNode

        def role_changed(role: Role) -> None:
            self.roles.append((member.name, node.term, role))

        node = RaftNode(
            node_id=member.node_id,
            address=member.address,
            ledger=member.ledger,
            state=PersistentState(member.state_path),
            transport=FakeTransport(self.network, member.address),
            configuration=self.configuration,
            signer=lambda: member.signer,
            timing=self.timing,
            on_role_change=role_changed,
        )
        member.node = node

    async def start(self, member: Member) -> None:
        member.running = True
        await member.node.start()

    async def start_all(self, count: int) -> list[Member]:
        first = len(self.members)
        members = [self.create(f"n{first + i}") for i in range(count)]
        for member in members:
            await self.start(member)
        return members

    async def stop(self, member: Member) -> None:
        """Stop the node (connections to it are refused) and close its ledger."""
        member.running = False
        await member.node.stop()
        member.ledger.close()
        member.ledger_open = False

    def reopen(self, member: Member) -> None:
        """A new RaftNode (not started) over the stopped member's ledger and state file."""
        self._build(member)

    async def close(self) -> None:
        for member in self.members:
            with contextlib.suppress(Exception):
                if member.running:
                    await self.stop(member)
                elif member.ledger_open:
                    member.ledger.close()
                    member.ledger_open = False

    # -- observations -----------------------------------------------------------------------

    def running(self) -> list[Member]:
        return [m for m in self.members if m.running]

    def leaders_by_term(self) -> dict[int, set[str]]:
        """Every member that became leader, by term (election safety: one per term)."""
        leaders: dict[int, set[str]] = {}
        for name, term, role in self.roles:
            if role == "leader":
                leaders.setdefault(term, set()).add(name)
        return leaders

    @staticmethod
    def stable_leader(members: list[Member]) -> Member | None:
        """The leader if exactly one of ``members`` leads and all follow it in its term."""
        leaders = [m for m in members if m.node.role == "leader"]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        for member in members:
            if member.node.term != leader.node.term or member.node.leader_id != leader.node_id:
                return None
        return leader

    async def wait_leader(
        self, members: list[Member] | None = None, timeout: float = 5.0
    ) -> Member:
        """Wait until ``members`` (default: every running member) agree on one leader."""
        group = members if members is not None else self.running()
        return await eventually(
            lambda: self.stable_leader(group),
            timeout,
            f"one leader followed by {[m.name for m in group]}",
        )

    @staticmethod
    def synced(members: list[Member]) -> bool:
        """Same last index, all of it committed, same term at the last index."""
        first = members[0].ledger
        return all(
            m.ledger.last_index == first.last_index
            and m.ledger.commit_index == first.last_index
            and m.ledger.last_txid == first.last_txid
            for m in members
        )

    async def wait_synced(self, members: list[Member], timeout: float = 5.0) -> None:
        await eventually(
            lambda: self.synced(members),
            timeout,
            "logs equal and committed: "
            + ", ".join(f"{m.name}={m.ledger.last_txid}/{m.ledger.commit_index}" for m in members),
        )

    def check_safety(self) -> None:
        """Election safety, and the committed prefixes of all members agree.

        Running members are compared byte for byte; stopped ones (ledger closed) by term.
        """
        for term, names in self.leaders_by_term().items():
            assert len(names) == 1, f"term {term} had leaders {sorted(names)}"
        members = [m for m in self.members if m.ledger.commit_index > 0]
        if len(members) < 2:
            return
        common = min(m.ledger.commit_index for m in members)
        terms = [members[0].ledger.term_at(i) for i in range(1, common + 1)]
        for member in members[1:]:
            assert [member.ledger.term_at(i) for i in range(1, common + 1)] == terms, (
                f"{member.name} and {members[0].name} differ in terms of the committed prefix"
            )
        running = [m for m in members if m.running]
        if len(running) >= 2:
            reference = running[0].ledger.raw_entries(1, common)
            for member in running[1:]:
                assert member.ledger.raw_entries(1, common) == reference, (
                    f"{member.name} and {running[0].name} differ in the committed prefix"
                )
