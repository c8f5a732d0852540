"""Property: any sequence of append/sign/sync/commit/truncate/crash/reopen matches a model.

The model is a list of entries plus two counters; the ledger must agree with it on every
position, on the committed KV state (the committed prefix applied in order), on the public
view (every entry applied) and, at the end, on the Merkle root a follower fed the surviving
payloads computes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consortium_node.ledger import (
    EntryKind,
    Ledger,
    LedgerConfig,
    LedgerError,
    NodeKeySigner,
    TxId,
)
from tests.support.clock import FakeClock

SECRET = bytes(range(32))
CONFIG = LedgerConfig(signature_interval_tx=10**6, chunk_max_bytes=500)
KEYS = ("a", "b", "c")

Op = tuple[Any, ...]
write_strategy = st.dictionaries(
    st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 9)), min_size=1, max_size=2
)
append_op = st.tuples(
    st.just("append"),
    st.sampled_from(["public", "private"]),
    st.lists(write_strategy, min_size=1, max_size=4),
)
ops = st.one_of(
    append_op,
    append_op,
    st.tuples(st.just("sign")),
    st.tuples(st.just("term")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("commit"), st.integers(0, 100)),  # percent of the last index
    st.tuples(st.just("truncate"), st.integers(0, 100)),  # percent of the last index
    st.tuples(st.just("crash")),
    st.tuples(st.just("reopen")),
)


@dataclass
class Model:
    entries: list[tuple[TxId, str, dict[str, Any] | None]] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    durable: int = 0
    commit: int = 0
    marked: int = 0  # the highest commit marker written durably (survives reopen and crash)
    term: int = 1

    def state(self, upto: int, kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        tables: dict[str, dict[str, Any]] = {}
        for txid, kind, writes in self.entries[:upto]:
            if kind not in kinds or writes is None:
                continue
            for table, rows in writes.items():
                target = tables.setdefault(table, {})
                for key, value in rows.items():
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = (value, txid)
        return {table: rows for table, rows in tables.items() if rows}


def committed_state(ledger: Ledger) -> dict[str, dict[str, Any]]:
    out = {t: {k: ledger.get(t, k) for k in ledger.kv.keys(t)} for t in ledger.kv.tables()}
    return {table: rows for table, rows in out.items() if rows}


def public_state(ledger: Ledger) -> dict[str, dict[str, Any]]:
    rows = {k: ledger.public_get("public:m", k) for k in ledger.public_keys("public:m")}
    return {"public:m": rows} if rows else {}


def check(ledger: Ledger, model: Model) -> None:
    assert ledger.last_index == len(model.entries)
    assert (ledger.durable_index, ledger.commit_index) == (model.durable, model.commit)
    assert ledger.term == model.term
    assert ledger.known_commit.index == max(model.commit, model.marked)
    assert ledger.missing_committed is None and ledger.diverged is None
    assert ledger.unvouched is None
    assert [ledger.term_at(i + 1) for i in range(ledger.last_index)] == [
        txid.term for txid, _, _ in model.entries
    ]
    signatures = [txid.index for txid, kind, _ in model.entries if kind == "signature"]
    assert ledger.last_signed_index == (signatures[-1] if signatures else 0)
    assert committed_state(ledger) == model.state(model.commit, ("public", "private"))
    assert public_state(ledger) == model.state(len(model.entries), ("public",))
    assert ledger.raw_entries(1, ledger.last_index) == model.payloads


def run(directory: Path, signer: NodeKeySigner, operations: list[Op]) -> None:
    clock = FakeClock()

    def open_ledger() -> Ledger:
        return Ledger.open(directory, ledger_secret=SECRET, config=CONFIG, clock=clock)

    ledger, model = open_ledger(), Model()
    try:
        for op in operations:
            name = op[0]
            if name == "append":
                kind = EntryKind.PUBLIC if op[1] == "public" else EntryKind.PRIVATE
                table = "public:m" if op[1] == "public" else "app"
                write_sets = [{table: rows} for rows in op[2]]
                for txid, ws in zip(ledger.append(write_sets, kind), write_sets, strict=True):
                    assert txid == TxId(model.term, len(model.entries) + 1)
                    model.entries.append((txid, op[1], ws))
            elif name == "sign":
                signed = ledger.append_signature(signer)
                if signed is not None:
                    model.entries.append((signed, "signature", None))
            elif name == "term":
                ledger.term = model.term = model.term + 1
            elif name == "sync":
                if model.durable < len(model.entries):  # a marker rides with new entries
                    model.marked = max(model.marked, model.commit)
                assert ledger.sync() == len(model.entries)
                model.durable = len(model.entries)
            elif name == "commit":
                target = len(model.entries) * op[1] // 100 + op[1] % 3  # sometimes beyond
                model.commit = max(model.commit, min(target, model.durable))
                assert ledger.advance_commit(target) == model.commit
            elif name == "truncate":
                last_kept = len(model.entries) * op[1] // 100
                if last_kept < max(model.commit, model.marked):
                    try:
                        ledger.truncate(last_kept)
                    except LedgerError:
                        pass
                    else:
                        raise AssertionError("truncation below the commit index was allowed")
                else:
                    if last_kept < model.durable:
                        event("truncated durable entries")
                    ledger.truncate(last_kept)
                    del model.entries[last_kept:]
                    model.durable = min(model.durable, last_kept)
            else:  # crash loses what is not durable; a clean reopen syncs first
                if name == "crash":
                    if model.durable < len(model.entries):
                        event("a crash lost pending entries")
                    ledger._store.close()
                    del model.entries[model.durable :]
                else:
                    ledger.close()  # records the commit index in a marker
                    model.marked = max(model.marked, model.commit)
                model.durable, model.commit = len(model.entries), 0
                model.term = max([1] + [txid.term for txid, _, _ in model.entries])
                ledger = open_ledger()
            if len(model.payloads) > len(model.entries):
                del model.payloads[len(model.entries) :]  # truncated, or lost in a crash
            elif name in ("append", "sign"):  # new entries: the rest of the run must keep them
                model.payloads += ledger.raw_entries(len(model.payloads) + 1, ledger.last_index)
            check(ledger, model)

        event(f"chunks: {min(len(ledger.chunk_paths), 4)}")
        follower_dir = directory.parent / "follower"
        follower = Ledger.open(follower_dir, ledger_secret=SECRET, config=CONFIG, clock=clock)
        for start in range(1, ledger.last_index + 1, 3):
            follower.append_entries(ledger.raw_entries(start, min(start + 2, ledger.last_index)))
        assert follower._log.tree.root() == ledger._log.tree.root()
        assert public_state(follower) == public_state(ledger)
        follower.close()
    finally:
        ledger._store.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(operations=st.lists(ops, min_size=5, max_size=40))
def test_ledger_matches_the_model(signer: NodeKeySigner, operations: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "ledger", signer, operations)
