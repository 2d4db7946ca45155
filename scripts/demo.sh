#!/usr/bin/env bash
# Set up Prognos and tell its whole story on a simulated shop (`prognos demo`): a few days of
# history, the LSTM trained on it, the service watching the shop on a simulated clock (one minute
# per second), a memory leak injected, the breach predicted, the incident diagnosed, a fix
# proposed, approved on the page at http://127.0.0.1:8000/ui (or by the demo after a pause), run
# with credentials a real OpenBao issued for that run alone, verified, audited and revoked.
# Finishes by itself in a few minutes. Extra arguments go to `prognos demo` (see --help), e.g.
#   ./scripts/demo.sh --approve --json var/story.json
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
export PATH="$PWD/.venv/bin:$PATH"
exec prognos demo "$@"
