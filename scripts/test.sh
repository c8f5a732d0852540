#!/usr/bin/env bash
# The test command: lint (ruff, mypy --strict, import-linter layers) then every test tier.
#   scripts/test.sh                 everything
#   scripts/test.sh tests/unit      one tier (any pytest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy --strict" && mypy
mypy --strict scripts/*.py   # standalone scripts: not packages, so not in mypy's config
echo "== import-linter" && lint-imports
echo "== pytest"
set +e
pytest "${@:-tests}" -p no:cacheprovider
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
