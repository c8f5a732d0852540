"""Governance: members, not the operator, decide who and what is trusted.

Modelled on CCF's: signed proposals and ballots (COSE_Sign1 by a member key), a constitution
that says how many votes accept a proposal, and actions applied atomically once accepted.
This package is pure (no I/O, no clock reads, no ledger): the server records what it decides
in public ledger tables, so receipts prove every outcome.

  constitution.py  thresholds, auto-approved actions, proposal expiry
  actions.py       the actions a proposal may carry: validation and the state they touch
  documents.py     signed proposals, ballots, withdrawals and acks (COSE_Sign1 payloads)
  proposals.py     the proposal state machine: ballots, tally, expiry, invalidation
"""

from consortium_node.governance.proposals import FINAL_STATES, LEDGER_STATES, ProposalState

__all__ = ["FINAL_STATES", "LEDGER_STATES", "ProposalState"]
