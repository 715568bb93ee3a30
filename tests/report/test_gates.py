"""Gates on intervals: the estimate decides, a straddling interval is uncertain, confidence demands the whole interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressctl.recipe import load_recipe
from compressctl.report.build import evaluate_gates
from tests.conftest import tiny_recipe, write_recipe

AT = "CPUExecutionProvider@4"


def gates_for(tmp_path: Path, interval: list[float], estimate: float, **gates) -> dict:
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(gates={"min_speedup": 2.0, **gates})))
    summary = {"gate_at": AT, "speedup": {AT: estimate}, "speedup_ci": {AT: interval}}
    (gate,) = evaluate_gates(recipe, [], summary)
    return gate


@pytest.mark.parametrize(
    ("interval", "estimate", "passed", "uncertain"),
    [
        ([2.2, 2.4], 2.3, True, False),
        ([1.9, 2.2], 2.05, True, True),
        ([1.8, 2.1], 1.95, False, True),
        ([1.5, 1.7], 1.6, False, False),
    ],
)
def test_the_estimate_decides_and_a_straddling_interval_is_uncertain(tmp_path, interval, estimate, passed, uncertain):
    gate = gates_for(tmp_path, interval, estimate)
    assert gate["passed"] is passed and gate["uncertain"] is uncertain and gate["interval"] == interval


def test_confidence_passes_only_when_the_whole_interval_clears(tmp_path: Path) -> None:
    assert not gates_for(tmp_path, [1.9, 2.2], 2.05, confidence=0.95)["passed"]
    assert gates_for(tmp_path, [2.01, 2.2], 2.1, confidence=0.95)["passed"]
