"""Entry points: the `prognos` CLI, the scheduler wiring and the composition root."""
