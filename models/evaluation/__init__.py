"""Offline evaluation of detectors and forecasters against labelled benchmarks (NAB scoring)."""
