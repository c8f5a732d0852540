"""The joining side of DESIGN section 5 step 5, run once before a new node serves anything.

From the signed trusted-node list (a file — the mounted ConfigMap — or an https URL) the joiner
learns the Trusted nodes; it asks them for a single-use nonce (a backup answers with the
primary's address), sends its quote over its public key and that nonce, and receives its node
certificate and the consortium secrets wrapped to its attested key. A Pending answer is polled;
a refusal stops the node with the verifier's reason.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.common import bounded_json
from consortium_node.identity.certs import certificate_pem
from consortium_node.identity.trusted_list import NodeStatus, verify_trusted_list
from consortium_node.server.errors import JoinRefusedError

log = logging.getLogger("consortium_node.join")


@dataclass(frozen=True)
class JoinAnswer:
    node_certificate: str
    service_certificate: str
    wrapped_secrets: bytes
    trusted_list: bytes
    source: str = ""  # the address of the node that answered (the primary)


def _fetch(
    url: str, context: ssl.SSLContext, body: dict[str, Any] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - https URLs built from verified lists
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as resp:  # noqa: S310
            return resp.status, bounded_json.loads(resp.read(), "answer")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, bounded_json.loads(exc.read(), "answer")
        except ValueError:
            return exc.code, {}


def read_list(source: str, context: ssl.SSLContext) -> bytes:
    """The COSE list from a file path or an https URL (``/node/trusted-list``)."""
    if source.startswith("https://"):
        request = urllib.request.Request(source)  # noqa: S310 - https only
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:  # noqa: S310
            return bytes(resp.read())
    with open(source, "rb") as handle:
        return handle.read()


def join(
    *,
    consortium: str,
    name: str,
    address: str,
    public_key_pem: str,
    quote_for: Callable[[bytes], dict[str, Any]],
    service_certificate: x509.Certificate,
    trusted_list_source: str,
    retry_interval: float = 1.0,
    timeout: float | None = None,
    subject_alt_names: Sequence[str] = (),
) -> JoinAnswer:
    """Join through the primary; retries unreachable/Pending answers until ``timeout``."""
    context = ssl.create_default_context(cadata=certificate_pem(service_certificate))
    deadline = None if timeout is None else time.monotonic() + timeout
    hint: str | None = None
    while True:
        try:
            envelope = read_list(trusted_list_source, context)
            lst = verify_trusted_list(envelope, service_certificate, consortium=consortium)
            candidates = [
                n.address
                for n in lst.nodes
                if n.status is NodeStatus.TRUSTED and n.address != address  # not ourselves
            ]
            for target in ([hint] if hint else []) + candidates:
                try:
                    outcome = _attempt(
                        target,
                        context,
                        name=name,
                        address=address,
                        public_key_pem=public_key_pem,
                        quote_for=quote_for,
                        sans=subject_alt_names,
                    )
                except OSError as exc:  # that one is down: the next may answer
                    log.info("join attempt at %s failed: %s", target, exc)
                    continue
                if isinstance(outcome, JoinAnswer):
                    return dataclasses.replace(outcome, source=target)
                if outcome:
                    hint = outcome
                    break
        except (OSError, ValueError) as exc:
            log.info("join attempt failed: %s", exc)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"could not join within {timeout}s")
        time.sleep(retry_interval)


def _attempt(
    target: str,
    context: ssl.SSLContext,
    *,
    name: str,
    address: str,
    public_key_pem: str,
    quote_for: Callable[[bytes], dict[str, Any]],
    sans: Sequence[str] = (),
) -> JoinAnswer | str | None:
    """One try at ``target``: the answer, a leader address to try next, or None."""
    status, body = _fetch(f"https://{target}/node/join/nonce", context)
    if status != 200:
        return _leader_hint(body)
    nonce = bytes.fromhex(body["nonce"])
    request = {
        "name": name,
        "address": address,
        "public_key": public_key_pem,
        "quote": quote_for(nonce),
        "nonce": nonce.hex(),
        **({"subject_alt_names": list(sans)} if sans else {}),
    }
    status, body = _fetch(f"https://{target}/node/join", context, request)
    if status == 200:
        return JoinAnswer(
            body["node_certificate"],
            body["service_certificate"],
            base64.b64decode(body["wrapped_secrets"]),
            base64.b64decode(body["trusted_list"]),
        )
    if status == 202:
        log.info("join pending at %s: %s", target, body.get("reason"))
        return None
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if status == 403 and error.get("code") == "JoinRefused":
        raise JoinRefusedError(error.get("field", "?"), error.get("reason", ""))
    log.info("join at %s: HTTP %d %s", target, status, error.get("reason", ""))
    return _leader_hint(body)


def _leader_hint(body: Any) -> str | None:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return error.get("leader_address") if isinstance(error, dict) else None
