"""consortium_node: the enclave-emulating ledger node.

Layers (enforced by import-linter, see pyproject.toml):

    server | ctl            HTTP API, process entry point, member/user CLI
    replication             Raft over the ledger (the Raft log is the ledger)
    ledger                  Merkle ledger, receipts, durable chunks
    identity | attestation  keys, certificates, COSE, trusted-node list | TEE platforms
    common                  canonical JSON, time, durations

The only TEE platform today is an emulation, insecure by design and named so (see
``attestation``): the code is real, the hardware is not.
"""

__version__ = "0.1.0"
