"""Candidates: each gets a distinct description; stages that did nothing are dropped; finalists differ."""

from __future__ import annotations

import pytest

from compressctl.advise.search import describe_candidate, effective_candidate

CANDIDATE = {
    "layer_amounts": {"stem.*": 0.5, "layer1.*": 0.25},
    "importance": "l1",
    "lowrank": {"ratio": 0.7},
    "lowrank_order": "after",
    "quantize": "float",
}


@pytest.mark.parametrize(
    ("candidate", "text"),
    [
        (
            {"layer_amounts": {"stem.*": 0.5}, "importance": "bn_scale", "quantize": "int8", "float_fallback": 0.003},
            "prune stem=0.50 (bn_scale, after network slimming) + int8 (float fallback at 0.003 drop)",
        ),
        (
            {"layer_amounts": {"stem.*": 0.5}, "lowrank": {"ratio": 0.5}, "lowrank_order": "before"},
            "tucker ratio 0.5 + prune stem=0.50 (l1)",
        ),
        (
            {
                "layer_amounts": {"stem.*": 0.5},
                "lowrank": {"ratio": 0.5},
                "lowrank_order": "after",
                "quantize": "kmeans",
            },
            "prune stem=0.50 (l1) + tucker ratio 0.5 + k-means 4-bit",
        ),
        ({"layer_amounts": {"stem.*": 0.0}, "importance": "bn_scale", "quantize": "float"}, "float baseline"),
        (
            {"layer_amounts": {"stem.0": 0.5}, "quantize": "int8", "float_nodes": ["/a/Conv", "/b/Conv"]},
            "prune stem.0=0.50 (l1) + int8 (2 node(s) kept float)",
        ),
        ({"acme-scale.factor": 0.5, "quantize": "float"}, "acme-scale.factor=0.5"),
    ],
)
def test_descriptions_name_every_stage_in_order(candidate, text):
    assert describe_candidate(candidate) == text


def test_a_lowrank_stage_that_replaced_nothing_is_dropped():
    candidate = CANDIDATE
    nothing = {"stages": {"lowrank": {"decomposed": [], "skipped": {"stem.0": "MACs would be 1.20× the original"}}}}
    something = {"stages": {"lowrank": {"decomposed": ["layer1.conv1"], "skipped": {}}}}
    assert "lowrank" not in effective_candidate(candidate, nothing)
    assert effective_candidate(candidate, something) == candidate


def test_finalists_skip_candidates_that_build_the_same_model():
    from compressctl.advise.budget import Budget
    from compressctl.advise.search import choose_finalists

    def record(trial: int, stem: float, metric: float, size: int) -> dict:
        figures = {"metric": metric, "latency_ms": 1.0, "speedup": 5.0, "size_bytes": size, "float": {"macs": size}}
        candidate = {"layer_amounts": {"stem.*": stem}, "importance": "l1", "quantize": "int8"}
        return {"trial": trial, "candidate": candidate, "figures": figures, "violations": {}, "feasible": True}

    # stem 0.35 and 0.45 keep the same channel count after rounding: one full run is enough
    records = [record(0, 0.35, 0.98, 500), record(1, 0.45, 0.98, 500), record(2, 0.5, 0.97, 400)]
    assert [r["trial"] for r in choose_finalists(records, 3, Budget(min_speedup=2.0))] == [0, 2]


def test_finalists_are_the_fastest_and_the_most_accurate_of_the_front():
    from compressctl.advise.budget import Budget
    from compressctl.advise.search import choose_finalists

    def record(trial: int, metric: float, speedup: float) -> dict:
        figures = {"metric": metric, "speedup": speedup, "size_bytes": 1000 - trial, "float": {"macs": trial}}
        candidate = {"layer_amounts": {"stem.*": trial / 10}, "importance": "l1", "quantize": "int8"}
        return {"trial": trial, "candidate": candidate, "figures": figures, "violations": {}, "feasible": True}

    # a front: faster means less accurate
    front = [record(t, metric=0.99 - 0.01 * t, speedup=5.0 + t) for t in range(5)]
    chosen = [r["trial"] for r in choose_finalists(front, 3, Budget(min_speedup=2.0))]
    assert chosen == [4, 3, 0]  # the two fastest, and the most accurate in the last slot
    assert [r["trial"] for r in choose_finalists(front, 1, Budget(min_speedup=2.0))] == [4]
    assert [r["trial"] for r in choose_finalists(front[:2], 3, Budget(min_speedup=2.0))] == [1, 0]


def test_a_proxy_just_short_of_the_speed_limit_comes_before_ones_that_lose_accuracy():
    from compressctl.advise.budget import Budget
    from compressctl.advise.search import choose_finalists

    budget = Budget(min_speedup=2.0, max_accuracy_drop=0.01)

    def record(trial: int, drop: float, speedup: float) -> dict:
        figures = {"metric": 0.99 - drop, "accuracy_drop": drop, "speedup": speedup, "size_bytes": 1000 + trial}
        figures["float"] = {"macs": trial}
        candidate = {"layer_amounts": {"stem.*": trial / 10}, "importance": "l1", "quantize": "int8"}
        violations = budget.violations(figures)
        return {"trial": trial, "candidate": candidate, "figures": figures, "violations": violations, "feasible": False}

    hand, too_slow, inaccurate = record(0, 0.0, 1.71), record(1, 0.0, 1.2), record(2, 0.08, 3.7)
    # the hand recipe measured 1.71x in its proxy sitting, 2.29x applied: it gets a full run first
    assert [r["trial"] for r in choose_finalists([inaccurate, too_slow, hand], 2, budget)] == [0, 2]
