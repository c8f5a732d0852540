"""What binds wrapped join secrets to their one recipient."""

from __future__ import annotations


def join_context(consortium: str, node_id: str) -> bytes:
    """The wrap context binding join secrets to one consortium and one node."""
    return f"consortium-join:{consortium}:{node_id}".encode()
