"""Prometheus alerting rules forecast: which rules will fire, when, and how likely."""
