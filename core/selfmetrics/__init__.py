"""The service's own numbers for /metrics, kept in the database: what the daemon and the span
intake record here, `api/metrics.py` reads at scrape time, whichever process answers."""
