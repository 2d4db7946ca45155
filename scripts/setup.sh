#!/usr/bin/env bash
# Create .venv and install Prognos into it (editable). Usage: scripts/setup.sh [EXTRAS]
# Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Prognos needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=".venv/.prognos-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "==> installing Prognos${extras:+ with extras [$extras]} into .venv"
  # torch is pinned to the CPU build (torch==2.13.0); a looser range would pull a CUDA build.
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
  rm -f .venv/.prognos-installed-*
  touch "$stamp"
fi
