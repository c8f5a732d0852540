#!/usr/bin/env bash
# The test command: lint (ruff, mypy --strict, import-linter layers) then every test tier.
#   scripts/test.sh                 everything
#   scripts/test.sh tests/unit      one tier (any pytest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check .   # separate commands: under set -e a failure inside an && list would not stop
ruff format --check .
echo "== mypy --strict" && mypy
mypy --strict scripts/*.py   # standalone scripts: not packages, so not in mypy's config
echo "== import-linter" && lint-imports
# The Kubernetes tiers need the local cluster's binaries (built once from Debian's source
# package, ~10 min on a fresh machine) and the images (a debootstrap base, ~3 min the first
# time): both cached after, and built here rather than inside a test fixture's 300 s
# timeout. Needs root, like the cluster itself; a unit-only run skips it.
needs_cluster() {
  [ $# -eq 0 ] && return 0
  local arg
  for arg in "$@"; do
    case "${arg%/}" in
      tests | tests/integration | tests/integration/operator* | tests/e2e*) return 0 ;;
    esac
  done
  return 1
}
if [ "$(id -u)" = 0 ] && needs_cluster "$@"; then
  echo "== local Kubernetes binaries" && bash scripts/kube.sh deps build
  echo "== images" && bash scripts/build-images.sh
fi
echo "== pytest"
set +e
pytest "${@:-tests}" -p no:cacheprovider
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
