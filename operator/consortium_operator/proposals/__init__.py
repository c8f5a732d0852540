"""Governance through Kubernetes: what the spec still needs proposed (``intents``), relaying
Proposal resources to the primary (``relay``) and mirroring the ledger's view back into their
status (``mirror``).
"""
