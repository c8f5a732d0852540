"""``consortium-operator``: run the kopf operator with metrics and peering.

    consortium-operator [--namespace NS... | --all-namespaces] [--peering NAME | --standalone]
                        [--metrics-port 8080] [--liveness http://0.0.0.0:8081/healthz]

With ``--namespace`` (repeatable) kopf lists, watches and peers in those namespaces only, and
the operator needs rights there alone (the Helm chart's default: the release namespace). With
``--all-namespaces`` (or neither flag) it serves the whole cluster.

Two replicas with the same peering name never both act: kopf's peering lets the one with
the highest priority work while the other waits (a KopfPeering of that name must exist in each
watched namespace, or a ClusterKopfPeering when cluster-wide).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys

import kopf
from prometheus_client import start_http_server

from consortium_operator import handlers
from consortium_operator.api import metrics


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consortium-operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", action="append", default=[], help="watch only this namespace (repeat)"
    )
    scope.add_argument(
        "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--peering", default=None, help="kopf peering name (leader election)")
    mode.add_argument("--standalone", action="store_true", help="no peering (one replica)")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: derived from the host name, so replicas differ; "
        "kopf freezes all operators of equal priority)",
    )
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--metrics-address", default="0.0.0.0")  # noqa: S104 - a pod's interface
    p.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf's liveness endpoint logs every probe (one line per 10 s) at INFO: keep it for DEBUG.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, args.metrics_address, registry=metrics.REGISTRY)
    assert handlers.configure is not None  # registers the handlers on import
    priority = args.priority
    if priority is None:
        seed = f"{socket.gethostname()}/{os.getpid()}".encode()
        priority = 1 + int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % 1_000_000
    kopf.run(
        standalone=args.standalone or args.peering is None,
        peering_name=args.peering,
        priority=priority,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
