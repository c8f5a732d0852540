"""Raft consensus over the ledger: the Raft log IS the ledger (DESIGN section 6).

Crash-fault tolerant replication among the Trusted nodes of the latest trusted-node list in the
log (committed or not, as the Raft thesis prescribes for single-server membership changes; the
primary issues one list change at a time). What this module adds to textbook Raft:

* **Group commit**: every append on the leader goes through one queue; a flush round appends
  all waiting batches, adds a signature transaction when due, fsyncs once, then replicates.
* **Pipelining**: up to ``max_inflight`` AppendEntries per follower are in flight; a follower
  waits briefly for a preceding request instead of failing on a gap, so reordering on parallel
  connections costs nothing.
* **Leader no-op**: a new leader appends a public "leader" entry and a signature in its term at
  once, so earlier entries commit (and get receipts) without waiting for client traffic.
* **Pre-vote, leader stickiness and check-quorum** (``election``): a node whose timer fires
  campaigns only if a majority would vote for it, without raising its term before; a node that
  heard from a live leader refuses (pre-)votes; a leader that has not heard from a majority
  within an election timeout steps down (writes then fail fast instead of hanging). A
  restarted, lagging, joining or removed node therefore cannot depose a healthy leader.
* **Protocol-aware recovery** (as CTRL, Alagappan et al., FAST 2018): a node whose ledger lost
  entries it held durably, and so may have acknowledged, to a storage fault
  (``Ledger.unvouched``: its commit markers say how far its log was durable and committed)
  neither campaigns nor grants a (pre-)vote to a log that does not reach that position,
  until it holds them again: the leader replicates them, and when its log stops growing (a
  leader that started from a snapshot after them, or no leader) it fetches them from any voter
  that holds them committed (``repair``, ``fetch``); if none does, the node installs a
  snapshot (``unfetchable``; ``server.snapshot_install``). No node truncates an entry it
  knows committed (the append is refused and logged instead). Damage on a minority is
  repaired with no loss; on a majority no leader can be elected without the lost entries, so
  writes stop (and say why: ``not_leader``, ``/readyz``) instead of silently forgetting them.

The network is behind the ``Transport`` protocol; membership comes from a ``configuration``
callable (node_id → address), so this module knows nothing of TLS or trusted-node lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from consortium_node.ledger import (
    EntryKind,
    Ledger,
    LedgerError,
    LedgerSigner,
    TxId,
    peek_position,
)
from consortium_node.replication import fetch
from consortium_node.replication.election import (
    Tally,
    canvass,
    grants_pre_vote,
    leader_is_live,
    log_up_to_date,
    majority,
    voters_heard,
)
from consortium_node.replication.messages import (
    AppendRequest,
    AppendResponse,
    FetchRequest,
    FetchResponse,
    VoteRequest,
    VoteResponse,
)
from consortium_node.replication.repair import Repair
from consortium_node.replication.state import PersistentState

log = logging.getLogger("consortium_node.raft")

Role = Literal["leader", "follower", "candidate"]
LEADER_TABLE = "public:consortium.raft"


class NotLeaderError(RuntimeError):
    """This node is not the leader; ``leader_address`` is where to go, if known."""

    def __init__(
        self, leader_id: str | None, leader_address: str | None, why: str | None = None
    ) -> None:
        where = f"the leader is {leader_address}" if leader_address else "no leader is known"
        super().__init__(f"this node is not the leader; {where}" + (f" ({why})" if why else ""))
        self.leader_id, self.leader_address, self.why = leader_id, leader_address, why


class CommitTimeoutError(RuntimeError):
    """Appended but not committed in time (no quorum?); the outcome is unknown, not failed."""

    def __init__(self, txids: Sequence[TxId], timeout: float, reason: str) -> None:
        ids = ", ".join(str(t) for t in txids[:3]) + (" …" if len(txids) > 3 else "")
        super().__init__(
            f"not committed within {timeout:.1f}s ({reason}); transactions {ids} may still "
            "commit or be discarded: check their receipts"
        )
        self.txids = list(txids)


class Transport(fetch.FetchTransport, Protocol):
    """Sends Raft RPCs to the node ``to`` at ``address``; raises ``OSError``/``TimeoutError``
    when it cannot, and also when another node answers there (a node that lost its identity
    and joined again under a new one keeps its address): an RPC meant for one voter must
    never be answered, or counted, as another's."""

    async def append_entries(
        self, address: str, request: AppendRequest, to: str
    ) -> AppendResponse: ...

    async def request_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse: ...

    async def pre_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse | None:
        """A pre-vote (``request.term`` is the proposed term); None: the peer predates it."""
        ...


