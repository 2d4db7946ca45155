"""Simulation: generated systems with injected faults, for tests, benches and `prognos demo`.
Deterministic per seed; the product's service modules never import it.

- `sim.shop`: `Shop(seed)`, a five-service shop (frontend, users, orders, payment, cart) with
  per-pod metrics (`series`, `at`), spans (`spans`), `Fault`s (leak, latency, errors, cpu),
  `restart` / `scale`, and `crossing` (when a limit is crossed);
- `sim.source`: `ShopSource(shop, clock)`, the shop as an ingest `Source` (never past now);
- `sim.platform`: `Platform` and `PlatformServer`, the platform API a playbook restarts or scales
  deployments through, behind an admin token;
- `sim.openbao`: `DevVault`, a dev OpenBao holding that token for AppRole-issued runs;
- `sim.scenarios`: labelled breach scenarios (the breach bench's frozen generators);
- `sim.traces`: random call trees and their spans with RCA faults (the RCA bench).
"""
