"""Entry points: the `prognos` CLI, the scheduler wiring and the composition root."""

import os

# Torch's OpenMP threads busy-wait between parallel regions by default; on a machine shared with
# the API, the scheduler or other services that spinning costs more than it saves (bench/
# throughput.py measured training epochs 5x faster under load with PASSIVE). Set before torch
# is imported; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