@dataclass(frozen=True)
class RaftTiming:
    """Timeouts in seconds; tests use small values, production the defaults."""

    election_timeout: float = 1.0  # randomised in [t, 2t)
    heartbeat_interval: float = 0.1
    rpc_timeout: float = 2.0
    commit_timeout: float = 10.0
    max_inflight: int = 4
    max_batch_entries: int = 2000
    max_batch_bytes: int = 4 * 1024 * 1024


@dataclass
class _Peer:
    node_id: str
    address: str
    next_index: int
    match_index: int = 0
    generation: int = 0  # bumped when next_index is reset; stale responses are ignored
    last_contact: float = 0.0
    retry_at: float = 0.0  # after a failed RPC, wait a heartbeat before the next one
    behind_base: bool = False  # its log ends before this leader's snapshot base (logged once)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


_Send: TypeAlias = Callable[[str, VoteRequest, str], Awaitable[VoteResponse | None]]

# Write sets, or a function of the index the first one will get (called when appended).
WriteSets: TypeAlias = (
    Sequence[dict[str, dict[str, Any]]] | Callable[[int], Sequence[dict[str, dict[str, Any]]]]
)


@dataclass
class _Submission:
    write_sets: WriteSets
    kind: EntryKind
    future: asyncio.Future[list[TxId]]
    txids: list[TxId] = field(default_factory=list)
    until_committed: bool = True


