#!/usr/bin/env bash
# The main demo: a consortium on Kubernetes, installed as a user installs it.
#
#   scripts/demo.sh                 kind when `kind` and a working Docker are present, else the
#                                   project's local cluster (scripts/kube.sh; needs root): images,
#                                   helm install, the samples Ready, a transaction whose receipt
#                                   verifies offline, Prometheus scraping the operator and nodes;
#                                   then it prints where to look and leaves everything running
#   scripts/demo.sh down            stop what the demo started
#   scripts/demo.sh --platform local|kind, --namespace NS, --data-dir DIR, --prometheus-port N
#   scripts/demo.sh loopback [--keep-running]   3 nodes on loopback, no Kubernetes at all
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
if [ "${1:-}" = loopback ]; then
  shift
  exec .venv/bin/python scripts/demo_local.py "$@"
fi
exec .venv/bin/python scripts/demo_kube.py "$@"
