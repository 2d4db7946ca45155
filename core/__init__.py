"""Shared kernel: settings, database, logging, clock and the root error every package builds on."""
