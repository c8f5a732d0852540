"""consortium_node: the enclave-emulating ledger node.

Layers (enforced by import-linter, see pyproject.toml):

    server | ctl            HTTP API, process entry point, member/user CLI
    replication             Raft over the ledger (the Raft log is the ledger)
    ledger                  Merkle ledger, receipts, durable chunks
    identity | attestation  keys, certificates, COSE, trusted-node list | virtual TEE
    common                  canonical JSON, time, durations

The TEE is emulated (`insecure-virtual`): the code is real, the hardware is not.
"""

__version__ = "0.1.0"
