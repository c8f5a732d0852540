"""What binds wrapped secrets to their one recipient (``identity/wrap.py`` contexts)."""

from __future__ import annotations


def join_context(consortium: str, node_id: str) -> bytes:
    """The wrap context binding join secrets to one consortium and one node."""
    return f"consortium-join:{consortium}:{node_id}".encode()


def ledger_secret_context(consortium: str, node_id: str, version: int) -> bytes:
    """The wrap context binding a rotated ledger secret to one consortium, node and version
    (a blob cannot be replayed as another node's copy or another version)."""
    return f"consortium-ledger-secret:{consortium}:{node_id}:{version}".encode()