@dataclass(frozen=True)
class Configuration:
    """The voters (node_id → address) and the index of the entry that defined them."""

    voters: dict[str, str]
    index: int


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (its failure is handled or deliberately dropped)."""
    if not future.cancelled():
        future.exception()


COMMIT_STEP = 200  # entries committed at a time (``_commit_to``) ...
COMMIT_TURN = 0.02  # ... for at most about this many seconds per turn of the event loop


def majority_index(matches: Sequence[int]) -> int:
    """The highest index replicated on a majority of ``matches`` (one value per voter)."""
    ordered = sorted(matches, reverse=True)
    return ordered[len(ordered) // 2] if ordered else 0


class RaftNode:
    """One node's Raft state machine and its asyncio tasks."""

    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        ledger: Ledger,
        state: PersistentState,
        transport: Transport,
        configuration: Callable[[], Configuration],
        signer: Callable[[], LedgerSigner],
        timing: RaftTiming | None = None,
        on_commit: Callable[[int], None] | None = None,
        on_role_change: Callable[[Role], None] | None = None,
        on_signature: Callable[[], None] | None = None,
        on_commit_latency: Callable[[float], None] | None = None,
        on_log_grown: Callable[[], None] | None = None,
    ) -> None:
        self.node_id, self.address = node_id, address
        self.ledger, self.state, self.transport = ledger, state, transport
        self.configuration, self._signer = configuration, signer
        self.timing = timing or RaftTiming()
        self._on_commit, self._on_role_change = on_commit, on_role_change
        self._on_signature, self._on_latency = on_signature, on_commit_latency
        self._on_log_grown = on_log_grown  # a follower appended entries (a repair may be done)
        self.role: Role = "follower"
        self.leader_id: str | None = None
        self.leader_address: str | None = None
        self._last_leader_contact = 0.0
        self._election_deadline = 0.0
        self._peers: dict[str, _Peer] = {}
        self._queue: list[_Submission] = []
        self._waiters: list[tuple[int, asyncio.Future[list[TxId]], list[TxId]]] = []
        self._flush_wake = asyncio.Event()
        self._append_cond = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._leader_since = 0.0
        self._force_signature = False
        self._unfit_reported: str | None = None  # why we do not campaign, as last logged
        self._refused_leader: tuple[str, int] | None = None  # whose entries we last refused
        self._commit_target = 0  # the highest index known committed, applied in slices
        self._applying = False  # a slice is scheduled
        self.leader_commit = 0  # the leader's commit index, as last heard (or our own)
        self._repair = Repair(self)  # committed entries the leader cannot send (``repair``)
        self.ledger.term = max(self.ledger.term, self.state.current_term)

    # ------------------------------------------------------------------ lifecycle
    @property
    def term(self) -> int:
        return self.state.current_term

    @property
    def commit_index(self) -> int:
        return self.ledger.commit_index

    @property
    def stopped(self) -> bool:
        return self._stopped

    def voters(self) -> dict[str, str]:
        return self.configuration().voters

    def silent_for(self, node_id: str) -> float | None:
        """Seconds since this leader last heard from the voter ``node_id`` (its answer to an
        AppendEntries; since leading, at most); None if not leading or not a peer."""
        peer = self._peers.get(node_id) if self.role == "leader" else None
        return None if peer is None else time.monotonic() - peer.last_contact

    def configuration_committed(self) -> bool:
        """True when the latest configuration entry is committed (a new change may start)."""
        return self.configuration().index <= self.ledger.commit_index

    async def start(self) -> None:
        self._reset_election_deadline(initial=True)
        self._leader_since = 0.0
        self._force_signature = False
        self._tasks.append(asyncio.create_task(self._ticker(), name="raft-ticker"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="raft-flusher"))
        self._tasks.append(asyncio.create_task(self._repair.run(), name="raft-repairer"))

    async def stop(self) -> None:
        self._stopped = True
        for peer in self._peers.values():
            if peer.task:
                peer.task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *(p.task for p in self._peers.values() if p.task)]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiters(NotLeaderError(None, None))

    # ------------------------------------------------------------------ roles
    def _set_role(self, role: Role) -> None:
        if role != self.role:
            log.info("term %d: %s → %s", self.term, self.role, role)
            self.role = role
            if self._on_role_change:
                self._on_role_change(role)

    def _become_follower(
        self, term: int, leader_id: str | None = None, leader_address: str | None = None
    ) -> None:
        if term > self.term:
            self.state.save(term, None)
            self.ledger.term = max(self.ledger.term, term)
        was_leader = self.role == "leader"
        self.leader_id, self.leader_address = leader_id, leader_address
        self._set_role("follower")
        if was_leader:
            self._stop_replication()
            self._fail_waiters(NotLeaderError(leader_id, leader_address))

    def _reset_election_deadline(self, initial: bool = False) -> None:
        base = self.timing.election_timeout
        if initial and set(self.voters()) == {self.node_id}:
            self._election_deadline = time.monotonic()  # alone: lead at once
            return
        self._election_deadline = time.monotonic() + base * (1 + random.random())  # noqa: S311

    async def _ticker(self) -> None:
        previous = time.monotonic()
        while not self._stopped:
            await asyncio.sleep(min(0.02, self.timing.heartbeat_interval / 2))
            now = time.monotonic()
            # After a stall of this event loop the answers that came in meanwhile are not
            # processed yet: judge the followers on the next tick, not on our own pause.
            stalled, previous = now - previous > self.timing.heartbeat_interval, now
            if self.role == "leader":
                if not stalled:
                    self._check_quorum(now)
            elif now >= self._election_deadline and self.node_id in self.voters():
                await self._election_timer_fired()

    def _check_quorum(self, now: float) -> None:
        """Check-quorum: step down unless a majority answered within an election timeout."""
        voters = self.voters()
        if self.node_id not in voters:
            return
        window = self.timing.election_timeout
        contacts = {nid: peer.last_contact for nid, peer in self._peers.items()}
        heard = voters_heard(voters, self.node_id, contacts, now, window)
        if not majority(heard, len(voters)) and now - self._leader_since > window:
            log.warning(
                "term %d: heard from %d of %d voters; stepping down", self.term, heard, len(voters)
            )
            self._become_follower(self.term)
            self._reset_election_deadline()

    async def _election_timer_fired(self) -> None:
        """No leader for an election timeout: pre-vote, and campaign only if it was won."""
        self.leader_id = self.leader_address = None  # it is not live any more, as far as we know
        self._reset_election_deadline()
        term, contact = self.term, self._last_leader_contact
        unfit = self.unfit_to_lead()
        if unfit is not None:
            if unfit != self._unfit_reported:
                log.warning("term %d: not campaigning: %s", term, unfit)
                self._unfit_reported = unfit
            return
        if not await self._pre_vote():
            return
        if self.role == "leader" or self.term != term or self._last_leader_contact != contact:
            return  # a leader reached us, or the term moved on, while we asked
        if not self._stopped and self.node_id in self.voters():
            await self._campaign()

    def unfit_to_lead(self) -> str | None:
        """Why this node must not campaign now, or None: a log that lost entries it held
        durably (and may have acknowledged) to a storage fault, until the leader has
        replicated them again, or that holds another history than the one it knew committed,
        could only lead the consortium to forget them."""
        missing, diverged = self.ledger.unvouched, self.ledger.diverged
        if missing is not None:
            return (
                f"its log ends at {self.ledger.last_index}, before entries it held durably and "
                f"lost (up to {missing.term}.{missing.index})"
            )
        if diverged is not None:
            return f"its log disagrees with the committed entry {diverged.term}.{diverged.index}"
        return None

    def _vouched(self) -> tuple[int, int]:
        """``(last_term, last_index)`` a candidate's log must reach for our (pre-)vote: our
        log's end, or the durable position we know of and lost, whichever is later."""
        last = self.ledger.last_index
        own = (self.ledger.term_at(last), last)
        missing = self.ledger.unvouched
        return max(own, missing.raft_order()) if missing is not None else own

    def _vote_request(self, term: int) -> VoteRequest:
        last = self.ledger.last_index
        return VoteRequest(term, self.node_id, last, self.ledger.term_at(last))

    async def _canvass(self, send: _Send, request: VoteRequest, term: int) -> Tally:
        voters, timeout = self.voters(), self.timing.rpc_timeout
        return await canvass(
            lambda a, to: send(a, request, to), voters, self.node_id, term, timeout
        )

    async def _pre_vote(self) -> bool:
        """Would a majority vote for us at term + 1? Nothing is persisted, no term is raised."""
        term = self.term
        tally = await self._canvass(self.transport.pre_vote, self._vote_request(term + 1), term)
        if tally.highest_term > self.term:
            self._become_follower(tally.highest_term)  # the cluster moved on: learn its term
            return False
        if not tally.won:
            log.debug(
                "term %d: pre-vote refused (%d of %d)", term, len(tally.granted), tally.voters
            )
        return tally.won

    async def _campaign(self) -> None:
        term = self.term + 1
        self.state.save(term, self.node_id)
        self.ledger.term = max(self.ledger.term, term)
        self._set_role("candidate")
        self._reset_election_deadline()
        tally = await self._canvass(self.transport.request_vote, self._vote_request(term), term)
        if tally.highest_term > self.term:
            self._become_follower(tally.highest_term)
        elif self.role == "candidate" and self.term == term and tally.won:
            self._become_leader()

    def _become_leader(self) -> None:
        self._set_role("leader")
        self.leader_id, self.leader_address = self.node_id, self.address
        self._leader_since = time.monotonic()
        self.ledger.term = self.term
        log.info("term %d: leader with %d voters", self.term, len(self.voters()))
        # A current-term entry (and its signature) commits everything before it.
        self._queue.insert(
            0,
            _Submission(
                [{LEADER_TABLE: {"leader": {"node_id": self.node_id, "term": self.term}}}],
                EntryKind.PUBLIC,
                asyncio.get_running_loop().create_future(),
            ),
        )
        self._force_signature = True
        self._sync_peers()
        self._flush_wake.set()

    # ------------------------------------------------------------------ leader: writes
    async def submit(
        self,
        write_sets: WriteSets,
        kind: EntryKind = EntryKind.PRIVATE,
        *,
        until_committed: bool = True,
    ) -> list[TxId]:
        """Append as leader and wait until committed; raises NotLeader or CommitTimeout.

        ``write_sets`` may be a function of the index the first write set gets, called when
        they are appended (a rotation entry names the index its secret applies from).

        ``until_committed=False`` returns once the entries are durable on the leader: a
        configuration change that adds a voter can only commit after that voter (which is
        waiting for this answer) catches up.
        """
        if self.role != "leader":
            raise self.not_leader()
        future: asyncio.Future[list[TxId]] = asyncio.get_running_loop().create_future()
        submission = _Submission(write_sets, kind, future, until_committed=until_committed)
        self._queue.append(submission)
        self._flush_wake.set()
        started = time.perf_counter()
        try:
            txids = await asyncio.wait_for(asyncio.shield(future), self.timing.commit_timeout)
            if self._on_latency:
                self._on_latency(time.perf_counter() - started)
            return txids
        except TimeoutError:
            txids = submission.txids
            voters = self.voters()
            reachable = 1 + sum(
                1
                for p in self._peers.values()
                if p.node_id in voters
                and time.monotonic() - p.last_contact < self.timing.rpc_timeout
            )
            raise CommitTimeoutError(
                txids, self.timing.commit_timeout, f"{reachable} of {len(voters)} voters reachable"
            ) from None

    async def _flusher(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wake.wait(), self.timing.heartbeat_interval)
            self._flush_wake.clear()
            if self.role == "leader":
                self._flush_round()

    def _flush_round(self) -> None:
        queued, self._queue = self._queue, []
        batch = []
        for submission in queued:
            try:
                write_sets = submission.write_sets
                if callable(write_sets):
                    write_sets = write_sets(self.ledger.last_index + 1)
                submission.txids = self.ledger.append(write_sets, submission.kind)
            except Exception as exc:  # a write-set function may fail in its own way too
                # One bad submission fails alone; the flusher and the rest of the batch go on.
                if not submission.future.done():
                    submission.future.set_exception(exc)
                continue
            batch.append(submission)
            if submission.until_committed:
                last = submission.txids[-1].index
                self._waiters.append((last, submission.future, submission.txids))
        if self._force_signature or self.ledger.signature_due():
            self._force_signature = False
            if self.ledger.append_signature(self._signer()) and self._on_signature:
                self._on_signature()
        if self.ledger.durable_index < self.ledger.last_index:
            self.ledger.sync()
            for peer in self._peers.values():
                peer.wake.set()
        for submission in batch:
            if not submission.until_committed and not submission.future.done():
                submission.future.set_result(submission.txids)
        self._advance_commit()
        self._sync_peers()

    def _advance_commit(self) -> None:
        voters = self.voters()
        matches = [
            self.ledger.durable_index
            if nid == self.node_id
            else (self._peers[nid].match_index if nid in self._peers else 0)
            for nid in voters
        ]
        candidate = majority_index(matches)
        if candidate > self.ledger.commit_index and self.ledger.term_at(candidate) == self.term:
            self._commit_to(candidate)
        if self.node_id not in voters and self.role == "leader" and self.configuration_committed():
            log.info("term %d: no longer a voter; stepping down", self.term)
            self._become_follower(self.term)

    def _commit_to(self, index: int) -> None:
        """Commit up to ``index``: steps of ``COMMIT_STEP`` entries for ``COMMIT_TURN`` seconds
        now, the rest in later turns of the event loop, so a node catching up on many entries
        keeps answering heartbeats and ``/healthz`` meanwhile. One chain of turns at a time:
        a commit while one is scheduled only moves its target."""
        self._commit_target = max(self._commit_target, index)
        if not self._applying:
            self._apply_slice()

    def _apply_slice(self) -> None:
        self._applying = False
        deadline = time.monotonic() + COMMIT_TURN
        while True:
            target = min(self._commit_target, self.ledger.commit_index + COMMIT_STEP)
            if target <= self.ledger.commit_index:
                break
            self._commit_slice(target)
            if self.ledger.commit_index < target or time.monotonic() >= deadline:
                break
        if (
            self.ledger.commit_index < min(self._commit_target, self.ledger.durable_index)
            and not self._applying
            and not self._stopped
        ):
            with contextlib.suppress(RuntimeError):  # no running loop: the next commit goes on
                asyncio.get_running_loop().call_soon(self._apply_slice)
                self._applying = True

    def _commit_slice(self, index: int) -> None:
        self.ledger.advance_commit(index)
        committed = self.ledger.commit_index
        keep = []
        for last, future, txids in self._waiters:
            if last <= committed:
                if not future.done():
                    future.set_result(txids)
            else:
                keep.append((last, future, txids))
        self._waiters = keep
        if self._on_commit:
            self._on_commit(committed)

    def _fail_waiters(self, error: Exception) -> None:
        futures = [s.future for s in self._queue] + [f for _, f, _ in self._waiters]
        self._queue, self._waiters = [], []
        for future in futures:
            if not future.done():
                future.set_exception(error)
                future.add_done_callback(_retrieve)  # internal ones (leader no-op) have no reader

    # ------------------------------------------------------------------ leader: replication
    def _sync_peers(self) -> None:
        """Start replicators for voters (and keep them for peers being removed)."""
        if self.role != "leader":
            return
        for nid, address in self.voters().items():
            if nid == self.node_id:
                continue
            peer = self._peers.get(nid)
            if peer is None:
                peer = self._peers[nid] = _Peer(nid, address, self.ledger.last_index + 1)
                peer.last_contact = time.monotonic()
            peer.address = address
            if peer.task is None or peer.task.done():
                peer.task = asyncio.create_task(self._replicate(peer), name=f"replicate-{nid[:8]}")

    def _stop_replication(self) -> None:
        for peer in self._peers.values():
            if peer.task:
                peer.task.cancel()
        self._peers.clear()

    async def _replicate(self, peer: _Peer) -> None:
        inflight: dict[asyncio.Task[AppendResponse], tuple[int, AppendRequest]] = {}
        last_sent = 0.0
        term = self.term
        while self.role == "leader" and self.term == term and peer.node_id in self.voters():
            now = time.monotonic()
            window = self.timing.max_inflight if peer.match_index + 1 >= peer.next_index else 1
            while (
                len(inflight) < window
                and now >= peer.retry_at
                and (
                    peer.next_index <= self.ledger.last_index
                    or (not inflight and now - last_sent >= self.timing.heartbeat_interval)
                )
            ):
                request = self._append_request(peer)
                peer.next_index += len(request.entries)
                task = asyncio.create_task(
                    asyncio.wait_for(
                        self.transport.append_entries(peer.address, request, peer.node_id),
                        self.timing.rpc_timeout,
                    )
                )
                inflight[task] = (peer.generation, request)
                last_sent = now
            peer.wake.clear()
            waits: set[asyncio.Future[Any]] = set(inflight)
            waker = asyncio.ensure_future(peer.wake.wait())
            waits.add(waker)
            try:
                done, _ = await asyncio.wait(
                    waits,
                    timeout=self.timing.heartbeat_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            except asyncio.CancelledError:
                self._cancel_all(inflight)
                raise
            finally:
                waker.cancel()
            for task in [t for t in done if t in inflight]:
                generation, request = inflight.pop(task)
                self._handle_append_result(peer, generation, request, task)
        self._cancel_all(inflight)

    @staticmethod
    def _cancel_all(tasks: dict[asyncio.Task[AppendResponse], Any]) -> None:
        """Cancel in-flight RPCs, retrieving any result so nothing is reported unretrieved."""
        for task in tasks:
            task.cancel()
            task.add_done_callback(_retrieve)
        tasks.clear()

    def _append_request(self, peer: _Peer) -> AppendRequest:
        prev = peer.next_index - 1
        entries: list[bytes] = []
        if peer.next_index <= self.ledger.last_index:
            entries = self.ledger.entries_from(
                peer.next_index, self.timing.max_batch_entries, self.timing.max_batch_bytes
            )
        return AppendRequest(
            self.term,
            self.node_id,
            self.address,
            prev,
            self.ledger.term_at(prev),
            tuple(entries),
            self.ledger.commit_index,
        )

    def _handle_append_result(
        self,
        peer: _Peer,
        generation: int,
        request: AppendRequest,
        task: asyncio.Task[AppendResponse],
    ) -> None:
        try:
            response = task.result()
            if response.node_id != peer.node_id:  # another node answers at its address
                raise ValueError(f"answered by {response.node_id[:8]}")
        except (OSError, TimeoutError, ValueError, asyncio.CancelledError) as exc:
            log.debug("append to %s failed: %s", peer.node_id[:8], exc)
            self._reset_peer(peer, peer.match_index + 1)
            peer.retry_at = time.monotonic() + self.timing.heartbeat_interval
            return
        peer.last_contact = time.monotonic()
        if response.term > self.term:
            self._become_follower(response.term)
            self._reset_election_deadline()
            return
        if generation != peer.generation:
            return
        if response.success:
            peer.match_index = max(peer.match_index, response.match_index)
            self._advance_commit()
            return
        if response.last_index < peer.match_index:
            # The follower lost entries it had acknowledged (a torn tail on SIGKILL, a storage
            # fault): resend from where its log now ends. Leader stickiness means no election
            # will come to reset this view, and sending from match_index + 1 would fail for ever.
            log.warning(
                "%s lost entries it had acknowledged: its log ends at %d, it had matched %d; "
                "resending from there",
                peer.node_id[:8],
                response.last_index,
                peer.match_index,
            )
            peer.match_index = response.last_index
        base = self.ledger.base_index
        if response.last_index < base and not peer.behind_base:
            # This leader started from a snapshot at ``base`` and does not hold the entries
            # the follower lacks: it keeps the follower in its term (heartbeats at ``base``);
            # the follower fetches them from a voter that holds the history (``fetch``) or,
            # if none does, installs a snapshot (``server.snapshot_install``).
            log.warning(
                "%s's log ends at %d, before the snapshot at %d this leader started from: it "
                "cannot be sent entries %d..%d from here; it fetches them from a node that holds "
                "them, or installs a snapshot if none does",
                peer.node_id[:8],
                response.last_index,
                base,
                response.last_index + 1,
                base,
            )
            peer.behind_base = True
        elif response.last_index >= base:
            peer.behind_base = False
        self._reset_peer(peer, min(response.last_index + 1, request.prev_index))

    def _reset_peer(self, peer: _Peer, next_index: int) -> None:
        peer.generation += 1
        floor = max(1, self.ledger.base_index + 1, peer.match_index + 1)
        peer.next_index = max(floor, min(next_index, self.ledger.last_index + 1))

    # ------------------------------------------------------------------ follower: RPCs
    async def handle_append(self, request: AppendRequest) -> AppendResponse:
        """AppendEntries from a leader: log matching, conflict truncation, fsync, commit."""
        if request.term < self.term:
            return self._append_response(False)
        if request.term > self.term or self.role != "follower" or self.leader_id is None:
            self._become_follower(request.term, request.leader_id, request.leader_address)
        self.leader_id, self.leader_address = request.leader_id, request.leader_address
        self.leader_commit = max(self.leader_commit, request.leader_commit)
        self._last_leader_contact = time.monotonic()
        self._reset_election_deadline()
        request = self._above_base(request)
        async with self._append_cond:
            if request.prev_index > self.ledger.last_index:
                # A pipelined predecessor may still be on its way: wait for it briefly.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._append_cond.wait_for(
                            lambda: self.ledger.last_index >= request.prev_index
                        ),
                        self.timing.heartbeat_interval,
                    )
            if request.term != self.term:
                return self._append_response(False)
            if (
                request.prev_index > self.ledger.last_index
                or self.ledger.term_at(request.prev_index) != request.prev_term
            ):
                return self._append_response(False)
            try:
                self._append_new(request)
            except LedgerError as exc:  # it would remove entries known committed
                if (request.leader_id, request.term) != self._refused_leader:
                    leader = request.leader_id[:8]
                    log.error("term %d: refusing %s's entries: %s", self.term, leader, exc)
                    self._refused_leader = (request.leader_id, request.term)
                return self._append_response(False)
            self._append_cond.notify_all()
            if request.entries and self._on_log_grown:
                self._on_log_grown()
            match = request.prev_index + len(request.entries)
            commit = min(request.leader_commit, match)
            if commit > self.ledger.commit_index:
                self._commit_to(commit)
            return self._append_response(True, match)

    def _above_base(self, request: AppendRequest) -> AppendRequest:
        """Entries at or below the snapshot this log started from are committed, so equal to
        the leader's (Leader Completeness): skip them and match from the snapshot on."""
        base = self.ledger.base_index
        if request.prev_index >= base:
            return request
        skip = min(base - request.prev_index, len(request.entries))
        return dataclasses.replace(
            request,
            prev_index=base,
            prev_term=self.ledger.term_at(base),
            entries=request.entries[skip:],
        )

    def _append_new(self, request: AppendRequest) -> None:
        index = request.prev_index
        fresh: list[bytes] = []
        for position, payload in enumerate(request.entries):
            index = request.prev_index + 1 + position
            if index <= self.ledger.last_index:
                if self.ledger.term_at(index) == self._entry_term(payload):
                    continue
                log.warning("term %d: truncating conflicting entries from %d", self.term, index)
                self.ledger.truncate(index - 1)
            fresh = list(request.entries[position:])
            break
        if fresh:
            self.ledger.append_entries(fresh)
        if self.ledger.durable_index < self.ledger.last_index:
            self.ledger.sync()

    @staticmethod
    def _entry_term(payload: bytes) -> int:
        term, _ = peek_position(payload)
        return term

    def _append_response(self, success: bool, match: int = 0) -> AppendResponse:
        return AppendResponse(self.term, success, match, self.ledger.last_index, self.node_id)

    def _leader_live(self, candidate_id: str) -> bool:
        return leader_is_live(
            is_leader=self.role == "leader",
            leader_id=self.leader_id,
            candidate_id=candidate_id,
            silence=time.monotonic() - self._last_leader_contact,
            election_timeout=self.timing.election_timeout,
        )

    async def handle_pre_vote(self, request: VoteRequest) -> VoteResponse:
        """Pre-vote: would we vote for the candidate at ``request.term``? Changes nothing."""
        last_term, last_index = self._vouched()
        granted = grants_pre_vote(
            request,
            term=self.term,
            last_index=last_index,
            last_term=last_term,
            leader_live=self._leader_live(request.candidate_id),
        )
        return VoteResponse(self.term, granted, self.node_id)

    async def handle_vote(self, request: VoteRequest) -> VoteResponse:
        """RequestVote: grant at most once per term, only to an up-to-date log.

        Ignored without adopting its term while a leader is live (stickiness).
        """
        if self._leader_live(request.candidate_id) or request.term < self.term:
            return VoteResponse(self.term, False, self.node_id)
        if request.term > self.term:
            self._become_follower(request.term)
        last_term, last_index = self._vouched()
        up_to_date = log_up_to_date(request, last_index, last_term)
        if up_to_date and self.state.voted_for in (None, request.candidate_id):
            self.state.save(self.term, request.candidate_id)
            self._reset_election_deadline()
            return VoteResponse(self.term, True, self.node_id)
        return VoteResponse(self.term, False, self.node_id)

    # ------------------------------------------------------------------ repair from any peer
    async def handle_fetch(self, request: FetchRequest) -> FetchResponse:
        """Committed entries for a node that lost them to a storage fault (``repair``)."""
        return self._repair.answer(request)

    def unfetchable(self) -> tuple[int, float] | None:
        """Committed entries this node lacks that no voter could give (``Repair.unfetchable``)."""
        return self._repair.unfetchable()

    async def append_fetched(self, found: fetch.Found, start: int) -> int | None:
        """Append the committed entries ``found`` (fetched from a peer for a log ending at
        ``start - 1``), checked as a leader's are, and commit what they say is committed: how
        many were appended (0: the log grew meanwhile, ask again from its end), or None if
        they were refused (logged)."""
        response = found.response
        async with self._append_cond:
            if self.ledger.last_index != start - 1:
                return 0  # the leader sent entries meanwhile: ask from the new end
            if self.ledger.term_at(start - 1) != response.prev_term:
                log.error(
                    "%s's entry %d has term %d, this log's %d: not taking its entries",
                    found.node_id[:8],
                    start - 1,
                    response.prev_term,
                    self.ledger.term_at(start - 1),
                )
                return None
            try:
                self.ledger.append_entries(response.entries)
            except LedgerError as exc:
                log.error("refusing the entries fetched from %s: %s", found.node_id[:8], exc)
                return None
            self.ledger.sync()
            self._append_cond.notify_all()
        if self._on_log_grown:
            self._on_log_grown()
        commit = min(response.commit_index, self.ledger.last_index)
        if commit > self.ledger.commit_index:
            self._commit_to(commit)
        return len(response.entries)

    def not_leader(self) -> NotLeaderError:
        """The error for a request only the leader serves, saying why none is elected when
        a node (this one or a peer that asked for entries) lacks committed entries."""
        why = self._repair.why_no_leader() if self.leader_id is None else None
        return NotLeaderError(self.leader_id, self.leader_address, why)
