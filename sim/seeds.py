"""Seed lists as benches take them on the command line."""

from __future__ import annotations


def parse_seeds(text: str) -> list[int]:
    """'0-19' or '0-4,10,12-13' -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(p) for p in part.split("-", 1))
            seeds.update(range(lo, hi + 1))
        else:
            seeds.add(int(part))
    return sorted(seeds)
