"""Ingest: Prometheus and replay sources, chunked range reads, watermarks, the sample store."""
