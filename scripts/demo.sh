#!/usr/bin/env bash
# Set up Prognos and run it on its embedded defaults: SQLite under ./var and the bundled sample
# data replayed as if it were live. Open http://127.0.0.1:8000/docs while it runs; Ctrl-C stops.
# DEMO_DURATION=2m stops it by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> backfill one day of history into the training cache (watch the progress bars)"
prognos backfill --days 1
echo "==> one ingest cycle into the database"
prognos ingest --once
echo "==> what Prognos now knows"
prognos series --limit 20
echo "==> playbooks the daemon may propose (deploy/playbooks)"
prognos playbook list
echo "==> a read-only API token for you (curl -H 'Authorization: Bearer <token>' ...):"
prognos token create --role viewer --name demo
echo "==> an approver token. The cart pod leaks ~60 MB/h until it restarts at 1 GB: once a crossing"
echo "    of its 950 MB limit falls within the 30-min horizon it is warned (GET /v1/breaches) and the"
echo "    daemon proposes scale-up for approval (GET /v1/remediations, or the page at /ui)"
prognos token create --role approver --name demo-approver
echo "==> starting the service: API + scheduler (Ctrl-C to stop)"
exec prognos run ${DEMO_DURATION:+--duration "$DEMO_DURATION"}
