"""Raft replication among Trusted nodes (node issue part 2): the Raft log is the ledger."""
