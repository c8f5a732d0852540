#!/usr/bin/env bash
# The local demo: installs the project, starts a genesis node on loopback, commits a
# transaction and verifies its receipt offline with only the service certificate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
exec .venv/bin/python scripts/demo_local.py "$@"
