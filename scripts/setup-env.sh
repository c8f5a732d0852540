#!/usr/bin/env bash
# Create ./.venv with the project and its test/lint tools, and the system tools the tests use
# (promtool from Debian's prometheus). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # Build-backend warnings are noise on every run: keep them in a log, show it on failure.
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e '.[test,lint]'; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "pip install failed (full log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
if ! command -v promtool >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing promtool (Debian package prometheus)…" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
  # The package starts a server we do not want; the tests run their own.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  $SUDO pkill -x prometheus 2>/dev/null || true
fi
