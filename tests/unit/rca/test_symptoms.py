"""An incident's symptom says what the alarm saw: the target, the component, the numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rca.incidents import alarm_symptom


@dataclass
class _Alarm:
    series_id: int = 1
    service: str | None = "cart"
    ts: int = 0
    score: float = 0.4
    target: str = "memory"
    evidence: dict[str, Any] | None = None


def test_a_spatial_alarm_names_the_range_it_left() -> None:
    evidence = {"component": "spatial", "value": 8.1e8, "range": [3.2e8, 6.4e8], "mean": 7e8}
    text = alarm_symptom(_Alarm(evidence=evidence), "cart")
    assert text == "cart memory: 8.1e+08 above its range so far [3.2e+08, 6.4e+08]"


def test_a_level_alarm_names_the_mean_and_the_z_before_fatigue() -> None:
    evidence = {"component": "level", "value": 0.9, "mean": 0.4, "direction": "above", "raw_z": 4.2}
    text = alarm_symptom(_Alarm(target="cpu", score=2.1, evidence=evidence), "cart")
    assert text == "cart cpu: 0.9 above its recent mean 0.4 (z 4.2)"


def test_without_evidence_the_score_is_all_there_is() -> None:
    assert (
        alarm_symptom(_Alarm(evidence=None, score=3.14), "cart") == "cart memory: anomaly score 3.1"
    )
