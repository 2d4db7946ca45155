"""Simulation: generated microservice systems with injected faults, shared by tests, benches and
the demo. Deterministic per seed; nothing in the product imports it."""
