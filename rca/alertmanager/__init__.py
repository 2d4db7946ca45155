"""Alertmanager both ways: predicted breaches and open incidents posted to it (`outbound`), and
its webhook's alerts as incident triggers (`webhook`, `flows`)."""
